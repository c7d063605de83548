"""Real-video parity inputs for the per-image families (adapters' ``video_inputs`` hooks).

``frame`` models (one crop per person): people found by the HOG detector on frames spread over the
video, cut as the runtime cuts them (square box at the contract's scale, ImageNet-normalised RGB).
``scene`` models (whole images): frames letterboxed as the runtime does (runtime/scene.letterbox).
Both read every ``stride``-th frame so that the set covers the video, not one instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from hmr_trt.errors import InputSpecError

STRIDE = 37  # frames between two sampled frames (vtest.avi: 795 frames -> up to 21 frames)


def _sampled_frames(video: Path, stride: int = STRIDE) -> Iterator[tuple[int, np.ndarray]]:
    from hmr_trt.runtime.video import frames_from_video

    for index, frame in frames_from_video(video):
        if index % stride == 0:
            yield index, frame


def person_crops(video: Path, n: int, crop: int = 224, scale: float = 1.2, per_frame: int = 2) -> np.ndarray:
    """(n, 3, crop, crop) float32: the ``per_frame`` best HOG detections of sampled frames, cropped."""
    from hmr_trt.runtime.crops import crop_from_frame, normalise_crops, square_box
    from hmr_trt.runtime.detect import HogPeopleDetector

    detector = HogPeopleDetector()
    crops = []
    for _, frame in _sampled_frames(video):
        for box in detector.detect(frame)[:per_frame]:
            crops.append(crop_from_frame(frame, square_box(box, scale), crop))
        if len(crops) >= n:
            break
    if len(crops) < n:
        raise InputSpecError(f"--video {video}: {len(crops)} people found, parity needs {n} crops; "
                             "give a video with people in it")
    return normalise_crops(np.stack(crops[:n]))


def letterboxed_frames(video: Path, n: int, size: int = 512) -> np.ndarray:
    """(n, size, size, 3) float32 RGB 0-255: sampled frames padded to a square and resized."""
    from hmr_trt.runtime.scene import letterbox

    images = [letterbox(frame, size, bgr=True)[0] for _, frame in _sampled_frames(video)][:n]
    if len(images) < n:
        raise InputSpecError(f"--video {video}: {len(images)} frames sampled, parity needs {n}")
    return np.stack(images)
