"""trt-run end to end on a short clip, its outputs, and every bad input the issue names."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from hmr_trt.runtime.cli import app
from hmr_trt.runtime.pipeline import RunOptions, run_features, run_video

runner = CliRunner()
FRAMES = 40


@pytest.fixture(scope="module")
def run_dir(full_export, sample_video, tmp_path_factory):
    export_dir, _ = full_export
    out = tmp_path_factory.mktemp("run") / "vtest"
    render = out.parent / "render.mp4"
    result = runner.invoke(app, ["--video", str(sample_video), "--export", str(export_dir), "--out", str(out),
                                 "--emit", "all", "--max-frames", str(FRAMES), "--min-track-frames", "4",
                                 "--render", str(render), "--quiet"])
    assert result.exit_code == 0, result.output
    return out, render


def test_summary_and_track_files(run_dir) -> None:
    out, render = run_dir
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_decoded"] == FRAMES and summary["tracks"] >= 1
    assert summary["backend"].startswith("onnxruntime")
    assert set(summary["timings_s"]) >= {"decode", "detect", "track", "crop", "backbone", "temporal", "body_model",
                                         "writing", "render"}
    assert summary["frames_per_second"] > 0 and "weights" in summary
    for row in summary["track_files"]:
        data = np.load(out / row["file"])
        n = row["frames"]
        assert data["frame_indices"].shape == (n,) and data["boxes"].shape == (n, 4)
        assert data["pose_rotmat"].shape == (n, 24, 3, 3) and data["pose_axis_angle"].shape == (n, 72)
        assert data["betas"].shape == (n, 10) and data["cam"].shape == (n, 3)
        assert data["joints3d"].shape == (n, 24, 3) and data["vertices"].shape[0] == n
        assert np.isfinite(data["vertices"]).all()


def test_render_is_a_video_with_every_frame(run_dir) -> None:
    import cv2

    _, render = run_dir
    cap = cv2.VideoCapture(str(render))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == FRAMES


def test_features_input_several_tracks_and_no_vertices(full_export, tmp_path) -> None:
    export_dir, _ = full_export
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "f.npz", track_a=rng.random((20, 2048), np.float32), track_b=rng.random((5, 2048), np.float32))
    summary = run_features(RunOptions(out=tmp_path / "o", export_dir=export_dir, features=tmp_path / "f.npz",
                                      vertices=False))
    assert summary["tracks"] == 2 and summary["frames_decoded"] == 25
    data = np.load(tmp_path / "o" / "track_a.npz")
    assert "vertices" not in data.files and data["joints3d"].shape == (20, 24, 3)


def _fails(args, match, out) -> None:
    result = runner.invoke(app, [*args, "--out", str(out), "--quiet"])
    assert result.exit_code == 1, result.output
    assert match in result.output, result.output
    assert not out.exists() or (out / "precious.txt").exists()
    assert not list(out.parent.glob(f".{out.name}.staging-*"))


def test_bad_inputs(full_export, tmp_path) -> None:
    export_dir, _ = full_export
    exp = ["--export", str(export_dir)]
    _fails([*exp, "--video", str(tmp_path / "missing.mp4")], "video not found", tmp_path / "o1")
    (tmp_path / "empty.mp4").write_bytes(b"")
    _fails([*exp, "--video", str(tmp_path / "empty.mp4")], "empty", tmp_path / "o2")
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
    _fails([*exp, "--video", str(tmp_path / "notes.mp4")], "cannot decode", tmp_path / "o3")
    np.savez(tmp_path / "narrow.npz", features=np.zeros((20, 100), np.float32))
    _fails([*exp, "--features", str(tmp_path / "narrow.npz")], "width 100", tmp_path / "o4")
    _fails([*exp, "--features", str(tmp_path / "narrow.npz"), "--backend", "tensorrt"], "TensorRT", tmp_path / "o5")
    _fails(["--export", str(tmp_path), "--features", str(tmp_path / "narrow.npz")], "no manifest.json", tmp_path / "o6")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "precious.txt").write_text("mine")
    (taken / "summary.json").write_text("{}")  # not hmr-trt's: no run file lists it
    np.savez(tmp_path / "ok.npz", features=np.zeros((20, 2048), np.float32))
    _fails([*exp, "--features", str(tmp_path / "ok.npz")], "which no earlier hmr-trt run there wrote", taken)
    assert (taken / "precious.txt").read_text() == "mine" and (taken / "summary.json").read_text() == "{}"
    assert sorted(p.name for p in taken.iterdir()) == ["precious.txt", "summary.json"]


def test_truncated_video_processes_what_decodes(full_export, sample_video, tmp_path) -> None:
    export_dir, _ = full_export
    cut = tmp_path / "cut.avi"
    cut.write_bytes(sample_video.read_bytes()[:600_000])  # about the first 50-60 frames
    summary = run_video(RunOptions(out=tmp_path / "o", export_dir=export_dir, video=cut, emit="all",
                                   min_track_frames=1))
    assert 0 < summary["frames_decoded"] < 795
    assert summary["frames_lost"] == summary["frames_declared"] - summary["frames_decoded"] > 0


def test_video_without_people_gives_an_empty_valid_summary(full_export, tmp_path) -> None:
    import cv2

    export_dir, _ = full_export
    path = str(tmp_path / "blank.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for i in range(12):
        writer.write(np.full((240, 320, 3), 40 + i, np.uint8))
    writer.release()
    summary = run_video(RunOptions(out=tmp_path / "o", export_dir=export_dir, video=tmp_path / "blank.avi"))
    assert summary["tracks"] == 0 and summary["frames_decoded"] == 12
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["tracks"] == 0


def test_ctrl_c_leaves_no_files(full_export, sample_video, tmp_path) -> None:
    export_dir, _ = full_export
    seen = []

    def interrupt(n: int) -> None:
        seen.append(n)
        if len(seen) == 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_video(RunOptions(out=tmp_path / "o", export_dir=export_dir, video=sample_video,
                             render=tmp_path / "r.mp4", max_frames=30), progress=interrupt)
    assert list(tmp_path.iterdir()) == []
