"""Detector recall on hand-labelled frames: greedy one-to-one matching of boxes by IoU.

The labels (``tests/fixtures/vtest_people.json``) hold, per frame index, every person a human saw
in that frame of ``data/vtest.avi`` as ``x1, y1, x2, y2``. A detection matches the unmatched
label it overlaps most when their IoU is at least ``iou`` (0.4 by default: hand boxes are good to
a few pixels on people 60-150 px tall, and HOG's boxes are its window shrunk by fixed factors).
numpy only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Union

import numpy as np

from hmr_trt.errors import InputSpecError


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, >=4) and (M, >=4) boxes ``x1, y1, x2, y2`` -> (N, M) intersection over union."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, np.shape(a)[-1] if np.size(a) else 4)[:, :4]
    b = np.asarray(b, dtype=np.float64).reshape(-1, np.shape(b)[-1] if np.size(b) else 4)[:, :4]
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match(labels: np.ndarray, detections: np.ndarray, iou: float = 0.4) -> int:
    """How many labels a detection matches, each label and detection used once (best IoU first)."""
    overlap = iou_matrix(labels, detections)
    found = 0
    while overlap.size and overlap.max() >= iou:
        i, j = np.unravel_index(np.argmax(overlap), overlap.shape)
        found += 1
        overlap[i, :], overlap[:, j] = -1.0, -1.0
    return found


def read_labels(path: Union[str, Path]) -> Dict[int, np.ndarray]:
    """The hand labels: {frame index: (K, 4) boxes}."""
    try:
        data = json.loads(Path(path).read_text())
        frames = {int(k): np.asarray(v, dtype=np.float64).reshape(-1, 4) for k, v in data["frames"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputSpecError(f"cannot read detector labels from {path}: {exc}") from exc
    for index, boxes in frames.items():
        if ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any():
            raise InputSpecError(f"{path}: frame {index} has a box with x2 <= x1 or y2 <= y1")
    return frames


@dataclass
class DetectorScore:
    name: str
    labelled: int = 0
    found: int = 0
    detections: int = 0
    per_frame: Dict[int, List[int]] = field(default_factory=dict)  # frame -> [found, labelled, detections]
    ms_per_frame: float = float("nan")

    @property
    def recall(self) -> float:
        return self.found / self.labelled if self.labelled else float("nan")

    @property
    def unmatched_detections(self) -> int:
        return self.detections - self.found

    def as_dict(self) -> Dict[str, Any]:
        return {"detector": self.name, "recall": round(self.recall, 3), "found": self.found,
                "labelled": self.labelled, "unmatched_detections": self.unmatched_detections,
                "ms_per_frame": round(self.ms_per_frame, 1), "per_frame": self.per_frame}


def score_detector(name: str, detect: Callable[[np.ndarray], np.ndarray], frames: Dict[int, np.ndarray],
                   labels: Dict[int, np.ndarray], iou: float = 0.4, repeats: int = 3) -> DetectorScore:
    """Recall of ``detect`` on the labelled ``frames`` and its median time per frame over ``repeats`` passes."""
    score = DetectorScore(name)
    times: List[float] = []
    for index in sorted(labels):
        frame = frames[index]
        dets = detect(frame)
        for _ in range(repeats):
            start = time.perf_counter()
            detect(frame)
            times.append(time.perf_counter() - start)
        found = match(labels[index], dets, iou)
        score.labelled += len(labels[index])
        score.found += found
        score.detections += len(dets)
        score.per_frame[index] = [found, len(labels[index]), len(dets)]
    score.ms_per_frame = 1000 * float(np.median(times)) if times else float("nan")
    return score
