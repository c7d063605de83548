"""The instance-aware network: config, seeded reference, released checkpoint, export and ORT parity,
and the torch post-processing (official reading) against runtime/scene.py. Tiny config throughout."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

from hmr_trt.errors import CheckpointError, ConfigError
from hmr_trt.export.models.instancehmr import postprocess as post
from hmr_trt.export.models.instancehmr.config import InstanceHMRConfig
from hmr_trt.export.models.instancehmr.model import InstanceHMR
from hmr_trt.registry import adapter, contract
from hmr_trt.runtime import scene

ADAPTER = adapter("instancehmr")
CFG = ADAPTER.tiny_config()


@pytest.fixture(scope="module")
def model():
    return ADAPTER.reference(CFG)


def released_file(path, state, prefix="module.", extra=None):
    """A checkpoint in the released trainer's format (save_single_model of a DataParallel model)."""
    sd = {prefix + k: v for k, v in state.items()}
    sd.update(extra or {})
    torch.save({"model_state_dict": sd, "optimizer_state_dict": {"state": {}, "param_groups": []},
                "scaler_state_dict": {}}, path)
    return path


# --- config and contract ---------------------------------------------------------------------------------

def test_config_round_trip_and_validation() -> None:
    assert InstanceHMRConfig.from_dict(CFG.to_dict()) == CFG
    assert InstanceHMRConfig().map_size == 64 and InstanceHMRConfig().conf_thresh == 0.2
    for bad in ({"params_dim": 80}, {"conf_thresh": 1.0}, {"image_size": 100}, {"resnet_layers": (1, 1)}):
        with pytest.raises(ConfigError, match="instancehmr"):
            dataclasses.replace(CFG, **bad)
    with pytest.raises(ConfigError, match="unknown keys"):
        InstanceHMRConfig.from_dict({"centermap": 64})


def test_contract_is_scene_with_maps_graph() -> None:
    c = contract("instancehmr")
    assert c.family == "scene" and c.image_size == 512 and c.feature_extractor == "none"
    g = c.model_graph
    assert g.name == "maps" and g.inputs[0].shape == ("batch", 512, 512, 3)
    assert [t.shape for t in g.outputs] == [("batch", 1, 64, 64), ("batch", 3, 64, 64), ("batch", 79, 64, 64)]
    assert ADAPTER.contract_for(CFG).model_graph.outputs[2].shape == ("batch", 79, 16, 16)


# --- reference ------------------------------------------------------------------------------------------

def test_seeded_reference_is_deterministic_and_uses_released_key_names(model) -> None:
    other = ADAPTER.reference(CFG)
    x = ADAPTER.example_inputs(CFG, "maps", 2, seed=3)
    with torch.no_grad():
        for a, b in zip(model(*x), other(*x)):
            assert torch.equal(a, b)
    keys = set(model.state_dict())
    for k in ("backbone.deconv_layers.0.weight", "final_layers.1.1.1.0.conv2.weight", "final_layers.3.2.bias",
              "centerid_trans2.conv.weight", "ct_projector.4.weight", "params_trans_j.bn.running_var",
              "params_outconv.weight"):
        assert k in keys
    assert not any(k.startswith(("coordmaps", "pos_enc", "backbone.mean")) for k in keys)


def test_seeded_outputs_move_with_the_image(model) -> None:
    from hmr_trt.export.body_model import ExportableSMPL
    from hmr_trt.export.synthetic_smpl import make_synthetic_smpl
    from hmr_trt.metrics import motion_spread_mm

    x = ADAPTER.example_inputs(CFG, "maps", 4, seed=11)[0]
    with torch.no_grad():
        out = post.postprocess(*model(x), conf_thresh=0.2)
        assert len(out["scores"]) >= 4 and len(set(out["batch_ids"].tolist())) == 4  # people in every image
        verts, _ = ExportableSMPL(make_synthetic_smpl())(out["pose_rotmat"], out["betas"])
    spread = motion_spread_mm(verts.numpy()[:, None])
    assert spread >= 50.0, spread


