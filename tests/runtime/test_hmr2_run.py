"""trt-run with an HMR 2.0 export (tiny configuration, seeded weights, weights in an external data file):
--video writes track files (SMPL parameters, both cameras, the token) and the render; each track's rows
equal the model graph on crops cut as the official demo cuts them; --image runs too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hmr_trt.runtime.cli import app
from hmr_trt.runtime.crops import CropGeometry, normalise_crops
from hmr_trt.runtime.video import frames_from_video

pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")
runner = CliRunner()
FRAMES = 4


@pytest.fixture(scope="module")
def hmr2_export(tmp_path_factory) -> Path:
    import _pytest.monkeypatch

    from hmr_trt import external_data, registry
    from hmr_trt.export.pipeline import ExportOptions, run_export
    from hmr_trt.profile import ShapeProfile

    out = tmp_path_factory.mktemp("hmr2") / "export"
    with _pytest.monkeypatch.MonkeyPatch.context() as mp:
        mp.setattr(external_data, "THRESHOLD_BYTES", 0)  # written as the > 2 GB ViT-H graph is
        run_export(ExportOptions(out=out, model="hmr2", config=registry.adapter("hmr2").tiny_config(),
                                 profile=ShapeProfile.parse("1:4:8"), parity_windows=3, build_engines=False))
    return out


def test_video_writes_tracks_and_render_equal_to_the_graph_on_official_crops(hmr2_export, sample_video, tmp_path):
    from hmr_trt.manifest import Manifest
    from hmr_trt.runtime.backends import OnnxRuntimeBackend

    out, render = tmp_path / "run", tmp_path / "render.mp4"
    result = runner.invoke(app, ["--video", str(sample_video), "--export", str(hmr2_export), "--out", str(out),
                                 "--max-frames", str(FRAMES), "--min-track-frames", "1", "--detector", "hog",
                                 "--render", str(render), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "hmr2" and summary["tracks"] >= 1
    assert render.is_file() and render.stat().st_size > 0
    manifest = Manifest.read(hmr2_export)
    geometry = CropGeometry.of(manifest.model_contract())
    assert geometry.aspect == pytest.approx(0.75) and geometry.antialias and geometry.size == 256
    frames = dict(frames_from_video(sample_video, FRAMES))
    art = manifest.find("hmr2", "onnx", "fp32")
    with OnnxRuntimeBackend(hmr2_export / art.path) as model:
        for row in summary["track_files"]:
            track = np.load(out / row["file"])
            for name in ("pose_rotmat", "betas", "cam", "cam_t", "token", "vertices", "orig_cam", "cam_t_full",
                         "focal_length_px"):
                assert name in track.files and len(track[name]) == row["frames"], name
            crops = [geometry.crop(frames[int(f)], geometry.box(b))
                     for f, b in zip(track["frame_indices"], track["boxes"])]
            direct = model.infer({"images": normalise_crops(np.stack(crops))})
            for name in ("pose_rotmat", "betas", "cam", "token"):
                np.testing.assert_allclose(track[name], direct[name], atol=2e-5)


def test_full_image_camera_is_the_official_demo_conversion():
    """The official pred_cam_t and the renderer's cam_crop_to_full with the demo's focal length
    FOCAL_LENGTH / IMAGE_SIZE * max(W, H), written out here, against perspective_cameras."""
    from hmr_trt.runtime.cameras import perspective_cameras

    rng = np.random.default_rng(0)
    n, width, height, focal, crop = 5, 768, 576, 5000.0, 256
    cam = np.c_[rng.uniform(0.5, 1.2, n), rng.normal(0, 0.1, (n, 2))]
    cam_t = np.c_[cam[:, 1:], 2 * focal / (crop * cam[:, 0] + 1e-9)]
    centre, side = rng.uniform(100, 500, (n, 2)), rng.uniform(80, 400, n)
    scaled = focal / crop * max(width, height)
    bs = side * cam[:, 0] + 1e-9
    official = np.c_[2 * (centre[:, 0] - width / 2) / bs + cam[:, 1], 2 * (centre[:, 1] - height / 2) / bs + cam[:, 2],
                     2 * scaled / bs]
    got = perspective_cameras(cam, np.c_[centre, side, side], width, height, focal, crop)
    np.testing.assert_allclose(got["cam_t"], cam_t, rtol=1e-6)
    np.testing.assert_allclose(got["cam_t_full"], official, rtol=1e-5)
    np.testing.assert_allclose(got["focal_length_px"], scaled, rtol=1e-5)
