"""Model inputs of the per-image families cut from real video frames: export parity sets and INT8 calibration.

``frame`` models (one crop per person): people found by the HOG detector on frames spread over the
video, cut as the runtime cuts them (square box at the contract's scale, ImageNet-normalised RGB).
``scene`` models (whole images): frames letterboxed as the runtime does (runtime/scene.letterbox).
Both read every ``stride``-th frame from ``start_frame`` on, so that a set covers the video, not one
instant. The export's "video" parity set starts at frame 0 (``person_crops``, ``letterboxed_frames``,
through the adapters' ``video_inputs``); INT8 calibration (``images_from_videos``) starts further on
(export/pipeline.py's ``CALIBRATION_START_FRAME``) so that the two do not share frames.
torch-free: numpy and OpenCV.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from hmr_trt.contract import ModelContract
from hmr_trt.errors import InputSpecError

from .windows import VIDEO_SUFFIXES, _files

STRIDE = 37  # frames between two sampled frames (vtest.avi: 795 frames -> up to 21 frames)
CALIBRATION_IMAGES = {"frame": 16, "scene": 8}  # INT8 calibration images by default: crops, whole frames
PathLike = Union[str, Path]


def sampled_frames(video: PathLike, stride: int = STRIDE, start_frame: int = 0) -> Iterator[Tuple[int, np.ndarray]]:
    """(index, BGR frame) for frames ``start_frame``, ``start_frame + stride``, ... of ``video``."""
    from hmr_trt.runtime.video import frames_from_video

    for index, frame in frames_from_video(video):
        if index >= start_frame and (index - start_frame) % stride == 0:
            yield index, frame


def iter_person_crops(video: PathLike, crop: int = 224, scale: float = 1.2, per_frame: int = 2,
                      start_frame: int = 0, aspect: float = 0.0, antialias: bool = False) -> Iterator[np.ndarray]:
    """(crop, crop, 3) RGB crops of the ``per_frame`` best HOG detections of each sampled frame (uint8; float32
    0-255 where ``antialias`` blurred; ``aspect``, ``antialias``: the contract's ``crop_aspect``/``crop_antialias``)."""
    from hmr_trt.runtime.crops import crop_from_frame, square_box
    from hmr_trt.runtime.detect import HogPeopleDetector

    detector = HogPeopleDetector()
    for _, frame in sampled_frames(video, start_frame=start_frame):
        for box in detector.detect(frame)[:per_frame]:
            yield crop_from_frame(frame, square_box(box, scale, aspect), crop, antialias)


def iter_topdown_crops(video: PathLike, per_frame: int = 2, start_frame: int = 0) -> Iterator[np.ndarray]:
    """Keypoint models (contract ``body_model: "keypoints"``, ViTPose): (3, 256, 192) float32 normalised crops of the
    ``per_frame`` best HOG detections of each sampled frame, cut as runtime/keypoints.py cuts them."""
    from hmr_trt.runtime.detect import HogPeopleDetector
    from hmr_trt.runtime.keypoints import topdown_crop

    detector = HogPeopleDetector()
    for _, frame in sampled_frames(video, start_frame=start_frame):
        for box in detector.detect(frame)[:per_frame]:
            yield topdown_crop(frame, box)[0]


def iter_letterboxed(video: PathLike, size: int = 512, start_frame: int = 0) -> Iterator[np.ndarray]:
    """(size, size, 3) float32 RGB 0-255 sampled frames, padded to a square and resized."""
    from hmr_trt.runtime.scene import letterbox

    for _, frame in sampled_frames(video, start_frame=start_frame):
        yield letterbox(frame, size, bgr=True)[0]


def person_crops(video: Path, n: int, crop: int = 224, scale: float = 1.2, per_frame: int = 2,
                 start_frame: int = 0, aspect: float = 0.0, antialias: bool = False) -> np.ndarray:
    """(n, 3, crop, crop) float32 ImageNet-normalised crops of people in ``video`` (parity: exactly ``n``)."""
    from hmr_trt.runtime.crops import normalise_crops

    crops = _take(iter_person_crops(video, crop, scale, per_frame, start_frame, aspect, antialias), n)
    if len(crops) < n:
        raise InputSpecError(f"--video {video}: {len(crops)} people found, parity needs {n} crops; "
                             "give a video with people in it")
    return normalise_crops(np.stack(crops))


def letterboxed_frames(video: Path, n: int, size: int = 512, start_frame: int = 0) -> np.ndarray:
    """(n, size, size, 3) float32 RGB 0-255: sampled frames padded to a square and resized (exactly ``n``)."""
    images = _take(iter_letterboxed(video, size, start_frame), n)
    if len(images) < n:
        raise InputSpecError(f"--video {video}: {len(images)} frames sampled, parity needs {n}")
    return np.stack(images)


def images_from_videos(source: Union[PathLike, Sequence[PathLike]], contract: ModelContract,
                       max_images: Optional[int] = None, start_frame: int = 0) -> Dict[str, np.ndarray]:
    """INT8 calibration inputs of a frame or scene model: {model input name: (N, ...) float32}, N <= ``max_images``
    (default: ``CALIBRATION_IMAGES`` of the family).

    ``source``: a video, a folder of videos or a list of them; each contributes sampled frames from
    ``start_frame`` on until ``max_images`` are collected. Frame models get crops of the people found
    (``contract.crop_size``, ``contract.bbox_scale``), scene models whole letterboxed frames
    (``contract.image_size``). At least one image is needed.
    """
    if contract.family not in ("frame", "scene"):
        raise InputSpecError(f"model {contract.name}: images_from_videos is for frame and scene models; "
                             f"a {contract.family} model calibrates on feature windows (calibration/windows.py)")
    max_images = CALIBRATION_IMAGES[contract.family] if max_images is None else max_images
    if max_images < 1:
        raise InputSpecError(f"max_images must be >= 1, got {max_images}")
    graph = contract.model_graph
    if len(graph.inputs) != 1:
        raise InputSpecError(f"model {contract.name}: calibration from videos feeds one input; the graph has "
                             f"{', '.join(graph.input_names)}")
    images: List[np.ndarray] = []
    seen = []
    for path in _files(source, VIDEO_SUFFIXES, "videos"):
        if contract.body_model == "keypoints":
            got = _take(iter_topdown_crops(path, start_frame=start_frame), max_images - len(images))
        elif contract.family == "frame":
            got = _take(iter_person_crops(path, contract.crop_size, contract.bbox_scale, start_frame=start_frame,
                                          aspect=contract.crop_aspect, antialias=contract.crop_antialias),
                        max_images - len(images))
        else:
            got = _take(iter_letterboxed(path, contract.image_size, start_frame), max_images - len(images))
        images.extend(got)
        seen.append(f"{path.name}: {len(got)}")
        if len(images) >= max_images:
            break
    if not images:
        what = "people found" if contract.family == "frame" else "frames sampled"
        raise InputSpecError(f"no calibration images: {what} from frame {start_frame} on (every {STRIDE}th frame): "
                             f"{', '.join(seen)}")
    if contract.body_model == "keypoints":  # normalised already
        batch = np.stack(images)
    elif contract.family == "frame":
        from hmr_trt.runtime.crops import normalise_crops

        batch = normalise_crops(np.stack(images))
    else:
        batch = np.stack(images)
    return {graph.input_names[0]: np.ascontiguousarray(batch, dtype=np.float32)}


def _take(items: Iterator[np.ndarray], n: int) -> List[np.ndarray]:
    """The first ``n`` items (stops pulling once it has them: each pull may decode and detect)."""
    out: List[np.ndarray] = []
    if n < 1:
        return out
    for item in items:
        out.append(item)
        if len(out) >= n:
            break
    return out
