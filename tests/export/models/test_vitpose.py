"""ViTPose: config and contract, the released mmpose checkpoint layout (restricted unpickler, the other parts
dropped by name, wrong files), the network + decoding vs the official code on real crops, export and parity."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from hmr_trt import registry  # noqa: E402
from hmr_trt.contract import ModelContract  # noqa: E402
from hmr_trt.errors import CheckpointError, ConfigError  # noqa: E402
from hmr_trt.export.models.vitpose.adapter import ADAPTER  # noqa: E402
from hmr_trt.export.models.vitpose.checkpoint import read_checkpoint  # noqa: E402
from hmr_trt.export.models.vitpose.config import VitPoseConfig  # noqa: E402
from hmr_trt.runtime.keypoints import decode_heatmaps, topdown_crop  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
OFFICIAL = FIXTURES / "vitpose_official.npz"
CKPT = FIXTURES / "vitpose_official_tiny.pth"


@pytest.fixture(scope="module")
def official() -> dict:
    with np.load(OFFICIAL) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def real_crops(official, sample_video):
    import cv2

    frames, index = {}, 0
    cap = cv2.VideoCapture(str(sample_video))
    while len(frames) < len(set(official["frames"].tolist())):
        ok, frame = cap.read()
        assert ok
        if index in official["frames"]:
            frames[index] = frame
        index += 1
    cap.release()
    pairs = [topdown_crop(frames[int(f)], b) for f, b in zip(official["frames"], official["boxes"])]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def test_config_round_trip_and_validation() -> None:
    cfg = VitPoseConfig()
    assert VitPoseConfig.from_dict(cfg.to_dict()) == cfg
    assert (cfg.width, cfg.heatmap_size) == (192, (64, 48))
    with pytest.raises(ConfigError, match=r"embed_dim=100 is not a multiple of heads=16"):
        VitPoseConfig(embed_dim=100)
    with pytest.raises(ConfigError, match=r"flip_test with keypoints=14"):
        VitPoseConfig(keypoints=14)
    with pytest.raises(ConfigError, match=r"unknown keys \['width'\]"):
        VitPoseConfig.from_dict({"width": 3})


def test_contract_is_registered_torch_free_and_round_trips() -> None:
    contract = registry.contract("vitpose")
    assert ModelContract.from_dict(contract.to_dict()) == contract
    g = contract.model_graph
    assert (contract.family, contract.body_model) == ("frame", "keypoints")
    assert [(t.name, t.shape) for t in g.inputs] == [("crops", ("batch", 3, 256, 192))]
    assert [(t.name, t.shape) for t in g.outputs] == [("heatmaps", ("batch", 17, 64, 48))]
    assert ADAPTER.contract_for(ADAPTER.tiny_config()).model_graph == g  # the tiny config keeps the geometry


def test_released_layout_checkpoint_equals_the_official_network_and_decoding(official, real_crops) -> None:
    """The tiny network from the mmpose-layout file (meta, state_dict, experts and other heads beside) on crops
    of data/vtest.avi: heatmaps equal the official ViT + TopdownHeatmapSimpleHead (flip test) to float32
    round-off, and the decoded frame keypoints the official ``decode``'s."""
    crops, trans = real_crops
    model = ADAPTER.reference(dataclasses.replace(ADAPTER.tiny_config(), seed=5), CKPT)
    with torch.no_grad():
        heat = model(torch.from_numpy(crops))[0].numpy()
    stride = heat.shape[2] // official["tiny_heatmaps_strided"].shape[2]
    np.testing.assert_allclose(heat[:, :, ::stride, ::stride], official["tiny_heatmaps_strided"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.abs(heat).max(axis=(2, 3)), official["tiny_heatmap_max_abs"], rtol=0, atol=1e-6)
    keypoints = decode_heatmaps(heat, trans)
    np.testing.assert_allclose(keypoints[..., :2], official["tiny_keypoints"][..., :2], rtol=0, atol=1e-3)
    np.testing.assert_allclose(keypoints[..., 2], official["tiny_keypoints"][..., 2], rtol=0, atol=1e-6)
    # the file's weights are in use: the seeded model (seed 5) alone gives other heatmaps
    with torch.no_grad():
        seeded = ADAPTER.reference(dataclasses.replace(ADAPTER.tiny_config(), seed=5))(torch.from_numpy(crops))[0]
    seeded = seeded.numpy()
    assert np.abs(seeded - heat).max() > 1e-2


def test_checkpoint_parts_of_other_datasets_are_dropped_by_name() -> None:
    raw = torch.load(CKPT, map_location="cpu", weights_only=True)
    assert set(raw) == {"meta", "state_dict"}
    extra = [k for k in raw["state_dict"] if ".experts." in k or k.startswith("associate_keypoint_heads.")]
    assert extra, "the fixture should hold the parts a split multi-dataset checkpoint keeps"
    state = read_checkpoint(CKPT)
    assert set(state) == set(raw["state_dict"]) - set(extra)
    assert set(state) == set(ADAPTER.reference(ADAPTER.tiny_config()).state_dict())


def test_flip_test_is_the_mirrored_pass_flipped_back_and_batches_do_not_mix() -> None:
    cfg = ADAPTER.tiny_config()
    model = ADAPTER.reference(cfg)
    x = ADAPTER.example_inputs(cfg, "vitpose", 3, seed=2)[0]
    with torch.no_grad():
        plain, mirror = model.heatmaps(x), model.heatmaps(x.flip(3))
        both = model(x)[0]
        alone = torch.cat([model(x[i:i + 1])[0] for i in range(3)])
    order = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
    torch.testing.assert_close(both, (plain + mirror[:, order].flip(3)) * 0.5, rtol=0, atol=1e-6)
    torch.testing.assert_close(alone, both, rtol=0, atol=1e-5)
    assert float((plain - both).abs().max()) > 1e-3  # the mirror changes the result: it is in the graph


def _save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def test_bad_checkpoints_are_one_line_errors_naming_the_file(tmp_path) -> None:
    cfg = ADAPTER.tiny_config()
    hmr2 = FIXTURES / "hmr2_official_tiny.ckpt"  # another model's released file (a Lightning checkpoint)
    wham_like = _save({"model": {"motion_encoder.neural_net.weight": torch.zeros(2)}}, tmp_path / "wham.pth.tar")
    no_net = _save({"meta": {}, "state_dict": {"detector.conv.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    truncated = tmp_path / "vitpose-h-multi-coco.pth"
    truncated.write_bytes(CKPT.read_bytes()[:40000])
    cases = [(hmr2, r"hmr2_official_tiny\.ckpt .*holds Python objects"),
             (wham_like, r"wham\.pth\.tar holds no state dict of tensors under state_dict"),
             (no_net, r"other\.pth holds no ViTPose network \(no backbone\.\* or keypoint_head\.\* keys"),
             (truncated, r"vitpose-h-multi-coco\.pth .*truncated or corrupt")]
    for path, message in cases:
        with pytest.raises(CheckpointError, match=message) as info:
            ADAPTER.reference(cfg, path)
        assert "\n" not in str(info.value)
    # another ViTPose size: the released configuration refuses the tiny file before building ViT-H
    with pytest.raises(CheckpointError, match=r"is a ViTPose this export does not build: embed_dim 32 \(this export: "
                                              r"1280\), depth 2 \(this export: 32\).*deconv_filters 16"):
        ADAPTER.reference(VitPoseConfig(), CKPT)


def test_pickled_code_is_refused_and_never_runs(tmp_path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"meta": Payload(), "state_dict": {}}, f)
    with pytest.raises(CheckpointError, match=r"evil\.pth"):
        ADAPTER.reference(ADAPTER.tiny_config(), path)
    assert not marker.exists()


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """``trt-export --model vitpose --checkpoint <the mmpose-layout file>`` at the tiny configuration."""
    from hmr_trt.export.pipeline import ExportOptions, run_export

    out = tmp_path_factory.mktemp("vitpose") / "export"
    result = run_export(ExportOptions(out=out, model="vitpose", config=ADAPTER.tiny_config(), checkpoint=CKPT,
                                      parity_windows=5, build_engines=False))
    return out, result


def test_trt_export_of_the_released_layout_file_end_to_end(tiny_export) -> None:
    """FP32 parity judged on the heatmaps and on keypoints in crop pixels (decoded from the reference's maxima),
    the maxima decided otherwise counted; the manifest carries the keypoint contract."""
    from hmr_trt.manifest import Manifest

    out, result = tiny_export
    manifest = Manifest.read(out)
    verdict = manifest.verdict["fp32"]
    assert verdict["verdict"] == "PASS", verdict
    assert manifest.contract["body_model"] == "keypoints"
    rows = result.reports[0].rows
    assert rows and all(r["outputs"]["heatmaps"]["max_abs"] < 1e-5 for r in rows)
    assert all(r["keypoints"]["keypoints"] == 5 * 17 and r["keypoints"]["maxima_decided_otherwise"] >= 0
               for r in rows)
    assert all(r["vertices_mean_mm"] <= r.get("limit_mm", 0.01) for r in rows)
    assert result.reports[0].spread_mm["random"] > 50  # keypoints move across the crops (crop pixels)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "parity_reference.npz", "vitpose_vitpose_fp32.onnx"]


def test_onnx_graph_keypoints_equal_the_official_ones(tiny_export, official, real_crops) -> None:
    """The exported graph on the real crops at batch 1, 2 and 4: heatmaps equal torch's, decoded keypoints the
    official ones."""
    out, _ = tiny_export
    model = ADAPTER.reference(ADAPTER.tiny_config(), CKPT)
    session = ort.InferenceSession(str(out / "vitpose_vitpose_fp32.onnx"), providers=["CPUExecutionProvider"])
    crops, trans = real_crops
    for n in (1, 2, 4):
        got = session.run(["heatmaps"], {"crops": crops[:n]})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(crops[:n]))[0].numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # keypoints: the seeded network's heatmaps are noise, where DARK's Newton step is ill-conditioned (a 1e-6 change
    # of a heatmap can move a few keypoints by hundredths of a pixel); trained heatmaps are peaks
    keypoints = decode_heatmaps(session.run(["heatmaps"], {"crops": crops})[0], trans)
    err = np.abs(keypoints[..., :2] - official["tiny_keypoints"][..., :2]).max(axis=-1)
    assert np.mean(err < 1e-3) >= 0.9 and err.max() < 0.5, np.sort(err.ravel())[-5:]


def test_python_api_runs_every_person_in_one_call(tiny_export, official, real_crops, sample_video) -> None:
    """``open_keypoint_model(export)``: one batched call per frame (or over crops of several frames) gives the
    keypoints the torch reference + decoding give; wrong shapes and non-keypoint exports are one-line errors."""
    import cv2

    from hmr_trt.errors import InputSpecError
    from hmr_trt.runtime.keypoints import check_keypoint_contract, open_keypoint_model, topdown_crops

    out, _ = tiny_export
    model = ADAPTER.reference(ADAPTER.tiny_config(), CKPT)
    cap = cv2.VideoCapture(str(sample_video))
    frame = cap.read()[1]
    cap.release()
    boxes = official["boxes"][official["frames"] == 0]
    with open_keypoint_model(out, backend="onnxruntime") as vitpose:
        got = vitpose.keypoints(frame, boxes)
        crops, trans = topdown_crops(frame, boxes)
        with torch.no_grad():
            want = decode_heatmaps(model(torch.from_numpy(crops))[0].numpy(), trans)
        assert got.shape == (len(boxes), 17, 3) and got.dtype == np.float32
        np.testing.assert_allclose(got[..., 2], want[..., 2], rtol=0, atol=1e-5)
        assert np.median(np.abs(got[..., :2] - want[..., :2])) < 1e-3
        mixed = vitpose.keypoints_of_crops(*real_crops)  # crops of two frames in one call
        np.testing.assert_allclose(mixed[..., 2], official["tiny_keypoints"][..., 2], rtol=0, atol=1e-5)
        assert vitpose.keypoints(frame, np.zeros((0, 4), np.float32)).shape == (0, 17, 3)
        with pytest.raises(InputSpecError, match=r"crops must be \(N, 3, 256, 192\) \(topdown_crops\), got \(2, 3, 256, 256\)"):
            vitpose.heatmaps(np.zeros((2, 3, 256, 256), np.float32))
    with pytest.raises(ConfigError, match=r"somewhere is a hmr2 export \(frame model, body model 'smpl'\), not a "
                                          r"keypoint model: export one with trt-export --model vitpose"):
        check_keypoint_contract(registry.contract("hmr2"), "somewhere")


def test_cli_bad_checkpoints_exit_1_with_one_line_and_nothing_written(tmp_path) -> None:
    """``trt-export --model vitpose --checkpoint X``: the released-size model refuses the tiny file (sizes read
    from the file, before ViT-H is built); another model's file is named; --out is never created."""
    from typer.testing import CliRunner

    from hmr_trt.export.cli import app

    other = FIXTURES / "hmr2_official_tiny.ckpt"
    for ckpt, message in ((CKPT, "ViTPose this export does not build"), (other, "cannot read checkpoint")):
        out = tmp_path / "out"
        result = CliRunner().invoke(app, ["--model", "vitpose", "--checkpoint", str(ckpt), "--out", str(out)])
        assert result.exit_code == 1, result.output
        errors = [line for line in result.output.splitlines() if "error" in line.lower()]
        assert len(errors) == 1 and message in errors[0] and ckpt.name in errors[0], result.output
        assert not out.exists()


def test_trt_run_refuses_a_keypoint_export_alone_before_anything_is_written(tiny_export, tmp_path, sample_video):
    from typer.testing import CliRunner

    from hmr_trt.runtime.cli import app

    out_export, _ = tiny_export
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["--export", str(out_export), "--video", str(sample_video), "--out", str(out)])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "is a keypoint model" in errors[0] and "open_keypoint_model" in errors[0], result.output
    assert not out.exists()


def test_precision_keep_rules_match_nodes_of_the_exported_graph(tiny_export) -> None:
    import re

    import onnx

    out, _ = tiny_export
    graph = onnx.load(str(out / "vitpose_vitpose_fp32.onnx"), load_external_data=False).graph
    for recipe in registry.contract("vitpose").recipes:
        for rule in recipe.keep:
            assert any(n.op_type in rule.ops and re.search(rule.scope, n.name) for n in graph.node), (recipe.name,
                                                                                                     rule.name)


def test_keypoint_parity_pins_the_reference_maxima_at_fp32_only(official) -> None:
    """A candidate whose heatmap maximum moved to a far cell (a near-tie taken the other way): FP32 rows decode
    from the reference's cells (no drift, the moved maximum counted), FP16 rows are judged end to end."""
    from hmr_trt.export import parity
    from hmr_trt.mesh import keypoint_points
    from hmr_trt.runtime.keypoints import heatmap_maxima

    ref = official["synthetic_heatmaps"][:2].astype(np.float32)
    cells, scores = heatmap_maxima(ref)
    cand = ref.copy()
    x, y = cells[0, 4].astype(int)
    far = ((x + 20) % 48, (y + 30) % 64)
    cand[0, 4, far[1], far[0]] = scores[0, 4] + 1e-3  # a far cell: the 11x11 blur at the old cell does not see it
    points = keypoint_points(ref)
    references = {"random": parity.Reference({"heatmaps": ref}, points, points)}
    windows = {"random": {"crops": np.zeros((2, 3, 256, 192), np.float32)}}
    run = lambda name, feed: {"heatmaps": cand[:len(feed["crops"])]}  # noqa: E731 - a stand-in runtime
    contract = registry.contract("vitpose")
    fp32 = parity.compare(run, references, windows, precision="fp32", batch_sizes=(2,), contract=contract)
    row = fp32.rows[0]
    assert row["vertices_mean_mm"] == 0.0 and row["keypoints"]["maxima_decided_otherwise"] == 1
    assert row["keypoints"]["judged_on"] == "pinned" and row["keypoints"]["unpinned_max_px"] > 10
    fp16 = parity.compare(run, references, windows, precision="fp16", batch_sizes=(2,), contract=contract)
    assert fp16.rows[0]["vertices_max_mm"] == pytest.approx(row["keypoints"]["unpinned_max_px"])
    assert fp16.rows[0]["keypoints"]["judged_on"] == "end to end" and not fp16.passed
