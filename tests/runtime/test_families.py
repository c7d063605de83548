"""trt-run with frame (DecoMR) and scene (instancehmr) exports: --video and --image end to end, results
equal to running the exported graphs directly, modes a family lacks refused with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hmr_trt.runtime.cli import app
from hmr_trt.runtime.crops import crop_from_frame, normalise_crops, square_box
from hmr_trt.runtime.scene import letterbox, people_from_maps
from hmr_trt.runtime.video import frames_from_video

pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")
runner = CliRunner()
FRAMES = 4


def _export(name: str, out: Path, video: Path | None = None) -> Path:
    from hmr_trt import registry
    from hmr_trt.export.pipeline import ExportOptions, run_export
    from hmr_trt.profile import ShapeProfile

    run_export(ExportOptions(out=out, model=name, config=registry.adapter(name).tiny_config(), video=video,
                             profile=ShapeProfile.parse("1:4:8"), parity_windows=3, build_engines=False))
    return out


@pytest.fixture(scope="module")
def decomr_export(tmp_path_factory) -> Path:
    return _export("decomr", tmp_path_factory.mktemp("decomr") / "export")


@pytest.fixture(scope="module")
def scene_export(tmp_path_factory) -> Path:
    return _export("instancehmr", tmp_path_factory.mktemp("scene") / "export")


@pytest.fixture(scope="module")
def still_images(sample_video, tmp_path_factory) -> list:
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, frame in frames_from_video(sample_video, 2):
        paths.append(folder / f"frame{i}.png")
        cv2.imwrite(str(paths[-1]), frame)
    return paths


def _session(export_dir: Path, graph: str, precision: str = "fp32"):
    from hmr_trt.manifest import Manifest
    from hmr_trt.runtime.backends import OnnxRuntimeBackend

    art = Manifest.read(export_dir).find(graph, "onnx", precision)
    return OnnxRuntimeBackend(export_dir / art.path)


def _run(args: list) -> object:
    return runner.invoke(app, [*args, "--quiet"])


def _frames(video: Path, n: int) -> dict:
    return dict(frames_from_video(video, n))


# --- frame family --------------------------------------------------------------------------------------

def test_frame_video_tracks_equal_the_model_graph_on_their_crops(decomr_export, sample_video, tmp_path) -> None:
    out = tmp_path / "run"
    result = _run(["--video", str(sample_video), "--export", str(decomr_export), "--out", str(out),
                   "--max-frames", str(FRAMES), "--min-track-frames", "1", "--detector", "hog"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "decomr" and summary["tracks"] >= 1 and summary["timings_s"]["model"] > 0
    assert summary["timings_s"]["backbone"] == 0  # no feature extractor, no streamer
    frames = _frames(sample_video, FRAMES)
    with _session(decomr_export, "decomr") as model:
        for row in summary["track_files"]:
            track = np.load(out / row["file"])
            assert "pose_rotmat" not in track.files and track["orig_cam"].shape == (row["frames"], 4)
            crops = [crop_from_frame(frames[int(f)], square_box(b, 1.2), 224)
                     for f, b in zip(track["frame_indices"], track["boxes"])]
            direct = model.infer({"images": normalise_crops(np.stack(crops))})
            np.testing.assert_allclose(track["vertices"], direct["vertices"], atol=2e-5)
            np.testing.assert_allclose(track["cam"], direct["cam"], atol=2e-5)


def test_frame_images_one_file_each_with_every_person(decomr_export, still_images, tmp_path) -> None:
    out = tmp_path / "run"
    args = ["--export", str(decomr_export), "--out", str(out), "--detector", "hog"]
    result = _run([*sum((["--image", str(p)] for p in still_images), []), *args])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [r["image"] for r in summary["image_files"]] == [str(p) for p in still_images]
    from hmr_trt.runtime.detect import HogPeopleDetector

    detector = HogPeopleDetector()
    with _session(decomr_export, "decomr") as model:
        for row, path in zip(summary["image_files"], still_images):
            people = np.load(out / row["file"])
            image = cv2.imread(str(path))
            dets = detector.detect(image)
            assert row["people"] == len(dets) == len(people["vertices"]) and len(dets) >= 1
            np.testing.assert_allclose(people["boxes"], dets[:, :4])
            crops = np.stack([crop_from_frame(image, square_box(d, 1.2), 224) for d in dets])
            direct = model.infer({"images": normalise_crops(crops)})
            np.testing.assert_allclose(people["vertices"], direct["vertices"], atol=2e-5)


# --- scene family --------------------------------------------------------------------------------------

def _scene_direct(export_dir: Path, frames_bgr: list, threshold: float = 0.2) -> list:
    boxed = [letterbox(f, 128, bgr=True) for f in frames_bgr]
    with _session(export_dir, "maps") as maps_graph, _session(export_dir, "body_model") as body:
        maps = maps_graph.infer({"image": np.stack([b[0] for b in boxed])})
        return people_from_maps(maps, threshold, [b[1] for b in boxed], body_model=body.infer), body


def test_scene_video_tracks_equal_maps_and_post_processing(scene_export, sample_video, tmp_path) -> None:
    out = tmp_path / "run"
    result = _run(["--video", str(sample_video), "--export", str(scene_export), "--out", str(out),
                   "--max-frames", str(FRAMES), "--min-track-frames", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tracks"] >= 1 and summary["detector"].startswith("none") and summary["timings_s"]["detect"] == 0
    frames = _frames(sample_video, FRAMES)
    people, _ = _scene_direct(scene_export, [frames[i] for i in range(FRAMES)])
    matched = 0
    for row in summary["track_files"]:
        track = np.load(out / row["file"])
        for i, f in enumerate(track["frame_indices"]):
            same = [p for p in people if p["image"] == f and np.allclose(p["box"], track["boxes"][i], atol=1e-3)]
            assert len(same) == 1
            np.testing.assert_allclose(track["pose_rotmat"][i], same[0]["pose_rotmat"], atol=1e-5)
            np.testing.assert_allclose(track["joints2d"][i], same[0]["joints2d"], atol=1e-3)
            matched += 1
    assert matched == sum(r["frames"] for r in summary["track_files"])


def test_scene_images_and_threshold(scene_export, still_images, tmp_path) -> None:
    out = tmp_path / "run"
    result = _run(["--image", str(still_images[0]), "--export", str(scene_export), "--out", str(out),
                   "--threshold", "0.3"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    people = np.load(out / summary["image_files"][0]["file"])
    direct, _ = _scene_direct(scene_export, [cv2.imread(str(still_images[0]))], threshold=0.3)
    assert len(people["vertices"]) == len(direct)
    if direct:
        np.testing.assert_allclose(people["scores"], [p["score"] for p in direct], atol=1e-6)
        np.testing.assert_allclose(people["betas"], np.stack([p["betas"] for p in direct]), atol=1e-5)


# --- bad input: one line, exit 1, nothing written ------------------------------------------------------

@pytest.mark.parametrize("case", ["unreadable", "features-on-frame", "threshold-on-frame", "threshold-range"])
def test_bad_input_exits_1_and_writes_nothing(case, decomr_export, scene_export, still_images, tmp_path) -> None:
    out = tmp_path / "out"
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    feats = tmp_path / "f.npz"
    np.savez(feats, features=np.zeros((4, 2048), np.float32))
    args = {
        "unreadable": ["--image", str(still_images[0]), "--image", str(bad), "--export", str(decomr_export)],
        "features-on-frame": ["--features", str(feats), "--export", str(decomr_export)],
        "threshold-on-frame": ["--image", str(still_images[0]), "--threshold", "0.5", "--export", str(decomr_export)],
        "threshold-range": ["--image", str(still_images[0]), "--threshold", "1.5", "--export", str(scene_export)],
    }[case]
    result = _run([*args, "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_an_empty_image_list_is_refused() -> None:
    from hmr_trt.errors import ConfigError
    from hmr_trt.runtime.images import read_images

    with pytest.raises(ConfigError, match="no images given"):
        read_images([])


def test_image_mode_is_refused_for_a_window_export(still_images, tmp_path) -> None:
    from hmr_trt import registry
    from hmr_trt.manifest import Manifest

    export = tmp_path / "window-export"
    export.mkdir()
    Manifest(model="coseg", config={}, profile={}, contract=registry.contract("coseg").to_dict()).write(export)
    result = _run(["--image", str(still_images[0]), "--export", str(export), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "--image runs frame and scene models" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
