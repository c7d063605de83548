"""A synthetic, SMPL-*format* body model for tests and demos.  It is NOT SMPL.

The SMPL body model may not be shipped with this project (licence), yet the export,
parity and runtime code all need a body model to run.  This module builds one from
scratch with numpy: a ~1.7 m tall figure in T-pose, y up, facing +z, left side at +x
(SMPL's conventions), made of capsule tubes around SMPL-like bones plus a capsule head.
It has exactly SMPL's array layout (``v_template``, ``f``, ``J_regressor``,
``kintree_table``, ``weights``, ``shapedirs`` [V, 3, 10], ``posedirs`` [V, 3, 207]) and
SMPL's 24-joint kinematic tree, so every code path that consumes SMPL can run on it.

Its geometry, skinning weights, shape space and pose correctives are invented; numbers
measured with it (vertex errors in millimetres, speed) say nothing about accuracy on
real SMPL.  Every file it writes carries the key ``synthetic_not_smpl`` so that
``hmr_trt.export.smpl_io.is_synthetic`` can refuse to make accuracy claims with it.

numpy only: no torch here.
"""

from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from hmr_trt.errors import ConfigError

from .smpl_io import (
    NUM_JOINTS,
    NUM_POSE_BASIS,
    SMPL_PARENTS,
    SYNTHETIC_MARKER_KEY,
    SYNTHETIC_MARKER_TEXT,
)

__all__ = ["make_synthetic_smpl", "write_synthetic_smpl"]

# Designed rest joints in metres (SMPL order), before the per-seed proportion jitter.
_BASE_JOINTS = np.array(
    [
        [0.000, 0.000, 0.000],  # 0 pelvis
        [0.085, -0.085, -0.005],  # 1 left_hip
        [-0.085, -0.085, -0.005],  # 2 right_hip
        [0.000, 0.110, -0.020],  # 3 spine1
        [0.100, -0.480, 0.005],  # 4 left_knee
        [-0.100, -0.480, 0.005],  # 5 right_knee
        [0.000, 0.240, -0.010],  # 6 spine2
        [0.095, -0.870, -0.035],  # 7 left_ankle
        [-0.095, -0.870, -0.035],  # 8 right_ankle
        [0.000, 0.300, 0.010],  # 9 spine3
        [0.110, -0.925, 0.085],  # 10 left_foot
        [-0.110, -0.925, 0.085],  # 11 right_foot
        [0.000, 0.510, -0.015],  # 12 neck
        [0.075, 0.420, -0.005],  # 13 left_collar
        [-0.075, 0.420, -0.005],  # 14 right_collar
        [0.000, 0.600, 0.030],  # 15 head
        [0.175, 0.450, -0.015],  # 16 left_shoulder
        [-0.175, 0.450, -0.015],  # 17 right_shoulder
        [0.430, 0.440, -0.030],  # 18 left_elbow
        [-0.430, 0.440, -0.030],  # 19 right_elbow
        [0.680, 0.445, -0.025],  # 20 left_wrist
        [-0.680, 0.445, -0.025],  # 21 right_wrist
        [0.765, 0.440, -0.035],  # 22 left_hand
        [-0.765, 0.440, -0.035],  # 23 right_hand
    ],
    dtype=np.float64,
)

# Where the leaf joints' bones end (for skinning weights): head top, toe tips, fingertips.
_LEAF_ENDS = {
    15: (0.000, 0.740, 0.025),
    10: (0.110, -0.930, 0.160),
    11: (-0.110, -0.930, 0.160),
    22: (0.870, 0.435, -0.035),
    23: (-0.870, 0.435, -0.035),
}