def test_seeded_default_reads_a_standing_person_placed_at_its_peak(model) -> None:
    """The shaped seeded weights (model.shape_like_trained) on a mosaic of the sample video's people: each
    person read at a center-map peak stands (root half a turn about x, arms down, SPIN-like spread), and
    the camera puts it on that peak's cell at the scale of the video's people."""
    from hmr_trt.export.models.instancehmr.model import SCENE_SCALE
    from hmr_trt.export.seeded import person_mosaics

    x = torch.from_numpy(person_mosaics(CFG.image_size, 4, 2).astype(np.float32))
    with torch.no_grad():
        out = post.postprocess(*model(x), conf_thresh=0.2)
    n = len(out["scores"])
    assert n >= 4
    root = out["pose_rotmat"][:, 0]
    standing = torch.tensor([[1.0, 0, 0], [0, -1, 0], [0, 0, -1]])
    assert (root - standing).abs().max() < 0.3
    shoulders = out["pose_rotmat"][:, 16:18, 0, 1] * torch.tensor([1.0, -1.0])  # sin 75 deg: arms down
    assert shoulders.median() > 0.85 and (shoulders > 0.3).all()
    m = CFG.map_size
    cell = out["centers_yx"].float() / (m - 1) * 2 - 1  # (y, x) of the peak in [-1, 1]
    assert (out["cam"][:, 1] - cell[:, 1]).abs().max() < 0.15 and (out["cam"][:, 2] - cell[:, 0]).abs().max() < 0.15
    assert ((out["cam"][:, 0] / SCENE_SCALE).log().abs() < 0.2).all()


# --- released checkpoint --------------------------------------------------------------------------------

def test_released_checkpoint_loads_strictly_and_sets_smpl_aside(model, tmp_path) -> None:
    src = ADAPTER.reference(dataclasses.replace(CFG, seed=5))
    smpl = {"module._result_parser.params_map_parser.smpl_model.v_template": torch.zeros(6890, 3)}
    path = released_file(tmp_path / "instancehmr.pkl", src.state_dict(), extra=smpl)
    loaded = ADAPTER.reference(CFG, path)
    x = ADAPTER.example_inputs(CFG, "maps", 1, seed=2)
    with torch.no_grad():
        for a, b, c in zip(loaded(*x), src(*x), model(*x)):
            assert torch.equal(a, b) and not torch.equal(a, c)


def test_paper_width_is_read_from_the_checkpoint(tmp_path) -> None:
    src = InstanceHMR(dataclasses.replace(CFG, params_dim=142), seeded=False)
    loaded = ADAPTER.reference(CFG, released_file(tmp_path / "paper.pkl", src.state_dict()))
    assert loaded.cfg.params_dim == 142 and loaded.params_outconv.weight.shape[0] == 142


def test_bad_checkpoints_are_one_line_errors(model, tmp_path) -> None:
    state = model.state_dict()
    cases = {
        "no prefix": (released_file(tmp_path / "a.pkl", state, prefix=""), r"lack the DataParallel prefix 'module\.'"),
        "other config": (released_file(tmp_path / "b.pkl", InstanceHMR(
            dataclasses.replace(CFG, head_block_num=1), seeded=False).state_dict()), r"missing keys .*final_layers\.1\.1\.1"),
        "other model": (released_file(tmp_path / "c.pkl", {"fc1.weight": torch.zeros(2, 2)}), "no params_outconv"),
        "unexpected": (released_file(tmp_path / "d.pkl", {**state, "extra.weight": torch.zeros(1)}),
                       r"unexpected keys \(1\): extra\.weight"),
    }
    trunc = tmp_path / "e.pkl"
    trunc.write_bytes(cases["no prefix"][0].read_bytes()[:500])
    cases["truncated"] = (trunc, "cannot read checkpoint")
    torch.save([1, 2, 3], tmp_path / "f.pkl")
    cases["not a state dict"] = (tmp_path / "f.pkl", "holds no state dict")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model_state_dict": Evil()}, tmp_path / "g.pkl")
    cases["pickled code"] = (tmp_path / "g.pkl", "cannot read checkpoint .*: it holds Python objects besides")
    for name, (path, message) in cases.items():
        with pytest.raises(CheckpointError, match=message) as info:
            ADAPTER.reference(CFG, path)
        assert "\n" not in str(info.value) and str(info.value).startswith("instancehmr"), name


