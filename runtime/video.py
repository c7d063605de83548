"""Decoding video files (OpenCV), tolerant of damaged files: what decodes is returned, losses counted.

Cameras and stream URLs: runtime/sources.py (which the run loop uses for files too)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from hmr_trt.errors import InputSpecError


@dataclass
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float
    frames_declared: int  # what the container says; 0 when unknown


def open_video(path: str | Path):  # -> (cv2.VideoCapture, VideoInfo)
    import cv2

    from .sources import check_video_file

    shown = str(path)
    path = Path(path)
    check_video_file(path, shown)  # missing, too long a name, a folder, a device (/dev/zero), empty: one line each
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputSpecError(f"cannot decode {path}: not a video OpenCV can read")
    info = VideoInfo(
        str(path),
        int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
        int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
        max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0),
    )
    if info.width <= 0 or info.height <= 0:
        cap.release()
        raise InputSpecError(f"cannot decode {path}: no video stream")
    return cap, info


def frames_from_video(path: str | Path, max_frames: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (index, BGR frame) for every frame that decodes, up to ``max_frames``."""
    cap, _ = open_video(path)
    try:
        index = 0
        while max_frames is None or index < max_frames:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            yield index, frame
            index += 1
    finally:
        cap.release()


def frames_at(path: str | Path, indices: set) -> dict:
    """{index: BGR frame} for the given frame indices (decoding stops after the last one); a video that ends
    before one of them: one line naming the missing indices."""
    wanted = set(indices)
    last = max(wanted, default=-1)
    frames = {i: f for i, f in frames_from_video(path, last + 1) if i in wanted}
    missing = sorted(wanted - set(frames))
    if missing:
        raise InputSpecError(f"{path}: the video has no frames {missing} (it ends earlier)")
    return frames
