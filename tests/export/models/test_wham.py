"""WHAM against the official code (tests/fixtures/wham_official*.{npz,pth.tar}, made by
tools/wham_official_parity.py from the official modules): the released-layout checkpoint loads
strictly, the whole-sequence forward equals the official one, and the init/step graphs in ONNX
Runtime fed frame by frame over the 320-frame track equal it too, world trajectory included."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from hmr_trt import registry  # noqa: E402
from hmr_trt.errors import CheckpointError, ConfigError, InputSpecError  # noqa: E402
from hmr_trt.runtime.wham_stream import WHAMTracks, camera_row, normalize_keypoints  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
CHECKPOINT = FIXTURES / "wham_official_tiny.pth.tar"
OUTPUTS = ("pose_rotmat", "betas", "cam", "cam_t", "contact", "root_world", "trans_world")
# float32 round-off between two orders of the same arithmetic. The world root orientation is the
# loosest: the refiner reads the feet's velocity as the difference of two world positions tens of metres
# from the origin (float32 spacing 8e-6 m at 78 m) times 30, in the official code as here.
ATOL = {"pose_rotmat": 1e-6, "betas": 1e-6, "cam": 1e-6, "cam_t": 1e-5, "contact": 1e-6, "root_world": 1e-4,
        "trans_world": 2e-4}


@pytest.fixture(scope="module")
def fixture():
    return dict(np.load(FIXTURES / "wham_official.npz"))


@pytest.fixture(scope="module")
def wham():
    torch.set_num_threads(1)
    adapter = registry.adapter("wham")
    cfg = adapter.tiny_config()
    return adapter, cfg, adapter.reference(cfg, CHECKPOINT)


def frames(fx: dict):
    w, h = float(fx["width"]), float(fx["height"])
    return [normalize_keypoints(k, b, w, h) for k, b in zip(fx["keypoints"], fx["bbox"])], camera_row(w, h)


def check(name: str, got: np.ndarray, official: np.ndarray) -> None:
    assert got.shape == official.shape, name
    assert np.abs(official).max() > 0.05, f"{name}: the fixture's official output is flat"
    np.testing.assert_allclose(got, official, rtol=0, atol=ATOL[name], err_msg=name)


def test_normalisation_equals_the_official_dataset(fixture):
    xs, _ = frames(fixture)
    np.testing.assert_allclose(np.stack([x for x, _ in xs]), fixture["official_x"], rtol=0, atol=2e-6)
    np.testing.assert_array_equal(np.stack([m for _, m in xs]), fixture["official_mask"])
    assert 0.1 < fixture["official_mask"].mean() < 0.5  # some keypoints masked, most not


def test_whole_sequence_equals_the_official_forward(wham, fixture):
    adapter, cfg, model = wham
    xs, camera = frames(fixture)
    t = lambda a: torch.from_numpy(np.asarray(a, np.float32))[None]  # noqa: E731
    with torch.no_grad():
        out = model(t([x for x, _ in xs]), t([m for _, m in xs]), t(fixture["features"]), t(fixture["official_cam_angvel"]),
                    t(fixture["bbox"]), t(camera), t(fixture["init_global_orient"]), t(fixture["init_body_pose"]),
                    t(fixture["init_betas"]))
    for name in OUTPUTS:
        check(name, out[name][0].numpy(), fixture[f"official_{name}"])
    contact = fixture["official_contact"]
    assert ((contact > 0.5).mean(0) > 0).any() and ((contact > 0.5).mean(0) < 1).any()  # the reset path ran


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """``trt-export --model wham`` at the tiny config with the fixture's released-layout checkpoint (with its
    hmr2/ sub-export): one export for every test below."""
    from hmr_trt.export.pipeline import ExportOptions, run_export

    out = tmp_path_factory.mktemp("wham_export") / "wham"
    adapter = registry.adapter("wham")
    result = run_export(ExportOptions(out=out, model="wham", config=adapter.tiny_config(), checkpoint=CHECKPOINT,
                                      video=None))
    assert not result.manifest.parity["fp32"]["failures"]
    return out


@pytest.fixture(scope="module")
def graphs(export_dir):
    from hmr_trt.engines.preflight import validate_onnx

    paths = {"init": export_dir / "init_fp32.onnx", "step": export_dir / "wham_step_fp32.onnx"}
    for path in paths.values():
        validate_onnx(path)
    return paths


def test_step_graph_frame_by_frame_equals_the_official_sequence(wham, fixture, graphs):
    """Two tracks (the fixture's, and the same track starting 25 frames later), one batched step per
    video frame in ONNX Runtime; each equals the official whole-sequence forward frame by frame."""
    from hmr_trt.runtime.backends import OnnxRuntimeBackend

    adapter, cfg, _ = wham
    xs, camera = frames(fixture)
    n = len(xs)
    starts = {"a": 0, "b": 25}
    got = {k: {o: [] for o in OUTPUTS} for k in starts}
    init = {"init_global_orient": fixture["init_global_orient"], "init_body_pose": fixture["init_body_pose"],
            "init_betas": fixture["init_betas"], "keypoints": xs[0][0]}
    with OnnxRuntimeBackend(graphs["init"], threads=1) as ib, OnnxRuntimeBackend(graphs["step"], threads=1) as sb:
        tracks = WHAMTracks.from_contract(ib, sb, adapter.contract_for(cfg))
        for frame in range(n + 25):
            tracks.start({k: init for k, s in starts.items() if frame == s})
            live = {}
            for k, s in starts.items():
                i = frame - s
                if 0 <= i < n:
                    live[k] = {"keypoints": xs[i][0], "mask": xs[i][1], "features": fixture["features"][i],
                               "cam_angvel": fixture["official_cam_angvel"][i], "bbox": fixture["bbox"][i],
                               "camera": camera}
            for k, out in tracks.step(live).items():
                for o in OUTPUTS:
                    got[k][o].append(out[o])
    assert tracks.frames == {"a": n, "b": n} and n >= 300
    for k in starts:
        for name in OUTPUTS:
            check(name, np.stack(got[k][name]), fixture[f"official_{name}"])


def test_features_of_the_wrong_shape_one_line(wham, graphs, fixture):
    from hmr_trt.runtime.backends import OnnxRuntimeBackend

    adapter, cfg, _ = wham
    xs, camera = frames(fixture)
    with OnnxRuntimeBackend(graphs["init"]) as ib, OnnxRuntimeBackend(graphs["step"]) as sb:
        tracks = WHAMTracks.from_contract(ib, sb, adapter.contract_for(cfg))
        with pytest.raises(ConfigError, match="no state"):
            tracks.step({"a": {}})
        tracks.start({"a": {"init_global_orient": fixture["init_global_orient"], "init_body_pose": fixture["init_body_pose"],
                            "init_betas": fixture["init_betas"], "keypoints": xs[0][0]}})
        frame = {"keypoints": xs[0][0], "mask": xs[0][1], "features": fixture["features"][0][:-1],
                 "cam_angvel": np.zeros(6), "bbox": fixture["bbox"][0], "camera": camera}
        with pytest.raises(InputSpecError) as err:
            tracks.step({"a": frame})
        assert "features" in str(err.value) and "\n" not in str(err.value)
        assert tracks.frames["a"] == 0  # nothing stepped
    with pytest.raises(InputSpecError, match=r"expected \(17, 3\)"):
        normalize_keypoints(np.zeros((17, 2)), fixture["bbox"][0], 640, 480)


def test_track_too_short_for_the_demo(wham, fixture):
    adapter, cfg, model = wham
    t = 12
    z = lambda *s: torch.zeros(1, *s)  # noqa: E731
    with pytest.raises(InputSpecError) as err:
        model(z(t, 37), z(t, 17), z(t, cfg.d_feat), z(t, 6), z(t, 3), z(3), torch.eye(3)[None],
              torch.eye(3).expand(1, 23, 3, 3), z(10))
    assert "12 frames is too short" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputSpecError, match="features has shape"):
        model(z(40, 37), z(40, 17), z(40, cfg.d_feat + 1), z(40, 6), z(40, 3), z(3), torch.eye(3)[None],
              torch.eye(3).expand(1, 23, 3, 3), z(10))


def test_released_files_of_another_model_or_size_one_line(wham, tmp_path):
    adapter, cfg, _ = wham
    vibe = registry.adapter("vibe")
    from hmr_trt.export.models.temporal import save_trainer_checkpoint

    other = save_trainer_checkpoint(vibe.reference(vibe.tiny_config()), tmp_path / "vibe_model_wo_3dpw.pth.tar",
                                    smpl_vertices=40)
    with pytest.raises(CheckpointError) as err:
        adapter.reference(cfg, other)
    assert "not a WHAM checkpoint" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CheckpointError) as err:
        adapter.reference(dataclasses.replace(cfg, d_embed=24), CHECKPOINT)
    assert "shape mismatches" in str(err.value) and "\n" not in str(err.value)
    from hmr_trt.export.models.checkpoint import load_torch_file

    state = load_torch_file(CHECKPOINT, "wham")
    state["model"].pop("trajectory_refiner.refiner.declayer1.bias")
    torch.save(state, tmp_path / "cut.pth.tar")
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): trajectory_refiner.refiner.declayer1.bias"):
        adapter.reference(cfg, tmp_path / "cut.pth.tar")


def test_a_pickle_that_runs_code_is_refused(wham, tmp_path):
    import os
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pth.tar"
    torch.save({"model": {}, "x": Evil()}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="refuses this file"):
        registry.adapter("wham").reference(wham[1], path)
    assert not (tmp_path / "pwned").exists()


def test_export_folder_streams_raw_keypoints_like_the_official_demo(export_dir, fixture):
    """The export folder, verified, driven with raw keypoints and the first frame's SMPL estimate: results
    held until the track has 30 frames, then equal to the official forward; a 20-frame track is dropped."""
    from hmr_trt.runtime.wham_stream import WHAMStreamer, open_wham

    tracks, stack = open_wham(export_dir, threads=1)
    with stack:
        streamer = WHAMStreamer(tracks, float(fixture["width"]), float(fixture["height"]))
        init = {"global_orient": fixture["init_global_orient"], "body_pose": fixture["init_body_pose"],
                "betas": fixture["init_betas"]}
        got, released_at = [], {}
        for i in range(len(fixture["keypoints"])):
            people = {"a": {"keypoints": fixture["keypoints"][i], "features": fixture["features"][i],
                            "cam_angvel": fixture["official_cam_angvel"][i], "init": init if i == 0 else None}}
            if i < 20:
                people["short"] = {**people["a"], "init": init if i == 0 else None}
            elif i == 20:
                streamer.end_track("short")
            for track, frame, out in streamer.step_frame(i, people):
                assert track == "a"
                released_at.setdefault(i, []).append(frame)
                got.append(out)
        assert released_at[29] == list(range(30)) and streamer.dropped == ["short"]
        for name in OUTPUTS:
            check(name, np.stack([o[name] for o in got]), fixture[f"official_{name}"])
        with pytest.raises(InputSpecError, match="without its first frame's SMPL estimate"):
            streamer.step_frame(999, {"new": {"keypoints": fixture["keypoints"][0], "features": fixture["features"][0]}})


def test_export_folder_refuses_a_modified_graph(export_dir, tmp_path):
    import shutil

    from hmr_trt.errors import GraphError
    from hmr_trt.runtime.wham_stream import open_wham

    copy = tmp_path / "wham"
    shutil.copytree(export_dir, copy)
    step = next(copy.glob("wham_step_fp32.onnx"))
    step.write_bytes(step.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(GraphError):
        open_wham(copy)


def test_fp16_step_graph_keeps_the_recipes_fp32_parts_and_reports_its_drift(tmp_path):
    """--precision fp16: the step graph's linear layers (and the LSTMs in fp16-lstm) in FP16, its drift along the
    parity tracks measured on the CPU stand-in; INT8 is refused."""
    import onnx

    from hmr_trt.export.pipeline import ExportOptions, run_export

    cfg = registry.adapter("wham").tiny_config()
    result = run_export(ExportOptions(out=tmp_path / "w", model="wham", config=cfg, precision="fp16", with_backbone=False,
                                      checkpoint=CHECKPOINT))
    fp16 = result.manifest.parity["fp16"]
    assert 0 < fp16["trans_world_mm"] < 100 and fp16["conversion"]["converted_nodes"] > 0
    graph = onnx.load(str(tmp_path / "w" / "wham_step_fp16.onnx"))
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(graph).graph.value_info}
    lstm_out = [n.output[0] for n in graph.graph.node if n.op_type == "LSTM"]
    assert lstm_out and all(types.get(o) == onnx.TensorProto.FLOAT for o in lstm_out)  # the default keeps LSTMs
    assert result.manifest.find("step", "onnx", "fp16") is not None
    with pytest.raises(ConfigError, match="int8"):
        run_export(ExportOptions(out=tmp_path / "y", model="wham", config=cfg, precision="int8", with_backbone=False))
    assert not (tmp_path / "y").exists()


@pytest.mark.slow
def test_fp16_over_the_drift_limit_writes_nothing(tmp_path):
    from hmr_trt.errors import ParityError
    from hmr_trt.export.pipeline import ExportOptions, run_export

    cfg = registry.adapter("wham").tiny_config()
    with pytest.raises(ParityError, match="nothing was written"):
        run_export(ExportOptions(out=tmp_path / "x", model="wham", config=cfg, precision="fp16", with_backbone=False,
                                 checkpoint=CHECKPOINT, max_drift_mm=0.01))
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------------------------
# trt-run --video with a WHAM export

def test_trt_run_video_with_a_wham_export(export_dir, sample_video, tmp_path, monkeypatch):
    """Detector -> tracker -> ViTPose keypoints + HMR 2.0 token -> WHAM step -> body model on the sample video:
    per-frame results with the world trajectory in the track files, tracks under WHAM's 30 frames dropped.
    (The step graph's equality with the official forward is the streaming tests' above.)"""
    from hmr_trt.runtime import wham_video
    from hmr_trt.runtime.pipeline import RunOptions, run_video

    export = export_dir
    # the seeded tiny ViTPose scores about half its people under WHAM's 6 keypoints over 0.3, so a track
    # reaches WHAM's 30 steps in about 40 video frames: 80 frames give several
    frames = 80
    assert (export / "hmr2" / "manifest.json").is_file() and (export / "vitpose" / "manifest.json").is_file()
    fed = []
    real = wham_video.TrackFamilyStage.feed
    monkeypatch.setattr(wham_video.TrackFamilyStage, "feed",
                        lambda self, i, img: (lambda r: (fed.append((i, len(r[0]))), r)[1])(real(self, i, img)))
    summary = run_video(RunOptions(out=tmp_path / "run", export_dir=export, video=str(sample_video), max_frames=frames,
                                   threads=1, format=("npz", "jsonl")))
    assert summary["family"] == "track" and summary["frames_decoded"] == frames
    assert any(n for _, n in fed), f"nobody detected with 6 keypoints in {frames} frames"
    files = sorted((tmp_path / "run").glob("track_*.npz"))
    assert files and summary["tracks"] == len(files)
    for path in files:
        arrays = np.load(path)
        n = len(arrays["frame_indices"])
        assert n >= 30  # WHAM's minimum track length: shorter tracks dropped
        assert arrays["trans_world"].shape == (n, 3) and arrays["root_world"].shape == (n, 3, 3)
        assert arrays["vertices"].shape[0] == n and np.isfinite(arrays["trans_world"]).all()
        assert np.abs(np.diff(arrays["trans_world"], axis=0)).max() > 0  # the trajectory moves
    import json

    lines = [json.loads(line) for line in (tmp_path / "run" / "frames.jsonl").read_text().splitlines()]
    assert len(lines) == frames
    people = [p for line in lines for p in line["people"]]
    assert people and all(len(p["trans_world"]) == 3 and len(p["root_world"]) == 3 for p in people)


def test_trt_export_cli_refuses_another_models_file_in_one_line(tmp_path):
    """`trt-export --model wham --checkpoint <a VIBE file>`: exit 1, one line, nothing written."""
    from typer.testing import CliRunner

    from hmr_trt.export.cli import app
    from hmr_trt.export.models.temporal import save_trainer_checkpoint

    vibe = registry.adapter("vibe")
    other = save_trainer_checkpoint(vibe.reference(vibe.tiny_config()), tmp_path / "vibe.pth.tar", smpl_vertices=40)
    result = CliRunner().invoke(app, ["--out", str(tmp_path / "out"), "--model", "wham", "--checkpoint", str(other)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "not a WHAM checkpoint" in lines[0], result.output
    assert not (tmp_path / "out").exists()


def test_camera_angular_velocity_equals_the_official_dpvo_conversion(fixture):
    from hmr_trt.runtime.wham_stream import cam_angvel_from_dpvo

    got = cam_angvel_from_dpvo(fixture["slam"], 30.0)
    official = fixture["official_cam_angvel"]
    assert np.abs(official).max() > 0.05  # the fixture's camera turns
    np.testing.assert_allclose(got, official, rtol=0, atol=2e-5)
    assert not cam_angvel_from_dpvo(np.tile([0, 0, 0, 0, 0, 0, 1.0], (5, 1)), 30.0).any()  # static: zeros
    with pytest.raises(InputSpecError, match="camera trajectory"):
        cam_angvel_from_dpvo(np.zeros((5, 4)), 30.0)


def test_step_parity_states_the_floor_and_a_wrong_graph_fails(wham, tmp_path):
    """FP32 parity of the step graph follows every model's rule (within the tolerance or 10 x the torch sequence's
    own float32 floor, stated); a step graph exported from weights 1% off (an LSTM) or a biased head fails it."""
    import copy

    from hmr_trt.export import onnx_export
    from hmr_trt.export.track_export import step_parity

    adapter, cfg, model = wham
    contract = adapter.contract_for(cfg)

    def export(m, folder):
        folder.mkdir()
        paths = {}
        for name in ("init", "step"):
            paths[name] = folder / f"{name}.onnx"
            onnx_export.onnx_from_module(adapter.exportable(m, name), contract.graph(name),
                                         adapter.example_inputs(cfg, name, 2), paths[name], max_batch=8)
        return paths

    good = step_parity(export(model, tmp_path / "good"), model, adapter, cfg, contract)
    assert not good["failures"], good["failures"]
    assert set(good["floor_max_abs"]) == set(good["max_abs"]) and good["floor_multiple"] == 10.0
    assert max(good["floor_max_abs"].values()) > 0
    lstm = next(k for k, _ in model.named_parameters() if "weight_ih" in k)
    head = [k for k, p in model.named_parameters() if k.endswith(".bias") and p.ndim == 1][-1]
    for label, (key, edit) in {"weight 1% off": (lstm, lambda p: p.mul_(1.01)),
                               "biased head": (head, lambda p: p.add_(0.01))}.items():
        wrong = copy.deepcopy(model)
        with torch.no_grad():
            edit(wrong.get_parameter(key))
        report = step_parity(export(wrong, tmp_path / label.replace(" ", "_").replace("%", "")), model, adapter, cfg,
                             contract)
        assert report["failures"], f"{label} ({key}) passed FP32 step parity"
