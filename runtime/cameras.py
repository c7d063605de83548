"""Cameras between the crop and the original image, and 2D joints in frame pixels.

The networks predict SPIN / VIBE's weak-perspective camera ``(s, tx, ty)`` of the square crop
the backbone saw: a point (X, Y, Z) in metres lands at normalised crop coordinates
``x_n = s * (X + tx)``, ``y_n = s * (Y + ty)`` in [-1, 1] (y down). Tools of the field (VIBE's
renderer and Blender/FBX exporter, TCMR, MPS-Net and GLoT demos) draw with the same camera
re-expressed in the whole image, ``orig_cam = (sx, sy, tx', ty')``, for which
``u = (1 + sx * (X + tx')) / 2 * W`` and ``v = (1 + sy * (Y + ty')) / 2 * H``.

Given the crop square's centre ``(cx, cy)`` and side ``h`` in pixels, the two cameras put every
point at the same pixel when ``sx = s * h / W``, ``sy = s * h / H``,
``tx' = tx + (cx - W / 2) / (W / 2) / sx`` and ``ty' = ty + (cy - H / 2) / (H / 2) / sy``:
the conversion the peers' demos apply to their ``bboxes`` rows ``(cx, cy, h, h)``. Here ``h`` is
the side of the square the crop was cut from (detection box times the crop scale), so the
conversion is exact for the crops this runtime makes.

numpy only; Python 3.9-compatible.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import numpy as np

from hmr_trt.errors import InputSpecError


def _as_rows(name: str, value: np.ndarray, width: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != width:
        raise InputSpecError(f"cameras: '{name}' must be (N, {width}), got shape {arr.shape}")
    return arr


def image_space(cam: np.ndarray, boxes: np.ndarray, joints3d: np.ndarray, width: Optional[int],
                height: Optional[int]) -> Dict[str, np.ndarray]:
    """Per-frame results in the original image, for the track files and ``--format vibe``.

    ``boxes`` are the detection boxes (N, 4); the crops were cut from their ``square_box``
    (runtime/crops.py). Returns ``crop_boxes`` (N, 4) x1, y1, x2, y2, ``bboxes_cxcyh`` (N, 4),
    ``orig_cam`` (N, 4) and ``joints2d`` (N, J, 2) pixels; nothing when the image size is unknown
    (features given instead of a video).
    """
    from .crops import square_box

    if not width or not height:
        return {}
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    crop_boxes = np.stack([square_box(row) for row in b]) if len(b) else np.zeros((0, 4), np.float32)
    cxcyh = crop_box_cxcyh(crop_boxes)
    return {"crop_boxes": crop_boxes.astype(np.float32), "bboxes_cxcyh": cxcyh,
            "orig_cam": crop_cam_to_orig_cam(cam, cxcyh, int(width), int(height)),
            "joints2d": joints_to_pixels(joints3d, cam, crop_boxes)}


def crop_box_cxcyh(crop_boxes: np.ndarray) -> np.ndarray:
    """Square crop boxes (N, 4) ``x1, y1, x2, y2`` -> (N, 4) ``cx, cy, h, h`` (the peers' ``bboxes`` rows)."""
    b = _as_rows("crop_boxes", crop_boxes, 4)
    side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, side, side], axis=1).astype(np.float32)


def crop_cam_to_orig_cam(cam: np.ndarray, bboxes_cxcyh: np.ndarray, width: int, height: int,
                         dtype: Any = np.float32) -> np.ndarray:
    """(N, 3) crop cameras ``(s, tx, ty)`` and (N, >=3) boxes ``(cx, cy, h, ...)`` -> (N, 4) ``(sx, sy, tx, ty)``
    (computed in float64, returned as ``dtype``)."""
    if width < 1 or height < 1:
        raise InputSpecError(f"cameras: image size must be positive, got {width}x{height}")
    c = _as_rows("cam", cam, 3)
    b = np.asarray(bboxes_cxcyh, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] < 3 or len(b) != len(c):
        raise InputSpecError(f"cameras: boxes must be (N, 3 or 4) cx, cy, h with N = {len(c)}, got shape {b.shape}")
    cx, cy, h = b[:, 0], b[:, 1], b[:, 2]
    half_w, half_h = width / 2.0, height / 2.0
    sx = c[:, 0] * h / width
    sy = c[:, 0] * h / height
    with np.errstate(divide="ignore", invalid="ignore"):  # s = 0 (a degenerate prediction) gives inf, as theirs
        tx = c[:, 1] + (cx - half_w) / half_w / sx
        ty = c[:, 2] + (cy - half_h) / half_h / sy
    return np.stack([sx, sy, tx, ty], axis=1).astype(dtype)