# --- export and ONNX Runtime parity ---------------------------------------------------------------------

def export_maps(module, cfg, path):
    """The one place that calls the exporter (its GraphSpec may become hmr_trt.contract.GraphSpec)."""
    from hmr_trt.export.onnx_export import onnx_from_module

    g = ADAPTER.contract_for(cfg).model_graph
    spec = g
    onnx_from_module(ADAPTER.exportable(module, "maps"), spec, ADAPTER.example_inputs(cfg, "maps", 2), path)
    return path


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    return export_maps(model, CFG, tmp_path_factory.mktemp("instancehmr") / "maps.onnx")


def _letterboxed_frames(video, n, size):
    from hmr_trt.runtime.video import frames_from_video

    return np.stack([scene.letterbox(f, size, bgr=True)[0] for _, f in frames_from_video(video, max_frames=n)])


def test_export_preflight_and_keep_rules(exported) -> None:
    from hmr_trt.engines.preflight import validate_onnx

    onnx_model = validate_onnx(exported)
    nodes = onnx_model.graph.node
    assert not [n for n in nodes if n.op_type in ("ScatterND", "Loop", "SequenceConstruct")]
    for recipe in contract("instancehmr").recipes:
        for rule in recipe.keep + recipe.int8_exclude:
            assert [n for n in nodes if n.op_type in rule.ops and re.search(rule.scope, n.name)], rule.name


def test_onnxruntime_matches_torch_at_batch_1_2_7_and_is_batch_invariant(model, exported, sample_video) -> None:
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    video = _letterboxed_frames(sample_video, 7, CFG.image_size)
    inputs = {b: ADAPTER.example_inputs(CFG, "maps", b, seed=b)[0].numpy() for b in (1, 2, 7)}
    inputs["video"] = video
    for name, x in inputs.items():
        got = sess.run(None, {"image": x})
        with torch.no_grad():
            ref = [r.numpy() for r in model(torch.from_numpy(x))]
        for g, r, out in zip(got, ref, ("center_map", "cam_map", "params_map")):
            assert g.shape == r.shape
            assert np.abs(g - r).max() < 1e-4, (name, out, np.abs(g - r).max())
    one = [sess.run(None, {"image": video[i:i + 1]}) for i in range(len(video))]
    whole = sess.run(None, {"image": video})
    for k in range(3):
        assert np.abs(np.concatenate([o[k] for o in one]) - whole[k]).max() < 1e-4


# --- post-processing: official reading (torch) vs runtime/scene.py (numpy) --------------------------------

def _compare(maps, thresh=0.2):
    ref = post.postprocess(*(torch.from_numpy(m) for m in maps), conf_thresh=thresh)
    people = scene.people_from_maps(tuple(maps), thresh)
    assert len(people) == len(ref["scores"])
    if not people:
        return 0
    assert [p["image"] for p in people] == ref["batch_ids"].tolist()
    assert [p["map_yx"] for p in people] == [tuple(v) for v in ref["centers_yx"].tolist()]
    for key, host in (("scores", "score"), ("cam", "cam"), ("cam_trans", "cam_trans"), ("betas", "betas"),
                      ("pose_rotmat", "pose_rotmat")):
        got = np.stack([np.asarray(p[host], dtype=np.float64) for p in people])
        assert np.abs(got - ref[key].double().numpy()).max() < 2e-5, key
    return len(people)


def test_host_post_processing_matches_the_torch_reading_on_model_maps(model, sample_video) -> None:
    x = torch.from_numpy(_letterboxed_frames(sample_video, 3, CFG.image_size))
    with torch.no_grad():
        maps = [m.numpy() for m in model(torch.cat((x, ADAPTER.example_inputs(CFG, "maps", 2, seed=9)[0])))]
    assert _compare(maps) > 5  # many people


