"""trt-run on a short clip: image-space cameras and 2D joints in the track files, the caption; --format vibe
refused for a model whose official demo writes no such file (the peers' files: tests/runtime/test_vibe_format.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from hmr_trt.runtime.cameras import project_orig_cam
from hmr_trt.runtime.cli import app

runner = CliRunner()
FRAMES = 24


@pytest.fixture(scope="module")
def vibe_run(full_export, sample_video, tmp_path_factory):
    export_dir, _ = full_export
    out = tmp_path_factory.mktemp("run-vibe") / "vtest"
    render = out.parent / "render.mp4"
    result = runner.invoke(app, ["--video", str(sample_video), "--export", str(export_dir), "--out", str(out),
                                 "--emit", "all", "--max-frames", str(FRAMES), "--min-track-frames", "4",
                                 "--render", str(render), "--quiet"])
    assert result.exit_code == 0, result.output
    return out, render


def test_track_files_hold_image_cameras_and_pixel_joints(vibe_run) -> None:
    out, _ = vibe_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["format"] == "npz" and summary["tracks"] >= 1 and summary["detector"]
    for row in summary["track_files"]:
        track = np.load(out / row["file"])
        n = row["frames"]
        assert track["orig_cam"].shape == (n, 4) and track["joints2d"].shape == (n, 24, 2)
        # joints2d are the 3D joints seen through orig_cam, in pixels
        for i in (0, n - 1):
            np.testing.assert_allclose(project_orig_cam(track["joints3d"][i], track["orig_cam"][i],
                                                        summary["width"], summary["height"]),
                                       track["joints2d"][i], atol=0.05)


def test_vibe_format_is_refused_for_a_model_whose_demo_writes_no_such_file(full_export, sample_video,
                                                                           tmp_path) -> None:
    export_dir, _ = full_export  # coseg: no official demo
    result = runner.invoke(app, ["--video", str(sample_video), "--export", str(export_dir), "--out",
                                 str(tmp_path / "o"), "--max-frames", "4", "--format", "vibe"])
    assert result.exit_code == 1 and "writes no such file" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_features_input_refuses_the_vibe_format(full_export, tmp_path) -> None:
    export_dir, _ = full_export
    np.savez(tmp_path / "f.npz", features=np.zeros((20, 2048), np.float32))
    result = runner.invoke(app, ["--features", str(tmp_path / "f.npz"), "--export", str(export_dir),
                                 "--out", str(tmp_path / "o"), "--format", "vibe"])
    assert result.exit_code == 1 and "needs --video" in result.output
    assert not (tmp_path / "o").exists()


def test_rendered_video_has_its_caption(vibe_run) -> None:
    import cv2

    _, render = vibe_run
    cap = cv2.VideoCapture(str(render))
    ok, frame = cap.read()
    cap.release()
    assert ok
    band = frame[:20, :300].astype(int)
    assert (band.max(axis=2) > 200).mean() > 0.02, "white caption text in the top-left band"


def test_vibe_format_writes_the_peer_demo_file_from_the_track_files(vibe_video_export, sample_video, tmp_path) -> None:
    """VIBE's export: --format vibe (with jsonl, through the streaming sinks) writes vibe_output.pkl as VIBE's demo
    saves it, one entry per track file, the same frames and poses as the track files."""
    import joblib

    from hmr_trt.runtime.vibe_format import VIBE_KEYS

    out = tmp_path / "o"
    result = runner.invoke(app, ["--video", str(sample_video), "--export", str(vibe_video_export), "--out", str(out),
                                 "--emit", "all", "--max-frames", str(FRAMES), "--min-track-frames", "4",
                                 "--format", "vibe", "--format", "jsonl", "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["format"].split(",") == ["npz", "vibe", "jsonl"] and summary["tracks"] >= 1
    assert "vibe_output.pkl" in summary["files"]
    results = joblib.load(out / "vibe_output.pkl")
    assert len(results) == summary["tracks"]
    for row in summary["track_files"]:
        track = np.load(out / row["file"])
        entry = results[int(row["id"])]
        assert set(VIBE_KEYS) <= set(entry) and entry["joints2d"] is None
        assert entry["orig_cam"].dtype == np.float64 and entry["bboxes"].dtype == np.float64
        np.testing.assert_array_equal(entry["frame_ids"], track["frame_indices"])
        np.testing.assert_allclose(entry["pose"], track["pose_axis_angle"], atol=1e-6)
        assert entry["verts"].shape == track["vertices"].shape
