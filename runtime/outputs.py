"""Result files: one ``.npz`` per track and ``summary.json``, each written atomically (temp + os.replace).

A track file holds, for its N frames (SMPL's 24 joints; J joints3d, V vertices from the body model):

=================  ===============  ===========================================================
key                shape / dtype    meaning
=================  ===============  ===========================================================
track_id           () str           the tracker's id
frame_indices      (N,) int64       video frame of each row
boxes              (N, 4) float32   detection box x1, y1, x2, y2 in frame pixels
pose_rotmat        (N, 24, 3, 3)    SMPL joint rotations (global orient first)
pose_axis_angle    (N, 72) float32  the same as SMPL's 72 axis-angle pose parameters
betas              (N, B) float32   shape coefficients (B = 10 for SMPL)
cam                (N, 3) float32   weak-perspective camera (s, tx, ty) of the square crop
joints3d           (N, J, 3)        3D joints, metres
vertices           (N, V, 3)        mesh vertices, metres (absent when not requested)
crop_boxes         (N, 4) float32   the square the crop was cut from (detection box x 1.2), x1, y1, x2, y2
bboxes_cxcyh       (N, 4) float32   the same square as the peers' ``bboxes`` (cx, cy, side, side)
orig_cam           (N, 4) float32   the camera in the original image (sx, sy, tx, ty), as VIBE's demo
joints2d           (N, J, 2)        ``joints3d`` projected to frame pixels (x, y)
                                    (the last four only for videos: runtime/cameras.py)
=================  ===============  ===========================================================
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from hmr_trt.errors import InputSpecError
from hmr_trt.fileio import atomic_write  # noqa: F401 - re-exported for writers here

PathLike = Union[str, Path]


def rotmat_to_axis_angle(rotmat: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> axis-angle vectors (..., 3) (angle in [0, pi] times unit axis).

    Accurate over the whole range: for angles up to 90 degrees from the skew-symmetric part with
    a series for theta / sin(theta) near 0; beyond, the axis comes from the symmetric part
    (R + R^T) / 2 - cos(theta) I = (1 - cos(theta)) a a^T, which stays well-conditioned at pi.
    """
    R = np.asarray(rotmat, dtype=np.float64)
    if R.shape[-2:] != (3, 3):
        raise InputSpecError(f"rotation matrices must be (..., 3, 3), got shape {R.shape}")
    lead = R.shape[:-2]
    R = R.reshape(-1, 3, 3)
    skew = np.stack([R[:, 2, 1] - R[:, 1, 2], R[:, 0, 2] - R[:, 2, 0], R[:, 1, 0] - R[:, 0, 1]], axis=1)  # 2 sin a
    sin = np.linalg.norm(skew, axis=1) / 2
    cos = np.clip((np.trace(R, axis1=1, axis2=2) - 1) / 2, -1.0, 1.0)
    angle = np.arctan2(sin, cos)
    out = np.empty_like(skew)

    small = cos >= 0  # angle <= 90 degrees: theta / sin(theta) is well-conditioned (series near 0)
    a2 = angle[small] ** 2
    ratio = np.where(sin[small] > 1e-4, angle[small] / np.maximum(sin[small], 1e-300), 1 + a2 / 6 + 7 * a2 ** 2 / 360)
    out[small] = skew[small] / 2 * ratio[:, None]

    large = ~small
    if large.any():
        sym = (R[large] + R[large].transpose(0, 2, 1)) / 2 - cos[large, None, None] * np.eye(3)
        outer = sym / (1 - cos[large])[:, None, None]  # a a^T
        diag = np.diagonal(outer, axis1=1, axis2=2)
        col = np.argmax(diag, axis=1)
        axis = outer[np.arange(len(col)), :, col] / np.sqrt(np.maximum(diag[np.arange(len(col)), col], 1e-300))[:, None]
        axis /= np.linalg.norm(axis, axis=1, keepdims=True)
        sign = np.where(np.einsum("ij,ij->i", axis, skew[large]) < 0, -1.0, 1.0)  # skew = 2 sin(theta) a
        out[large] = axis * (sign * angle[large])[:, None]
    return out.reshape(*lead, 3).astype(np.float32 if np.asarray(rotmat).dtype != np.float64 else np.float64)


