"""Inputs of the per-image families from video frames: the export's parity sets (from frame 0) and INT8
calibration images (from a later frame, so the two never share a frame), from one video or a folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from hmr_trt import registry
from hmr_trt.calibration.images import (
    STRIDE,
    images_from_videos,
    iter_person_crops,
    letterboxed_frames,
    person_crops,
    sampled_frames,
)
from hmr_trt.errors import InputSpecError

cv2 = pytest.importorskip("cv2")
START = 400  # export/pipeline.py's CALIBRATION_START_FRAME (that module imports torch)


def _scene(size: int = 64):
    contract = registry.contract("instancehmr")
    graph = contract.model_graph
    image = dataclasses.replace(graph.inputs[0], shape=("batch", size, size, 3))
    return dataclasses.replace(contract, image_size=size, graphs=(dataclasses.replace(graph, inputs=(image,)),))


def _clip(src: Path, dst: Path, first: int, n: int) -> Path:
    """Frames [first, first + n) of ``src`` as a video of their own."""
    from hmr_trt.runtime.video import frames_from_video

    writer = None
    for index, frame in frames_from_video(src, first + n):
        if index < first:
            continue
        if writer is None:
            writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"MJPG"), 10, frame.shape[1::-1])
        writer.write(frame)
    writer.release()
    return dst


def test_sampled_frames_start_where_asked(sample_video) -> None:
    from hmr_trt.export.pipeline import CALIBRATION_START_FRAME

    assert CALIBRATION_START_FRAME == START
    assert [i for i, _ in sampled_frames(sample_video, start_frame=START)][:3] == [START, START + STRIDE,
                                                                                    START + 2 * STRIDE]
    parity = [i for i, _ in sampled_frames(sample_video)][:7]  # the 7 parity images of a scene model
    assert parity == [k * STRIDE for k in range(7)] and max(parity) < START


def test_scene_calibration_frames_are_letterboxed_frames_from_the_start_frame(sample_video) -> None:
    from hmr_trt.runtime.scene import letterbox

    data = images_from_videos(sample_video, _scene(), max_images=2, start_frame=START)
    assert list(data) == ["image"] and data["image"].shape == (2, 64, 64, 3) and data["image"].dtype == np.float32
    frames = dict(sampled_frames(sample_video, start_frame=START))
    for k, index in enumerate((START, START + STRIDE)):
        assert np.array_equal(data["image"][k], letterbox(frames[index], 64, bgr=True)[0])
    parity = letterboxed_frames(sample_video, 2, 64)
    assert not np.array_equal(parity, data["image"])


def test_frame_calibration_crops_are_people_normalised_like_the_parity_crops(sample_video) -> None:
    contract = registry.contract("decomr")
    data = images_from_videos(sample_video, contract, max_images=3, start_frame=START)
    crops = data["images"]
    assert crops.shape == (3, 3, 224, 224) and crops.dtype == np.float32
    from hmr_trt.runtime.crops import normalise_crops

    raw = [c for _, c in zip(range(3), iter_person_crops(sample_video, 224, contract.bbox_scale, start_frame=START))]
    assert np.array_equal(crops, normalise_crops(np.stack(raw)))
    assert abs(float(crops.mean())) < 1.5 and crops.std() > 0.3  # ImageNet-normalised, not 0-255
    assert not np.array_equal(person_crops(sample_video, 3, 224, contract.bbox_scale), crops)


def test_a_folder_of_videos_fills_up_from_each_in_turn(sample_video, tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    _clip(sample_video, folder / "a.avi", 0, 40)  # sampled: frames 0 and 37
    _clip(sample_video, folder / "b.avi", 100, 40)
    (folder / "notes.txt").write_text("not a video")
    data = images_from_videos(folder, _scene(), max_images=3)
    assert data["image"].shape == (3, 64, 64, 3)
    assert len(images_from_videos(folder, _scene(), max_images=10)["image"]) == 4  # all there is: 2 + 2


def test_bad_sources_and_families(sample_video, tmp_path: Path) -> None:
    with pytest.raises(InputSpecError, match="no calibration images: frames sampled from frame 5000 on"):
        images_from_videos(sample_video, _scene(), start_frame=5000)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputSpecError, match="no videos in this folder"):
        images_from_videos(tmp_path / "empty", _scene())
    with pytest.raises(InputSpecError, match="calibrates on feature windows"):
        images_from_videos(sample_video, registry.contract("coseg"))
    with pytest.raises(InputSpecError, match="parity needs 40"):
        letterboxed_frames(sample_video, 40, 64)
