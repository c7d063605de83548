"""Person crops for the backbone: square boxes at scale 1.2, 224x224, ImageNet normalisation.

The contract sets the geometry (``crop_size``, ``bbox_scale``); HMR 2.0 adds two steps of its demo's
``ViTDetDataset``: the box widened or heightened to a width:height ratio (``crop_aspect``, 192:256)
before the square of its longer side is taken, and a Gaussian blur of the frame before a crop that
downsamples by more than 2.2x (``crop_antialias``; such crops come back float32, values 0-255).

numpy + OpenCV only (OpenCV imported where used), so it runs on a bare Python 3.9 GPU image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ContextManager, List

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
CROP_SIZE = 224
BOX_SCALE = 1.2


def square_box(box: np.ndarray, scale: float = BOX_SCALE, aspect: float = 0.0) -> np.ndarray:
    """(x1, y1, x2, y2) -> the square box of side ``scale * max(w, h)`` around the same centre.

    ``aspect`` > 0 (width / height): the box is first widened or heightened to that ratio, so the side
    is ``scale * max(h, w / aspect)`` (HMR 2.0's ``expand_to_aspect_ratio``, computed in float32 as there)."""
    if aspect > 0:
        b = np.asarray(box[:4], dtype=np.float32)
        cx, cy = (b[2] + b[0]) / np.float32(2), (b[3] + b[1]) / np.float32(2)
        w, h = (b[2] - b[0]) / np.float32(200) * np.float32(200), (b[3] - b[1]) / np.float32(200) * np.float32(200)
        side = max(float(h), float(w) / aspect) if h / w >= 1 / aspect else max(float(w) / aspect, float(h))
        half = np.float32(scale * side) / np.float32(2)
        return np.array([cx - half, cy - half, cx + half, cy + half], dtype=np.float32)
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = scale * max(x2 - x1, y2 - y1) / 2
    return np.array([cx - half, cy - half, cx + half, cy + half], dtype=np.float32)


@dataclass(frozen=True)
class CropGeometry:
    """How a model's crops are cut from a detection box (from the export's contract)."""

    size: int = CROP_SIZE
    scale: float = BOX_SCALE
    aspect: float = 0.0  # > 0: widen/heighten the box to this width:height ratio first (HMR 2.0: 0.75)
    antialias: bool = False  # blur before downsampling over 2.2x (HMR 2.0), float32 crops then
    focal_length: float = 0.0  # > 0: the crop camera is perspective with this focal length at ``size``

    @classmethod
    def of(cls, contract: Any) -> CropGeometry:
        """The contract's crop geometry (224 and 1.2 for exports without one)."""
        if contract is None:
            return cls()
        return cls(int(contract.crop_size) or CROP_SIZE, float(contract.bbox_scale) or BOX_SCALE,
                   float(getattr(contract, "crop_aspect", 0.0) or 0.0),
                   bool(getattr(contract, "crop_antialias", False)), float(getattr(contract, "focal_length", 0.0)))

    def box(self, detection: np.ndarray) -> np.ndarray:
        """The square the crop is cut from (x1, y1, x2, y2)."""
        return square_box(np.asarray(detection), self.scale, self.aspect)

    def crop(self, frame_bgr: np.ndarray, square: np.ndarray) -> np.ndarray:
        """The crop of the square ``square`` (a ``box``): (S, S, 3) RGB, uint8 or float32 0-255."""
        return crop_from_frame(frame_bgr, square, self.size, self.antialias)

    @property
    def default_cameras(self) -> bool:
        """Whether the crops are the runtime's historical ones (square at 1.2, no aspect step)."""
        return self.scale == BOX_SCALE and not self.aspect


def centre_box(height: int, width: int) -> np.ndarray:
    side = min(height, width)
    x1, y1 = (width - side) / 2, (height - side) / 2
    return np.array([x1, y1, x1 + side, y1 + side], dtype=np.float32)


def crop_from_frame(frame_bgr: np.ndarray, box: np.ndarray, size: int = CROP_SIZE,
                    antialias: bool = False) -> np.ndarray:
    """Affine-warp the square ``box`` of a BGR frame to ``size x size`` (outside the frame: black).  # (H, W, 3) RGB uint8

    ``antialias``: when the box side is over 2.2 crop sides, the frame around the box is blurred first
    (Gaussian, sigma (side / size / 2 - 1) / 2, truncated at 4 sigma, edges replicated) and the crop
    is float32 (0-255), as HMR 2.0's demo crops."""
    import cv2

    x1, y1, x2, y2 = (float(v) for v in box[:4])
    side = max(x2 - x1, 1e-6)
    if antialias:
        factor = side / size / 2.0
        if factor > 1.1:
            return _blurred_crop(frame_bgr, box, size, (factor - 1) / 2)
        warp = _box_warp(box, size)
    else:
        s = size / side
        warp = np.array([[s, 0.0, -x1 * s], [0.0, s, -y1 * s]], dtype=np.float32)
    crop = cv2.warpAffine(frame_bgr, warp, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return crop[:, :, ::-1]  # BGR -> RGB


def _box_warp(box: np.ndarray, size: int) -> np.ndarray:
    """The affine map of the square ``box`` onto the ``size`` crop, from three float32 point pairs (centre,
    centre + half a side down, centre + half a side right) as HMR 2.0's crop computes it."""
    import cv2

    b = np.asarray(box[:4], dtype=np.float32)
    c = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2], dtype=np.float32)
    half = np.float32((float(b[2]) - float(b[0])) * 0.5)
    d = np.float32(size * 0.5)
    src = np.array([c, c + np.array([0, half], np.float32), c + np.array([half, 0], np.float32)], np.float32)
    dst = np.array([[d, d], [d, 2 * d], [2 * d, d]], np.float32)
    return cv2.getAffineTransform(src, dst)


def _blurred_crop(frame_bgr: np.ndarray, box: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """Blur only the part of the frame the warp reads (the box plus the kernel radius): the same values
    as blurring the whole frame, since every pixel read has its whole kernel inside that part."""
    import cv2

    height, width = frame_bgr.shape[:2]
    radius = int(4.0 * sigma + 0.5)
    margin = radius + 2
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    left, top = max(int(np.floor(x1)) - margin, 0), max(int(np.floor(y1)) - margin, 0)
    right, bottom = min(int(np.ceil(x2)) + margin, width), min(int(np.ceil(y2)) + margin, height)
    if right <= left or bottom <= top:  # the box lies outside the frame: black, as the warp would give
        return np.zeros((size, size, 3), np.float32)
    roi = frame_bgr[top:bottom, left:right].astype(np.float64)
    blurred = cv2.GaussianBlur(roi, (2 * radius + 1, 2 * radius + 1), sigmaX=sigma, sigmaY=sigma,
                               borderType=cv2.BORDER_REPLICATE)
    warp = _box_warp(box, size)
    warp[:, 2] += warp[:, :2] @ np.array([left, top], np.float64)  # ROI coordinates -> frame coordinates
    crop = cv2.warpAffine(blurred, warp, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return crop[:, :, ::-1].astype(np.float32)  # BGR -> RGB


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
