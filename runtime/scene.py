"""Scene-family post-processing on the host (numpy only, no torch): whole-image maps -> people.

A scene model (the instance-aware network) returns, for a padded square image, a center map
(B, 1, M, M), a raw camera map (B, 3, M, M) and a parameter map (B, P, M, M). Here:
1. peaks: non-maximum suppression by 5x5 max-pool equality, the top ``max_person`` (64) per image,
   kept when the score is above ``threshold`` (0.2 in the released eval configs);
2. the camera and parameter maps are sampled at each peak; camera scale ``s = 1.1 ** raw``,
   translation ``2 * (tx / s, ty / s, 1 / s)``;
3. SMPL parameters -> ``pose_rotmat`` (N, 24, 3, 3) and ``betas`` (N, 10) for the body_model graph;
4. with a body model, joints are projected orthographically to the padded input and mapped back
   through the padding to the original image: the person's box (for the tracker) is their extent.
``letterbox`` makes the padded input the way the released demo does (centered white padding to a
square, then a cubic resize) and returns the ``PadInfo`` that undoes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from hmr_trt.errors import ConfigError, InputSpecError

MAP_NAMES = ("center_map", "cam_map", "params_map")
PARAMS_RELEASED, PARAMS_PAPER = 79, 142
BodyModel = Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]  # {pose_rotmat, betas} -> {joints3d, ...}


@dataclass(frozen=True)
class PadInfo:
    """How an original image became the square network input: padded to ``padded`` x ``padded``
    (``top``/``left`` pixels added before the image), then resized to ``input_size``."""

    height: int
    width: int
    top: int
    left: int
    padded: int
    input_size: int = 512

    def to_original(self, points_norm: np.ndarray) -> np.ndarray:
        """Points in the input's normalised [-1, 1] coordinates (..., 2) (x, y) -> original pixels."""
        return (points_norm + 1.0) * self.padded / 2.0 - np.array([self.left, self.top], dtype=np.float64)


def check_threshold(threshold: float) -> float:
    if not isinstance(threshold, (int, float)) or not 0.0 < float(threshold) < 1.0:
        raise ConfigError(f"scene threshold must be in (0, 1) (released value 0.2), got {threshold!r}")
    return float(threshold)


def letterbox(image: np.ndarray, input_size: int = 512, bgr: bool = False) -> Tuple[np.ndarray, PadInfo]:
    """(H, W, 3) uint8 RGB (``bgr=True``: an OpenCV BGR frame, flipped to RGB first) ->
    ((input_size, input_size, 3) float32 RGB 0-255, PadInfo): centered white padding to a square, then a
    cubic resize (the released demo's preprocessing)."""
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise InputSpecError(f"scene input: expected an (H, W, 3) image, got shape {image.shape}")
    import cv2  # optional dependency, needed only to resize

    if bgr:
        image = image[:, :, ::-1]
    h, w = image.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    padded = np.full((side, side, 3), 255, dtype=image.dtype)
    padded[top:top + h, left:left + w] = image
    resized = cv2.resize(padded, (input_size, input_size), interpolation=cv2.INTER_CUBIC)
    return resized.astype(np.float32), PadInfo(h, w, top, left, side, input_size)


# --- peaks ----------------------------------------------------------------------------------------------

def max_pool_5x5(maps: np.ndarray, without_centre: bool = False) -> np.ndarray:
    """(B, M, M) -> (B, M, M) maximum over each 5x5 neighbourhood (borders padded with -inf); with
    ``without_centre`` the cell itself is left out (its neighbours' maximum)."""
    b, h, w = maps.shape
    padded = np.full((b, h + 4, w + 4), -np.inf, dtype=maps.dtype)
    padded[:, 2:-2, 2:-2] = maps
    out = np.full_like(maps, -np.inf)
    for dy in range(5):
        for dx in range(5):
            if not (without_centre and (dy, dx) == (2, 2)):
                np.maximum(out, padded[:, dy:dy + h, dx:dx + w], out=out)
    return out


def peaks(center_map: np.ndarray, threshold: float, max_person: int = 64) -> List[Tuple[np.ndarray, np.ndarray]]:
    """center_map (B, 1, M, M) -> per image (flat indices (n,), scores (n,)), best first."""
    threshold = check_threshold(threshold)
    if center_map.ndim != 4 or center_map.shape[1] != 1:
        raise InputSpecError(f"scene center_map: expected (B, 1, M, M), got {center_map.shape}")
    maps = center_map[:, 0].astype(np.float32)
    nms = np.where(max_pool_5x5(maps) == maps, maps, np.float32(0.0)).reshape(len(maps), -1)
    result = []
    for row in nms:
        k = min(max_person, row.size)
        top = np.argpartition(-row, k - 1)[:k]
        top = top[np.argsort(-row[top], kind="stable")]
        keep = top[row[top] > threshold]
        result.append((keep, row[keep]))
    return result