# Rough half-thickness (m) of the body around each bone, keyed by the bone's child joint
# (bone parent -> child) or, for the leaf joints' own bones, by the leaf joint (_LEAF_RADIUS).
_BONE_RADIUS = np.array(
    [0.00, 0.10, 0.10, 0.13, 0.075, 0.075, 0.13, 0.05, 0.05, 0.13, 0.04, 0.04,
     0.05, 0.09, 0.09, 0.05, 0.06, 0.06, 0.045, 0.045, 0.035, 0.035, 0.03, 0.03],
    dtype=np.float64,
)
_LEAF_RADIUS = {15: 0.05, 10: 0.035, 11: 0.035, 22: 0.025, 23: 0.025}

_X = (1.0, 0.0, 0.0)
_Y = (0.0, 1.0, 0.0)


class _Tube:
    """A capsule-like tube: an elliptic cross-section swept along a segment, closed by
    half-ellipsoid caps.  Radii follow a piecewise-linear profile along the segment."""

    def __init__(
        self,
        start: Sequence[float],
        end: Sequence[float],
        ref: Sequence[float],
        knots: Sequence[float],
        r_u: Sequence[float],
        r_v: Sequence[float],
        caps: Tuple[float, float],
        around: int,
    ) -> None:
        self.start = np.asarray(start, dtype=np.float64)
        self.end = np.asarray(end, dtype=np.float64)
        self.ref = np.asarray(ref, dtype=np.float64)
        self.knots = np.asarray(knots, dtype=np.float64)
        self.r_u = np.asarray(r_u, dtype=np.float64)
        self.r_v = np.asarray(r_v, dtype=np.float64)
        self.caps = caps
        self.around = around


def _design_tubes() -> List[_Tube]:
    """The body's tubes, in the un-jittered design frame."""
    tubes = [
        # torso: hips -> waist -> chest -> shoulders
        _Tube((0, -0.11, -0.005), (0, 0.50, -0.015), _X, (0, 0.2, 0.45, 0.75, 1.0),
              (0.15, 0.16, 0.14, 0.165, 0.11), (0.10, 0.105, 0.10, 0.11, 0.08), (0.05, 0.03), 22),
        # neck
        _Tube((0, 0.46, -0.015), (0, 0.60, 0.02), _X, (0, 1), (0.055, 0.05), (0.055, 0.05),
              (0.02, 0.02), 12),
        # head (a fat capsule: 0.56 .. 0.77 m)
        _Tube((0, 0.64, 0.025), (0, 0.69, 0.025), _X, (0, 1), (0.08, 0.08), (0.095, 0.095),
              (0.08, 0.08), 18),
    ]
    for s in (1.0, -1.0):
        tubes += [
            # thigh, shin, foot (heel -> toe tip)
            _Tube((s * 0.09, -0.06, 0.0), (s * 0.10, -0.48, 0.005), _X, (0, 0.5, 1),
                  (0.085, 0.068, 0.055), (0.08, 0.066, 0.055), (0.03, 0.03), 14),
            _Tube((s * 0.10, -0.48, 0.005), (s * 0.095, -0.87, -0.035), _X, (0, 0.3, 1),
                  (0.052, 0.05, 0.035), (0.052, 0.05, 0.035), (0.03, 0.02), 12),
            _Tube((s * 0.095, -0.905, -0.07), (s * 0.11, -0.93, 0.15), _X, (0, 1),
                  (0.04, 0.045), (0.035, 0.022), (0.02, 0.02), 12),
            # collar / shoulder bridge, upper arm, forearm, hand (flat: thin in y)
            _Tube((s * 0.02, 0.43, -0.015), (s * 0.19, 0.455, -0.015), _Y, (0, 1),
                  (0.055, 0.05), (0.06, 0.05), (0.02, 0.02), 12),
            _Tube((s * 0.15, 0.455, -0.015), (s * 0.43, 0.44, -0.03), _Y, (0, 1),
                  (0.05, 0.04), (0.05, 0.04), (0.03, 0.02), 12),
            _Tube((s * 0.43, 0.44, -0.03), (s * 0.68, 0.445, -0.025), _Y, (0, 1),
                  (0.038, 0.03), (0.04, 0.03), (0.02, 0.015), 12),
            _Tube((s * 0.68, 0.445, -0.025), (s * 0.87, 0.435, -0.035), _Y, (0, 0.4, 1),
                  (0.018, 0.015, 0.012), (0.03, 0.042, 0.035), (0.015, 0.03), 10),
        ]
    return tubes


