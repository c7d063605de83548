"""Parity maths in the task's unit, millimetres: numpy only, shared by export/, calibration/ and engines/.

Vertices and joints are in metres, shaped (..., 3); drifts are Euclidean distances between
matching points. ``mesh_drift`` runs the temporal outputs through a body-model runner and
reports mean/max vertex and joint drift against reference meshes.
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import numpy as np

# Written-down goals (mean vertex drift, mm) per precision.
GOALS_MM = {"fp32": 0.01, "fp16": 0.1, "int8": 0.4}

# runner(name, feed) -> outputs, name in {"temporal", "body_model"} (export/parity.py's Runner)
Runner = Callable[[str, Dict[str, np.ndarray]], Dict[str, np.ndarray]]


def drift_mm(candidate: np.ndarray, reference: np.ndarray) -> Tuple[float, float]:
    """Mean and max Euclidean distance, in mm, between matching points (..., 3) in metres."""
    d = np.linalg.norm(candidate.astype(np.float64) - reference.astype(np.float64), axis=-1) * 1000.0
    return float(d.mean()), float(d.max())


def motion_spread_mm(vertices: np.ndarray) -> float:
    """How far vertices move across windows: mean over (frame, vertex) of the RMS distance to their
    mean position across windows, in mm.  vertices: (W, T, V, 3) metres."""
    v = vertices.astype(np.float64)
    rms = np.sqrt(((v - v.mean(axis=0, keepdims=True)) ** 2).sum(-1).mean(axis=0))  # (T, V)
    return float(rms.mean() * 1000.0)


def meshes(body_model: Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]],
           outputs: Dict[str, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Temporal outputs (W, T, ...) -> vertices (W, T, V, 3) and joints (W, T, J, 3) via ``body_model(feed)``."""
    w, t = outputs["betas"].shape[:2]
    body = body_model({"pose_rotmat": outputs["pose_rotmat"].reshape(w * t, -1, 3, 3),
                       "betas": outputs["betas"].reshape(w * t, -1)})
    return body["vertices"].reshape(w, t, -1, 3), body["joints3d"].reshape(w, t, -1, 3)


def mesh_drift(vertices: np.ndarray, joints: np.ndarray, ref_vertices: np.ndarray,
               ref_joints: np.ndarray) -> Dict[str, float]:
    """Mean/max vertex and joint drift in mm, and the mean vertex drift over the motion spread."""
    v_mean, v_max = drift_mm(vertices, ref_vertices)
    j_mean, j_max = drift_mm(joints, ref_joints)
    spread = motion_spread_mm(ref_vertices) if len(ref_vertices) > 1 else float("nan")
    return {"vertices_mean_mm": v_mean, "vertices_max_mm": v_max, "joints_mean_mm": j_mean,
            "joints_max_mm": j_max, "spread_mm": spread}