# --- rotations ------------------------------------------------------------------------------------------

def axis_angle_to_rotmat(aa: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle -> (..., 3, 3) (Rodrigues)."""
    aa = np.asarray(aa, dtype=np.float64)
    theta = np.linalg.norm(aa, axis=-1, keepdims=True)
    axis = aa / np.maximum(theta, 1e-12)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack((zero, -z, y, z, zero, -x, -y, x, zero), -1).reshape(aa.shape[:-1] + (3, 3))
    s, c = np.sin(theta)[..., None], np.cos(theta)[..., None]
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def rot6d_to_rotmat(x: np.ndarray) -> np.ndarray:
    """(..., 6) -> (..., 3, 3): the 6 numbers read as a 3x2 matrix, columns Gram-Schmidt'ed (SPIN/ROMP)."""
    m = np.asarray(x, dtype=np.float64).reshape(x.shape[:-1] + (3, 2))
    a1, a2 = m[..., 0], m[..., 1]
    b1 = a1 / np.maximum(np.linalg.norm(a1, axis=-1, keepdims=True), 1e-12)
    b2 = a2 - (b1 * a2).sum(-1, keepdims=True) * b1
    b2 = b2 / np.maximum(np.linalg.norm(b2, axis=-1, keepdims=True), 1e-12)
    return np.stack((b1, b2, np.cross(b1, b2)), -1)


def smpl_from_params(params: np.ndarray) -> Dict[str, np.ndarray]:
    """Sampled parameter rows (N, 79 or 142) -> pose_rotmat (N, 24, 3, 3) float32, betas (N, 10) float32.
    79: global_orient 6D, 21 body joints axis-angle, betas; 142: 22 joints 6D, betas. The two hand
    joints the network does not estimate are the identity."""
    n, p = params.shape
    if p == PARAMS_RELEASED:
        glob = rot6d_to_rotmat(params[:, :6])[:, None]
        body = axis_angle_to_rotmat(params[:, 6:69].reshape(n, 21, 3))
    elif p == PARAMS_PAPER:
        glob = rot6d_to_rotmat(params[:, :6])[:, None]
        body = rot6d_to_rotmat(params[:, 6:132].reshape(n, 21, 6))
    else:
        raise InputSpecError(f"scene params_map: expected {PARAMS_RELEASED} or {PARAMS_PAPER} channels, got {p}")
    hands = np.broadcast_to(np.eye(3), (n, 2, 3, 3))
    pose = np.concatenate((glob, body, hands), 1).astype(np.float32)
    return {"pose_rotmat": pose, "betas": np.ascontiguousarray(params[:, p - 10:], dtype=np.float32)}


# --- maps -> people -------------------------------------------------------------------------------------

def _as_maps(maps: Union[Mapping[str, np.ndarray], Sequence[np.ndarray]]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(maps, Mapping):
        missing = [n for n in MAP_NAMES if n not in maps]
        if missing:
            raise InputSpecError(f"scene maps: missing {', '.join(missing)}; got {', '.join(maps)}")
        center, cam, params = (np.asarray(maps[n]) for n in MAP_NAMES)
    else:
        center, cam, params = (np.asarray(m) for m in maps)
    b, _, h, w = center.shape
    if cam.shape != (b, 3, h, w) or params.ndim != 4 or params.shape[0] != b or params.shape[2:] != (h, w):
        raise InputSpecError(f"scene maps: shapes disagree: center {center.shape}, cam {cam.shape}, "
                             f"params {params.shape}; expected (B, 1, M, M), (B, 3, M, M), (B, P, M, M)")
    return center, cam, params


def people_from_maps(maps: Union[Mapping[str, np.ndarray], Sequence[np.ndarray]], threshold: float,
                     pad_info: Union[PadInfo, Sequence[Optional[PadInfo]], None] = None,
                     body_model: Optional[BodyModel] = None, max_person: int = 64) -> List[Dict[str, Any]]:
    """The maps of B images -> one dict per person, image by image, best score first:
    ``image`` (index in the batch), ``score``, ``center`` (x, y) in original pixels (map cells without
    ``pad_info``), ``pose_rotmat`` (24, 3, 3), ``betas`` (10,), ``cam`` (s, tx, ty), ``cam_trans``
    (x, y, z), ``cam_orig`` (the camera mapped to original pixels: scale in pixels per unit, tx, ty), and,
    when ``body_model`` is given, ``joints2d`` (J, 2) and ``box`` (x0, y0, x1, y1) in original pixels from
    the root-aligned joints (joint 0) projected with ``cam`` (else ``box`` is None).
    ``pad_info`` is one PadInfo for every image or one per image."""
    center, cam_map, params_map = _as_maps(maps)
    b, _, h, w = center.shape
    pads = list(pad_info) if isinstance(pad_info, (list, tuple)) else [pad_info] * b
    if len(pads) != b:
        raise InputSpecError(f"scene pad_info: {len(pads)} entries for a batch of {b} images")
    found = peaks(center, threshold, max_person)
    image_ids = np.concatenate([np.full(len(f), i, dtype=np.int64) for i, (f, _) in enumerate(found)])
    flat = np.concatenate([f for f, _ in found]).astype(np.int64)
    scores = np.concatenate([s for _, s in found])
    if len(flat) == 0:
        return []
    maps = np.concatenate((cam_map, params_map), 1).reshape(b, 3 + params_map.shape[1], h * w)
    sampled = maps[image_ids, :, flat].astype(np.float64)  # (N, 3 + P)
    scale = np.power(1.1, sampled[:, 0])
    cam = np.stack((scale, sampled[:, 1], sampled[:, 2]), 1)
    cam_trans = np.stack((cam[:, 1] / scale, cam[:, 2] / scale, 1.0 / scale), 1) * 2.0
    smpl = smpl_from_params(sampled[:, 3:])
    joints2d = None
    if body_model is not None:
        joints = np.asarray(body_model(smpl)["joints3d"], dtype=np.float64)
        joints = joints - joints[:, :1]  # root-aligned
        joints2d = joints[:, :, :2] * cam[:, None, :1] + cam[:, None, 1:]  # (N, J, 2) in [-1, 1] of the input
    people = []
    for n in range(len(flat)):
        pad = pads[image_ids[n]]
        y, x = divmod(int(flat[n]), w)
        center_norm = np.array([x, y], dtype=np.float64) / np.array([w, h]) * 2 - 1  # cell * input / M
        if pad is not None:
            center_xy = pad.to_original(center_norm)
            cam_orig = np.array([cam[n, 0] * pad.padded / 2.0, *pad.to_original(cam[n, 1:])])
        else:
            center_xy, cam_orig = np.array([x, y], dtype=np.float64), cam[n].copy()
        person: Dict[str, Any] = {
            "image": int(image_ids[n]), "score": float(scores[n]), "center": center_xy, "map_yx": (y, x),
            "pose_rotmat": smpl["pose_rotmat"][n], "betas": smpl["betas"][n], "cam": cam[n], "cam_trans": cam_trans[n],
            "cam_orig": cam_orig, "box": None,
        }
        if joints2d is not None:
            pts = pad.to_original(joints2d[n]) if pad is not None else joints2d[n]
            person["joints2d"] = pts
            person["box"] = np.concatenate((pts.min(0), pts.max(0)))
        people.append(person)
    return people


GRID_CELLS = 8  # parity: SMPL parameters sampled at an 8 x 8 grid of map cells per image


def grid_people(maps: Mapping[str, np.ndarray], cells: int = GRID_CELLS) -> Dict[str, np.ndarray]:
    """Parity's post-processing of the maps, independent of the center scores: the parameter map sampled
    at a fixed ``cells`` x ``cells`` grid of cells of every image -> pose_rotmat (B, K, 24, 3, 3),
    betas (B, K, 10) and cam (B, K, 3) (K = cells ** 2), through the same conversions as ``people_from_maps``."""
    center, cam_map, params_map = _as_maps(maps)
    b, _, h, w = center.shape
    ys = np.linspace(0, h - 1, min(cells, h)).round().astype(np.int64)
    xs = np.linspace(0, w - 1, min(cells, w)).round().astype(np.int64)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    cam = cam_map[:, :, yy.ravel(), xx.ravel()].transpose(0, 2, 1).astype(np.float64)  # (B, K, 3)
    params = params_map[:, :, yy.ravel(), xx.ravel()].transpose(0, 2, 1)  # (B, K, P)
    k = params.shape[1]
    smpl = smpl_from_params(params.reshape(b * k, -1).astype(np.float64))
    cam = np.concatenate((np.power(1.1, cam[..., :1]), cam[..., 1:]), -1).astype(np.float32)
    return {"pose_rotmat": smpl["pose_rotmat"].reshape(b, k, 24, 3, 3), "betas": smpl["betas"].reshape(b, k, -1),
            "cam": cam}