def _rows(name: str, value: Any, n: int, tail: tuple, dtype: type = np.float32) -> np.ndarray:
    """``value`` as an (n, *tail) array; -1 in ``tail`` means any size."""
    arr = np.asarray(value, dtype=dtype)
    ok = arr.ndim == 1 + len(tail) and arr.shape[0] == n and all(t in (-1, s) for t, s in zip(tail, arr.shape[1:]))
    if not ok:
        want = "(" + ", ".join(["N"] + ["?" if t == -1 else str(t) for t in tail]) + ")"
        raise InputSpecError(f"track file: '{name}' must be {want} with N = {n}, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def write_track_npz(path: PathLike, track_id: Any, frames: np.ndarray, boxes: np.ndarray,
                    pose_rotmat: Optional[np.ndarray], betas: Optional[np.ndarray], cam: np.ndarray,
                    joints3d: Optional[np.ndarray], vertices: Optional[np.ndarray] = None,
                    extra: Optional[Dict[str, np.ndarray]] = None) -> Path:
    """Write one track's results (keys in the module docstring) to ``path`` atomically. Models that
    regress vertices directly (the frame family's DecoMR) have no ``pose_rotmat``/``betas``/``joints3d``:
    pass None and those keys are left out."""
    arrays = track_arrays(track_id, frames, boxes, pose_rotmat, betas, cam, joints3d, vertices, extra)
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def track_arrays(track_id: Any, frames: np.ndarray, boxes: np.ndarray, pose_rotmat: Optional[np.ndarray],
                 betas: Optional[np.ndarray], cam: np.ndarray, joints3d: Optional[np.ndarray],
                 vertices: Optional[np.ndarray] = None,
                 extra: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, np.ndarray]:
    """The arrays of one track file (checked shapes), as ``write_track_npz`` writes them."""
    frames = np.asarray(frames)
    if frames.ndim != 1 or len(frames) == 0:
        raise InputSpecError(f"track file: 'frames' must be a non-empty (N,) array, got shape {frames.shape}")
    n = len(frames)
    arrays = {
        "track_id": np.asarray(str(track_id)),
        "frame_indices": _rows("frames", frames, n, (), np.int64),
        "boxes": _rows("boxes", np.asarray(boxes)[:, :4] if np.ndim(boxes) == 2 else boxes, n, (4,)),
    }
    if pose_rotmat is not None:
        arrays["pose_rotmat"] = _rows("pose_rotmat", pose_rotmat, n, (24, 3, 3))
        arrays["pose_axis_angle"] = rotmat_to_axis_angle(arrays["pose_rotmat"]).reshape(n, 72).astype(np.float32)
    if betas is not None:
        arrays["betas"] = _rows("betas", betas, n, (-1,))
    arrays["cam"] = _rows("cam", cam, n, (3,))
    if joints3d is not None:
        arrays["joints3d"] = _rows("joints3d", joints3d, n, (-1, 3))
    if vertices is not None:
        arrays["vertices"] = _rows("vertices", vertices, n, (-1, 3))
    for key, value in (extra or {}).items():  # image-space results (runtime/cameras.py), N rows each
        arrays[key] = _rows(key, value, n, tuple(-1 for _ in np.shape(value)[1:]))
    return arrays


def write_people_npz(path: PathLike, image: str, people: Dict[str, np.ndarray]) -> Path:
    """``--image``: one image's people (P rows each, P >= 0, best first): ``image`` (the path), ``boxes``
    (P, 4), ``cam`` (P, 3), ``vertices`` (P, V, 3) and, where the model has them, ``scores``, ``pose_rotmat``,
    ``pose_axis_angle``, ``betas``, ``joints3d``, ``crop_boxes``, ``orig_cam``, ``joints2d``."""
    arrays = people_arrays(image, people)
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def people_arrays(image: str, people: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The arrays of one image file, as ``write_people_npz`` writes them (checked row counts)."""
    arrays = {"image": np.asarray(str(image))}
    n = len(people["boxes"])
    for key, value in people.items():
        arr = np.asarray(value)
        if arr.ndim == 0 or len(arr) != n:
            raise InputSpecError(f"image file: '{key}' must have {n} rows (one per person), got shape {arr.shape}")
        arrays[key] = np.ascontiguousarray(arr)
    if "pose_rotmat" in arrays:
        arrays["pose_axis_angle"] = rotmat_to_axis_angle(arrays["pose_rotmat"].astype(np.float32)).reshape(n, 72)
    return arrays


def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays, paths, tuples -> JSON types; NaN and infinities -> None (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise InputSpecError(f"summary: {type(value).__name__} value {value!r} is not JSON serialisable")


def summary_text(summary: Dict[str, Any]) -> bytes:
    """``summary`` as indented JSON (numpy values, paths converted; NaN -> null), UTF-8."""
    return (json.dumps(_jsonable(summary), indent=2, allow_nan=False) + "\n").encode("utf-8")


def write_summary_json(path: PathLike, summary: Dict[str, Any]) -> Path:
    """Write ``summary`` as indented JSON (numpy values, paths converted; NaN -> null) atomically."""
    text = summary_text(summary)
    return atomic_write(path, lambda f: f.write(text))