def project_orig_cam(points: np.ndarray, orig_cam: Sequence[float], width: int, height: int) -> np.ndarray:
    """(..., 3) metres -> (..., 2) frame pixels through one image camera ``(sx, sy, tx, ty)``."""
    sx, sy, tx, ty = (float(v) for v in np.asarray(orig_cam, dtype=np.float64).reshape(-1)[:4])
    p = np.asarray(points, dtype=np.float64)
    u = (1.0 + sx * (p[..., 0] + tx)) / 2.0 * width
    v = (1.0 + sy * (p[..., 1] + ty)) / 2.0 * height
    return np.stack([u, v], axis=-1)


def joints_to_pixels(joints3d: np.ndarray, cam: np.ndarray, crop_boxes: np.ndarray) -> np.ndarray:
    """(N, J, 3) joints with (N, 3) crop cameras and (N, 4) square crop boxes -> (N, J, 2) frame pixels."""
    j = np.asarray(joints3d, dtype=np.float64)
    c = _as_rows("cam", cam, 3)
    b = _as_rows("crop_boxes", crop_boxes, 4)
    if j.ndim != 3 or j.shape[2] != 3 or len(j) != len(c) or len(b) != len(c):
        raise InputSpecError(f"cameras: joints3d must be (N, J, 3) with N = {len(c)} cameras and boxes, "
                             f"got {j.shape} and {b.shape}")
    s, tx, ty = c[:, 0:1], c[:, 1:2], c[:, 2:3]
    xn, yn = s * (j[..., 0] + tx), s * (j[..., 1] + ty)  # (N, J) in [-1, 1] of the crop
    u = b[:, 0:1] + (xn + 1) / 2 * (b[:, 2:3] - b[:, 0:1])
    v = b[:, 1:2] + (yn + 1) / 2 * (b[:, 3:4] - b[:, 1:2])
    return np.stack([u, v], axis=-1).astype(np.float32)


def perspective_cameras(cam: np.ndarray, bboxes_cxcyh: np.ndarray, width: int, height: int, focal_length: float,
                        crop: int) -> Dict[str, np.ndarray]:
    """HMR 2.0's perspective cameras from its crop camera ``cam = (s, tx, ty)``: the crop's translation
    ``cam_t = (tx, ty, 2 f / (S s))`` at focal length ``f`` for the ``S``-pixel crop (the official
    ``pred_cam_t``), and the whole image's as its demo renders it (``cam_crop_to_full``): focal length
    ``f / S * max(W, H)``, and for the crop square of side ``b`` centred at ``(cx, cy)`` the translation
    ``(tx + 2 (cx - W / 2) / (b s), ty + 2 (cy - H / 2) / (b s), 2 f_full / (b s))``.
    Returns ``cam_t`` (N, 3), ``cam_t_full`` (N, 3) and ``focal_length_px`` (N,)."""
    cam = _as_rows("cam", cam, 3)
    box = _as_rows("bboxes_cxcyh", bboxes_cxcyh, 4)
    n = len(cam)
    cam_t = np.stack([cam[:, 1], cam[:, 2], 2 * focal_length / (crop * cam[:, 0] + 1e-9)], axis=-1)
    bs = box[:, 2] * cam[:, 0] + 1e-9
    focal = np.full(n, focal_length / crop * max(int(width), int(height)))
    full = np.stack([2 * (box[:, 0] - width / 2.0) / bs + cam[:, 1],
                     2 * (box[:, 1] - height / 2.0) / bs + cam[:, 2],
                     2 * focal / bs], axis=-1)
    return {"cam_t": cam_t.astype(np.float32), "cam_t_full": full.astype(np.float32),
            "focal_length_px": focal.astype(np.float32)}
