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


# --- the external data file is verified before first use ------------------------------------------------------

def _copy_export(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage", ["truncated", "modified", "longer", "missing"])
def test_a_damaged_external_data_file_is_one_line_exit_1_before_anything_runs(hmr2_export, sample_video, tmp_path,
                                                                              damage):
    """trt-run (through runtime/graph_loader.py) checks the graph's data file against the manifest's record
    (location, bytes, sha256) before ONNX Runtime reads it: a data file cut short in a copy, one of the same size
    with other bytes (another export's), one with bytes appended, or none: one line naming the file, exit 1,
    no output."""
    from hmr_trt.manifest import Manifest

    export = _copy_export(hmr2_export, tmp_path / "export")
    art = Manifest.read(export).find("hmr2", "onnx", "fp32")
    data = export / art.extra["external_data"]["location"]
    raw = data.read_bytes()
    if damage == "truncated":
        data.write_bytes(raw[: len(raw) // 2])
    elif damage == "modified":
        data.write_bytes(raw[:-4] + bytes(b ^ 0xFF for b in raw[-4:]))
    elif damage == "longer":
        data.write_bytes(raw + b"\0" * 16)
    else:
        data.unlink()
    out = tmp_path / "run"
    result = runner.invoke(app, ["--video", str(sample_video), "--export", str(export), "--out", str(out),
                                 "--max-frames", "2", "--detector", "hog", "--quiet"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert str(data) in " ".join(lines[0].split()) or data.name in lines[0], lines[0]
    expected = {"truncated": f"truncated: {len(raw) // 2} bytes", "modified": "is not the external data file",
                "longer": "is not the external data file", "missing": "not found"}[damage]
    assert expected in lines[0], lines[0]
    assert not out.exists()


def test_graph_loader_checks_the_data_file_and_its_record(hmr2_export, tmp_path):
    """graph_from_manifest: the intact export passes (the data file hashed once per process); a manifest record
    that differs from the graph's own is refused, as is a location outside the graph's folder."""
    import dataclasses

    from hmr_trt.errors import GraphError
    from hmr_trt.manifest import Manifest
    from hmr_trt.runtime.graph_loader import graph_from_manifest

    export = _copy_export(hmr2_export, tmp_path / "export")
    manifest = Manifest.read(export)
    art = manifest.find("hmr2", "onnx", "fp32")
    assert graph_from_manifest(export, manifest, art).path == export / art.path
    for record in ({**art.extra["external_data"], "bytes": 7},
                   {**art.extra["external_data"], "location": "../" + art.extra["external_data"]["location"]}):
        edited = dataclasses.replace(art, extra={**art.extra, "external_data": record})
        with pytest.raises(GraphError, match="external data record differs"):
            graph_from_manifest(export, manifest, edited)


def test_triton_repository_carries_the_external_data_file(hmr2_export, tmp_path):
    """trt-triton on an export whose graphs keep their weights in a data file: each model's version folder holds
    model.onnx and the data file under the name the graph reads; the config parses as Triton's ModelConfig
    protobuf; ONNX Runtime loads the copied model.onnx from that folder and gives the export's outputs."""
    pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] (the triton extra) brings Triton's "
                                                    "model-config protobuf")
    import onnxruntime as ort
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from hmr_trt.engines.triton_repo import repository_from_export
    from hmr_trt.manifest import Manifest, sha256_of

    manifest = Manifest.read(hmr2_export)
    out = tmp_path / "repo"
    written = repository_from_export(hmr2_export, out)
    assert set(written) == {"hmr2_hmr2", "hmr2_body_model"}
    for name in written:
        graph = name.split("_", 1)[1]
        art = manifest.find(graph, "onnx", "fp32")
        record = art.extra["external_data"]
        version = out / name / "1"
        assert sorted(p.name for p in version.iterdir()) == sorted(["model.onnx", record["location"]])
        assert sha256_of(version / record["location"]) == record["sha256"]
        cfg = text_format.Parse((out / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert cfg.platform == "onnxruntime_onnx" and [i.name for i in cfg.input] == [t.name for t in art.inputs]
    x = np.random.default_rng(0).normal(size=(2, 3, 256, 256)).astype(np.float32)
    copied = ort.InferenceSession(str(out / "hmr2_hmr2" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    original = ort.InferenceSession(str(hmr2_export / manifest.find("hmr2", "onnx", "fp32").path),
                                    providers=["CPUExecutionProvider"])
    for a, b in zip(copied.run(None, {"images": x}), original.run(None, {"images": x})):
        np.testing.assert_array_equal(a, b)
