"""Person crops for the backbone: square boxes at scale 1.2, 224x224, ImageNet normalisation.

numpy + OpenCV only (OpenCV imported where used), so it runs on a bare Python 3.9 GPU image.
"""

from __future__ import annotations

from typing import Any, Callable, ContextManager, List

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
CROP_SIZE = 224
BOX_SCALE = 1.2


def square_box(box: np.ndarray, scale: float = BOX_SCALE) -> np.ndarray:
    """(x1, y1, x2, y2) -> the square box of side ``scale * max(w, h)`` around the same centre."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = scale * max(x2 - x1, y2 - y1) / 2
    return np.array([cx - half, cy - half, cx + half, cy + half], dtype=np.float32)


def centre_box(height: int, width: int) -> np.ndarray:
    side = min(height, width)
    x1, y1 = (width - side) / 2, (height - side) / 2
    return np.array([x1, y1, x1 + side, y1 + side], dtype=np.float32)


def crop_from_frame(frame_bgr: np.ndarray, box: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Affine-warp the square ``box`` of a BGR frame to ``size x size`` (outside the frame: black).  # (H, W, 3) RGB uint8"""
    import cv2

    x1, y1, x2, y2 = (float(v) for v in box[:4])
    s = size / max(x2 - x1, 1e-6)
    warp = np.array([[s, 0.0, -x1 * s], [0.0, s, -y1 * s]], dtype=np.float32)
    crop = cv2.warpAffine(frame_bgr, warp, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return crop[:, :, ::-1]  # BGR -> RGB


def normalise_crops(crops_rgb: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) RGB -> float32 (N, 3, H, W) ImageNet-normalised backbone input."""
    x = crops_rgb.astype(np.float32) / 255.0
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def tile_boxes(height: int, width: int, n: int) -> list[np.ndarray]:
    """``n`` square boxes of half the frame height, stepping over a 3 x 2 grid of the frame."""
    side = height / 2
    xs = np.linspace(0, width - side, 3)
    ys = np.linspace(0, height - side, 2)
    grid = [np.array([x, y, x + side, y + side], dtype=np.float32) for y in ys for x in xs]
    return [grid[i % len(grid)] for i in range(n)]


class CropBatcher:
    """Crops of tracked people wait here until a batch is full; each full batch (and the rest at ``end``)
    is normalised (timed as "crop") and handed to ``_run(pending, images)``. Subclasses: the window
    family's backbone + streamer stage, the frame family's model stage."""

    def __init__(self, timer: Callable[[str], ContextManager[Any]], batch: int) -> None:
        self.timer, self.batch = timer, max(int(batch), 1)
        self.pending: List[tuple] = []  # (track_id, frame_index, crop uint8 (S, S, 3) RGB)
        self.results: List[Any] = []

    def add(self, track_id: Any, frame_index: int, crop: np.ndarray) -> None:
        self.pending.append((track_id, frame_index, crop))
        if len(self.pending) >= self.batch:
            self.run()

    def run(self) -> None:
        if not self.pending:
            return
        with self.timer("crop"):
            images = normalise_crops(np.stack([c for _, _, c in self.pending]))
        pending, self.pending = self.pending, []
        self._run(pending, images)

    def _run(self, pending: List[tuple], images: np.ndarray) -> None:
        raise NotImplementedError

    def end(self) -> None:
        self.run()