def _tube_mesh(tube: _Tube, scale: np.ndarray, ring_step: float = 0.032, cap_rings: int = 4):
    """Vertices [n, 3], faces [m, 3] (local indices) and outward directions [n, 3] of a tube."""
    start, end = tube.start * scale, tube.end * scale
    axis = end - start
    length = float(np.linalg.norm(axis))
    a = axis / length
    u = tube.ref - np.dot(tube.ref, a) * a
    u /= np.linalg.norm(u)
    v = np.cross(a, u)
    mean_scale = float(np.mean(scale))
    n_body = max(2, int(np.ceil(length / ring_step)) + 1)
    theta = 2.0 * np.pi * np.arange(tube.around) / tube.around
    cos_t, sin_t = np.cos(theta), np.sin(theta)

    # (centre, r_u, r_v) of each ring from the start pole to the end pole
    rings: List[Tuple[np.ndarray, float, float]] = []
    ru0, rv0 = tube.r_u[0] * mean_scale, tube.r_v[0] * mean_scale
    ru1, rv1 = tube.r_u[-1] * mean_scale, tube.r_v[-1] * mean_scale
    cap0, cap1 = tube.caps[0] * mean_scale, tube.caps[1] * mean_scale
    for m in range(cap_rings - 1, 0, -1):
        phi = 0.5 * np.pi * m / cap_rings
        rings.append((start - cap0 * np.sin(phi) * a, ru0 * np.cos(phi), rv0 * np.cos(phi)))
    for t in np.linspace(0.0, 1.0, n_body):
        ru = float(np.interp(t, tube.knots, tube.r_u)) * mean_scale
        rv = float(np.interp(t, tube.knots, tube.r_v)) * mean_scale
        rings.append((start + t * axis, ru, rv))
    for m in range(1, cap_rings):
        phi = 0.5 * np.pi * m / cap_rings
        rings.append((end + cap1 * np.sin(phi) * a, ru1 * np.cos(phi), rv1 * np.cos(phi)))

    n = tube.around
    verts = [start - cap0 * a]
    outward = [-a]
    for centre, ru, rv in rings:
        ring = centre + ru * cos_t[:, None] * u + rv * sin_t[:, None] * v  # (n, 3)
        verts.extend(ring)
        # outward = the ellipse normal blended towards the pole direction on the caps
        radial = (rv * cos_t[:, None] * u + ru * sin_t[:, None] * v)
        radial /= np.linalg.norm(radial, axis=1, keepdims=True)
        along = float(np.dot(centre - start, a))
        if along < 0.0:
            tilt = -along / max(cap0, 1e-9)
        elif along > length:
            tilt = -(along - length) / max(cap1, 1e-9)
        else:
            tilt = 0.0
        d = radial * np.sqrt(max(1.0 - tilt * tilt, 0.0)) - tilt * a
        outward.extend(d / np.linalg.norm(d, axis=1, keepdims=True))
    verts.append(end + cap1 * a)
    outward.append(a)

    faces = []
    k = np.arange(n)
    k1 = (k + 1) % n
    first = 1
    faces.append(np.stack([np.zeros(n, dtype=np.int64), first + k1, first + k], axis=1))
    for r in range(len(rings) - 1):
        lo, hi = first + r * n, first + (r + 1) * n
        faces.append(np.stack([lo + k, lo + k1, hi + k1], axis=1))
        faces.append(np.stack([lo + k, hi + k1, hi + k], axis=1))
    last_ring = first + (len(rings) - 1) * n
    pole = last_ring + n
    faces.append(np.stack([last_ring + k, last_ring + k1, np.full(n, pole)], axis=1))
    verts_a = np.asarray(verts, dtype=np.float64)
    faces_a = np.concatenate(faces, axis=0)
    # make the winding outward (positive signed volume)
    tri = verts_a[faces_a]
    vol = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0
    if vol < 0:
        faces_a = faces_a[:, ::-1].copy()
    return verts_a, faces_a, np.asarray(outward, dtype=np.float64)