def test_host_post_processing_matches_on_0_1_many_and_border_peaks() -> None:
    rng = np.random.default_rng(0)
    m = CFG.map_size
    center = (rng.random((4, 1, m, m)) * 0.1).astype(np.float32)  # image 0: nobody
    center[1, 0, 7, 3] = 0.8  # image 1: one person
    for y, x in ((0, 0), (0, m - 1), (m - 1, 0), (m - 1, m - 1), (0, 7), (8, m - 1)):  # image 2: borders
        center[2, 0, y, x] = rng.uniform(0.3, 0.9)
    center[3, 0] = rng.normal(0.3, 0.3, (m, m))  # image 3: many
    cam = rng.normal(0, 0.3, (4, 3, m, m)).astype(np.float32)
    params = rng.normal(0, 0.3, (4, 79, m, m)).astype(np.float32)
    assert _compare((center[:1], cam[:1], params[:1])) == 0
    assert _compare((center, cam, params)) > 10
    ref = post.postprocess(*(torch.from_numpy(a) for a in (center, cam, params)))
    assert sorted(ref["batch_ids"].tolist()).count(2) == 6 and ref["batch_ids"].tolist().count(1) == 1


def test_projection_to_the_original_image_matches_the_torch_reading() -> None:
    rng = np.random.default_rng(4)
    joints = rng.normal(0, 0.4, (3, 24, 3))
    joints[:, 0] = 0
    cam = np.stack((1.1 ** rng.normal(0, 0.3, 3), rng.normal(0, 0.3, 3), rng.normal(0, 0.3, 3)), 1)
    pad = scene.PadInfo(height=480, width=640, top=80, left=0, padded=640)
    ref = post.project_to_image(torch.from_numpy(joints), torch.from_numpy(cam), torch.full((3,), 640.0),
                                torch.tensor([[-pad.left, -pad.top]] * 3, dtype=torch.float64))
    host = pad.to_original(joints[:, :, :2] * cam[:, None, :1] + cam[:, None, 1:])
    assert np.abs(host - ref.numpy()).max() < 1e-9


def test_people_from_onnxruntime_maps_match_torch_in_mm(model, exported, sample_video) -> None:
    """Parity after post-processing: ORT maps -> runtime/scene.py -> synthetic body model, against the torch
    reference's maps -> torch post-processing -> the same body model, in millimetres."""
    ort = pytest.importorskip("onnxruntime")
    from hmr_trt.export.body_model import ExportableSMPL
    from hmr_trt.export.synthetic_smpl import make_synthetic_smpl
    from hmr_trt.metrics import drift_mm

    body = ExportableSMPL(make_synthetic_smpl()).eval()
    x = np.concatenate((_letterboxed_frames(sample_video, 3, CFG.image_size),
                        ADAPTER.example_inputs(CFG, "maps", 3, seed=21)[0].numpy()))
    maps = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    with torch.no_grad():
        ref = post.postprocess(*model(torch.from_numpy(x)))
        ref_verts, ref_joints = body(ref["pose_rotmat"], ref["betas"])

    def body_np(feed):
        with torch.no_grad():
            v, j = body(torch.from_numpy(feed["pose_rotmat"]), torch.from_numpy(feed["betas"]))
        return {"vertices": v.numpy(), "joints3d": j.numpy()}

    people = scene.people_from_maps(maps, 0.2, body_model=body_np)
    ref_keys = [(b, tuple(yx)) for b, yx in zip(ref["batch_ids"].tolist(), ref["centers_yx"].tolist())]
    keys = [(p["image"], p["map_yx"]) for p in people]
    common = [k for k in keys if k in ref_keys]
    assert len(common) >= 0.9 * len(ref_keys) and len(common) > 5  # a peak at the threshold may flip
    got = body_np({"pose_rotmat": np.stack([people[keys.index(k)]["pose_rotmat"] for k in common]),
                   "betas": np.stack([people[keys.index(k)]["betas"] for k in common])})
    idx = [ref_keys.index(k) for k in common]
    v_mean, v_max = drift_mm(got["vertices"], ref_verts.numpy()[idx])
    j_mean, j_max = drift_mm(got["joints3d"], ref_joints.numpy()[idx])
    goal = min(contract("instancehmr").goal_mm("fp32"), 0.02)  # tiny config: 0.005 mm measured
    assert v_mean < goal and j_mean < goal and v_max < 0.5 and j_max < 0.5, (v_mean, v_max, j_mean, j_max)
    assert all(p["box"] is not None and p["box"][2] > p["box"][0] for p in people)
