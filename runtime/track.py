"""Multi-person tracking by detection: ByteTrack from ``edgefirst-tracker`` behind a small wrapper.

``Tracker.update(frame_index, detections (N, 5)) -> [(track_id, box (5,)), ...]`` returns each
detection that belongs to a track, with the detection's own box (not the Kalman estimate) so the
crops follow what the detector saw. Track ids are small integers (1, 2, ...) in order of creation,
stable for a track's life; a track unmatched for more than ``max_age`` frames ends, and a person
seen again later gets a new id.

Why edgefirst-tracker (pinned 0.38.0): a maintained ByteTrack (Au-Zone's EdgeFirst HAL, Rust,
Apache-2.0, released monthly) whose only dependency is numpy, with abi3 wheels for CPython 3.8+ on
Linux x86_64/aarch64, macOS and Windows, so it runs on the bare Python 3.9 GPU images; it reports
per detection which track took it. It is imported lazily: only ``Tracker()`` needs it.

``TrackLog`` collects a video's tracks and ``TrackLog.tracks(min_length)`` drops the short ones
(detector flicker); peers (VIBE, TCMR) drop tracks shorter than 25 frames, hmr-trt by default 16.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np

from hmr_trt.errors import ConfigError, InputSpecError

TRACKER_PACKAGE = "edgefirst-tracker==0.38.0"
MIN_TRACK_LENGTH = 16  # frames: the one default (trt-run, RunOptions, TrackLog); one window of T = 16 (VIBE/TCMR use 25)
_NS_PER_FRAME = 1_000_000  # the tracker ages tracks by timestamp: one frame = 1 ms of its clock


def _bytetrack_class():
    try:
        from edgefirst.tracker import ByteTrack
    except ImportError as exc:
        raise ConfigError(f"tracking needs the ByteTrack tracker: pip install '{TRACKER_PACKAGE}'") from exc
    return ByteTrack


def check_detections(detections: np.ndarray) -> np.ndarray:
    """(N, 5) [x1, y1, x2, y2, score] -> contiguous float32; InputSpecError otherwise."""
    dets = np.asarray(detections)
    if dets.size == 0:
        return np.zeros((0, 5), dtype=np.float32)
    if dets.ndim != 2 or dets.shape[1] < 5:
        raise InputSpecError(f"detections must be (N, 5) [x1, y1, x2, y2, score], got shape {dets.shape}")
    dets = np.ascontiguousarray(dets[:, :5], dtype=np.float32)
    if not np.isfinite(dets).all():
        raise InputSpecError("detections contain NaN or infinite values")
    return dets


class Tracker:
    """ByteTrack over per-frame detections, with integer track ids.

    ``high_conf``: detections scoring at least this start tracks and take part in the first
    association pass; lower ones can only extend existing tracks (ByteTrack's second pass). The
    default 0.5 suits both HOG margins and probability-like ONNX detector scores.
    ``iou_threshold``: minimum IoU between a track's predicted box and a detection to match.
    ``max_age``: frames a track survives without a match (frame gaps in the input count).
    ``kalman_update``: the Kalman gain towards new detections (0-1).
    """

    def __init__(self, high_conf: float = 0.5, iou_threshold: float = 0.25, max_age: int = 15,
                 kalman_update: float = 0.25) -> None:
        if high_conf < 0 or not 0.0 < iou_threshold <= 1.0 or max_age < 0 or not 0.0 < kalman_update <= 1.0:
            raise ConfigError(f"tracker: need high_conf >= 0, 0 < iou_threshold <= 1, max_age >= 0, "
                              f"0 < kalman_update <= 1; got {high_conf}, {iou_threshold}, {max_age}, {kalman_update}")
        self.params = {"high_conf": float(high_conf), "iou": float(iou_threshold),
                       "update": float(kalman_update), "lifespan_ns": int(max_age) * _NS_PER_FRAME}
        self._bytetrack = _bytetrack_class()
        self.reset()

    def reset(self) -> None:
        """Forget every track (ids restart at 1)."""
        self._tracker = self._bytetrack(**self.params)
        self._ids: Dict[str, int] = {}
        self._last_frame = -1

    def update(self, frame_index: int, detections: np.ndarray) -> List[Tuple[int, np.ndarray]]:
        """One frame's detections -> [(track_id, box float32 (5,) [x1, y1, x2, y2, score])], by track id."""
        frame_index = int(frame_index)
        if frame_index <= self._last_frame:
            raise InputSpecError(f"tracker: frame indices must increase, got {frame_index} after {self._last_frame}")
        self._last_frame = frame_index
        dets = check_detections(detections)
        infos = self._tracker.update(np.ascontiguousarray(dets[:, :4]), np.ascontiguousarray(dets[:, 4]),
                                     np.zeros(len(dets), dtype=np.uint64), frame_index * _NS_PER_FRAME)
        out = [(self._id(info.uuid), dets[i].copy()) for i, info in enumerate(infos) if info is not None]
        return sorted(out, key=lambda item: item[0])

    def _id(self, uuid: str) -> int:
        if uuid not in self._ids:
            self._ids[uuid] = len(self._ids) + 1
        return self._ids[uuid]


@dataclass
class Track:
    """One track's frames and boxes, in frame order."""

    track_id: int
    frames: List[int] = field(default_factory=list)
    boxes: List[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)

    def arrays(self) -> Tuple[np.ndarray, np.ndarray]:
        """(frame indices int64 (N,), boxes float32 (N, box width))."""
        return np.asarray(self.frames, dtype=np.int64), np.stack(self.boxes).astype(np.float32)


class TrackLog:
    """Collects ``Tracker.update`` results over a video; ``tracks(min_length)`` drops short tracks."""

    def __init__(self) -> None:
        self._tracks: Dict[int, Track] = {}

    def add(self, frame_index: int, tracked: List[Tuple[int, np.ndarray]]) -> None:
        for track_id, box in tracked:
            track = self._tracks.setdefault(track_id, Track(track_id))
            track.frames.append(int(frame_index))
            track.boxes.append(np.asarray(box, dtype=np.float32))

    def __len__(self) -> int:
        return len(self._tracks)

    def tracks(self, min_length: int = MIN_TRACK_LENGTH) -> List[Track]:
        """The tracks of at least ``min_length`` frames, by id."""
        return filter_tracks(self._tracks.values(), min_length)


def filter_tracks(tracks, min_length: int = MIN_TRACK_LENGTH) -> List[Track]:
    """Tracks (anything with ``len`` and ``track_id``) of at least ``min_length`` frames, sorted by id."""
    if min_length < 1:
        raise ConfigError(f"minimum track length must be >= 1 frame, got {min_length}")
    return sorted((t for t in tracks if len(t) >= min_length), key=lambda t: t.track_id)