def _bone_segments(joints: np.ndarray, leaf_ends: np.ndarray) -> List[List[Tuple[np.ndarray, np.ndarray, float]]]:
    """For each joint, the bones its rotation moves: (start, end, body radius) to each child,
    or to the leaf end for the leaf joints."""
    segs: List[List[Tuple[np.ndarray, np.ndarray, float]]] = [[] for _ in range(NUM_JOINTS)]
    for child, parent in enumerate(SMPL_PARENTS):
        if parent >= 0:
            segs[parent].append((joints[parent], joints[child], float(_BONE_RADIUS[child])))
    for j, radius in _LEAF_RADIUS.items():
        segs[j].append((joints[j], leaf_ends[j], radius))
    return segs


def _distance_to_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1)


def _skinning_weights(verts: np.ndarray, joints: np.ndarray, leaf_ends: np.ndarray,
                      sigma: float = 0.02, top_k: int = 4) -> np.ndarray:
    """Smooth LBS weights from distances to the bones, at most ``top_k`` bones per vertex."""
    segs = _bone_segments(joints, leaf_ends)
    score = np.empty((verts.shape[0], NUM_JOINTS))  # (V, 24)
    for j, seg_list in enumerate(segs):
        # distance to the body surface around the joint's bones (negative inside)
        score[:, j] = np.min(np.stack([_distance_to_segment(verts, a, b) - r for a, b, r in seg_list]), axis=0)
    rel = score - score.min(axis=1, keepdims=True)
    w = np.exp(-0.5 * (rel / sigma) ** 2)
    # keep the top_k bones of each vertex
    order = np.argsort(-w, axis=1)
    mask = np.zeros_like(w, dtype=bool)
    np.put_along_axis(mask, order[:, :top_k], True, axis=1)
    w = np.where(mask, w, 0.0)
    w[w < 1e-4] = 0.0
    return w / w.sum(axis=1, keepdims=True)


def _convex_weights_hitting(points: np.ndarray, base: np.ndarray, target: np.ndarray):
    """Convex weights close to ``base`` whose weighted mean of ``points`` is ``target``.

    Exponential tilting w_i ~ base_i * exp(lam . (p_i - target)), with lam found by Newton's
    method on the (convex) log-partition function.  Returns None when the target lies
    outside the points' convex hull (the iteration then does not converge)."""
    diff = points - target  # (K, 3)
    lam = np.zeros(3)
    log_base = np.log(base)
    for _ in range(100):
        logits = log_base + diff @ lam
        w = np.exp(logits - logits.max())
        w /= w.sum()
        grad = w @ diff  # (3,)
        if np.linalg.norm(grad) < 1e-9:
            return w
        cov = (diff * w[:, None]).T @ diff - np.outer(grad, grad) + 1e-12 * np.eye(3)
        step = np.linalg.solve(cov, grad)
        # damped Newton: backtrack on the objective log sum exp
        obj = np.log(np.sum(np.exp(logits - logits.max()))) + logits.max()
        t = 1.0
        while t > 1e-6:
            cand = log_base + diff @ (lam - t * step)
            cand_obj = np.log(np.sum(np.exp(cand - cand.max()))) + cand.max()
            if cand_obj <= obj:
                break
            t *= 0.5
        lam = lam - t * step
    return None


def _joint_regressor(verts: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """[24, V]: each joint a convex combination of the vertices nearest it, hitting the joint."""
    reg = np.zeros((NUM_JOINTS, verts.shape[0]))
    for j in range(NUM_JOINTS):
        dist = np.linalg.norm(verts - joints[j], axis=1)
        order = np.argsort(dist, kind="stable")
        for k in (24, 48, 96, 192, 384):
            idx = order[:k]
            base = np.exp(-0.5 * (dist[idx] / max(float(dist[idx].max()), 1e-6)) ** 2)
            w = _convex_weights_hitting(verts[idx], base / base.sum(), joints[j])
            if w is not None:
                break
        else:  # pragma: no cover - the designed joints all lie inside their tubes
            w = base / base.sum()
        reg[j, idx] = w
    return reg


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _shape_directions(verts: np.ndarray, outward: np.ndarray, weights: np.ndarray,
                      joints: np.ndarray, amp: np.ndarray) -> np.ndarray:
    """[V, 3, 10] smooth shape directions, a few cm per unit beta."""
    x, y = verts[:, 0], verts[:, 1]
    zeros = np.zeros_like(x)
    dirs = np.zeros((verts.shape[0], 3, 10))
    side = np.tanh(x / 0.04)
    # 0: overall size (scale about the pelvis)
    dirs[:, :, 0] = 0.03 * (verts - joints[0])
    # 1: girth, more on the torso
    torso_w = weights[:, [0, 3, 6, 9]].sum(axis=1)
    dirs[:, :, 1] = 0.015 * outward * (1.0 + torso_w)[:, None]
    # 2: leg length (everything below the hips moves down)
    hip_y, ankle_y = joints[1, 1], joints[7, 1]
    leg = np.clip((hip_y + 0.02 - y) / (hip_y - ankle_y), 0.0, 1.2)
    dirs[:, :, 2] = np.stack([zeros, -0.04 * leg, zeros], axis=1)
    # 3: arm length
    arm = np.clip((np.abs(x) - joints[16, 0]) / 0.6, 0.0, 1.0) * _smoothstep(y, 0.25, 0.35)
    dirs[:, :, 3] = np.stack([0.035 * side * arm, zeros, zeros], axis=1)
    # 4: shoulder width
    sh = _smoothstep(np.abs(x), 0.03, 0.2) * _smoothstep(y, 0.25, 0.4)
    dirs[:, :, 4] = np.stack([0.025 * side * sh, zeros, zeros], axis=1)
    # 5: belly (front of the lower torso pushes forward)
    belly = np.clip(outward[:, 2], 0.0, None) * np.exp(-(((y - 0.12) / 0.12) ** 2)) * torso_w
    dirs[:, :, 5] = 0.03 * belly[:, None] * outward
    # 6: hip width (legs and hips move sideways)
    hip = np.where(y < -0.1, 1.0, np.exp(-(((y + 0.1) / 0.1) ** 2)))
    dirs[:, :, 6] = np.stack([0.02 * np.tanh(x / 0.05) * hip, zeros, zeros], axis=1)
    # 7: torso length (everything above the pelvis moves up, up to 3 cm)
    dirs[:, :, 7] = np.stack([zeros, 0.03 * np.clip(y / 0.5, 0.0, 1.0), zeros], axis=1)
    # 8: head size (scale the head about its centre)
    head_c = joints[15] + np.array([0.0, 0.065, -0.005])
    head = _smoothstep(y, joints[12, 1] + 0.03, joints[15, 1])
    dirs[:, :, 8] = 0.2 * head[:, None] * (verts - head_c)
    # 9: limb girth (arms and legs only)
    limb_w = weights[:, [1, 2, 4, 5, 16, 17, 18, 19, 20, 21]].sum(axis=1)
    dirs[:, :, 9] = 0.012 * outward * limb_w[:, None]
    return dirs * amp[None, None, :]


def _pose_directions(verts: np.ndarray, outward: np.ndarray, joints: np.ndarray,
                     rng: np.random.Generator, sigma: float = 0.05) -> np.ndarray:
    """[V, 3, 207] small smooth pose correctives (mm per unit of R - I), local to each joint."""
    num_v = verts.shape[0]
    posedirs = np.zeros((num_v, 3, NUM_POSE_BASIS))
    basis = np.concatenate([outward[:, None, :], np.broadcast_to(np.eye(3), (num_v, 3, 3))], axis=1)
    for k in range(1, NUM_JOINTS):
        g = np.exp(-0.5 * np.sum((verts - joints[k]) ** 2, axis=1) / sigma**2)  # (V,)
        g[g < 1e-3] = 0.0
        coeff = rng.normal(size=(9, 4)) * np.array([0.002, 0.001, 0.001, 0.001])  # (9, 4)
        offs = np.einsum("ec,vcd->vde", coeff, basis)  # (V, 3, 9)
        posedirs[:, :, (k - 1) * 9:k * 9] = g[:, None, None] * offs
    return posedirs


def make_synthetic_smpl(seed: int = 0, num_betas: int = 10) -> Dict[str, np.ndarray]:
    """Build the synthetic body model (NOT SMPL) as SMPL-format arrays.

    Args:
        seed: picks small proportion jitter (height, width, depth within a few percent),
            shape-direction amplitudes and the pose correctives; the same seed gives
            bit-identical arrays.
        num_betas: number of shape directions; only 10 exist.

    Returns a dict: ``v_template`` [V, 3] float32, ``f`` [F, 3] uint32, ``J_regressor``
    [24, V] float32 (dense), ``kintree_table`` [2, 24] int64 (root parent 4294967295 as in
    SMPL), ``weights`` [V, 24] float32, ``shapedirs`` [V, 3, 10] float32, ``posedirs``
    [V, 3, 207] float32 and the marker ``synthetic_not_smpl`` (a string array).
    """
    if num_betas != 10:
        raise ConfigError(f"synthetic body model: num_betas={num_betas}; only 10 shape directions exist")
    rng = np.random.default_rng(seed)
    scale = np.array([rng.uniform(0.96, 1.04), rng.uniform(0.97, 1.03), rng.uniform(0.96, 1.04)])
    joints = _BASE_JOINTS * scale  # (24, 3)
    leaf_ends = np.zeros((NUM_JOINTS, 3))
    for j, end in _LEAF_ENDS.items():
        leaf_ends[j] = np.asarray(end) * scale

    verts_l, faces_l, out_l = [], [], []
    offset = 0
    for tube in _design_tubes():
        tv, tf, to = _tube_mesh(tube, scale)
        verts_l.append(tv)
        faces_l.append(tf + offset)
        out_l.append(to)
        offset += tv.shape[0]
    verts = np.concatenate(verts_l)  # (V, 3)
    faces = np.concatenate(faces_l)  # (F, 3)
    outward = np.concatenate(out_l)  # (V, 3)

    weights = _skinning_weights(verts, joints, leaf_ends)  # (V, 24)
    j_regressor = _joint_regressor(verts, joints)  # (24, V)
    amp = rng.uniform(0.8, 1.2, size=10)
    shapedirs = _shape_directions(verts, outward, weights, joints, amp)  # (V, 3, 10)
    posedirs = _pose_directions(verts, outward, joints, rng)  # (V, 3, 207)

    kintree = np.zeros((2, NUM_JOINTS), dtype=np.int64)
    kintree[0] = [p if p >= 0 else 4294967295 for p in SMPL_PARENTS]
    kintree[1] = np.arange(NUM_JOINTS)
    return {
        "v_template": verts.astype(np.float32),
        "f": faces.astype(np.uint32),
        "J_regressor": j_regressor.astype(np.float32),
        "kintree_table": kintree,
        "weights": weights.astype(np.float32),
        "shapedirs": shapedirs.astype(np.float32),
        "posedirs": posedirs.astype(np.float32),
        SYNTHETIC_MARKER_KEY: np.array(SYNTHETIC_MARKER_TEXT),
    }


def write_synthetic_smpl(path: str | os.PathLike, seed: int = 0) -> str:
    """Write the synthetic body model (NOT SMPL) to ``path`` (an ``.npz``); returns the path."""
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ConfigError(f"synthetic body model: output path {path!r} must end in .npz")
    data = make_synthetic_smpl(seed=seed)
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **data)
    return path
