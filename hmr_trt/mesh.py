"""The one mesh path: model outputs -> body model -> vertices/joints -> drift in mm (numpy, torch-free).

Used by parity (export/parity.py), the INT8 sensitivity sweep (calibration/quantize.py), the runtime
and the GPU tests. A ``BodyModel`` is any ``feed -> outputs`` callable over the contract's body-model
graph (``{"pose_rotmat": (N, J, 3, 3), "betas": (N, B)} -> {"vertices": (N, V, 3), "joints3d": (N, J', 3)}``):
an ONNX Runtime or TensorRT backend's ``infer``, or a torch body model wrapped by the caller.

Model outputs carry any leading axes: (W, T_out, ...) for window models (T_out = T for emit "all",
1 for emit "middle"), (N, ...) for frame models. Models whose contract says ``body_model: "none"``
output ``vertices`` (and ``joints3d``; without it the mesh centroid is the one "joint") themselves.
Scene models output maps: ``scene_people`` reads their SMPL parameters at a fixed grid of cells
(``runtime/scene.grid_people``: the same cells whatever the center scores) and at the top
``SCENE_PEAKS`` center-map peaks of every image (where the runtime reads its people: a peak that moves
one cell is a discrete decision, the contract's ``centers``); lead axes (B, 64 + SCENE_PEAKS).
Keypoint models (``body_model: "keypoints"``, ViTPose) have no mesh: their "vertices" are the keypoints
decoded from the ``heatmaps`` output (runtime/keypoints.py) in pixels of the model's crop, as (x, y, 0) in
units of ``KEYPOINT_UNIT`` so that every "mm" figure reads as crop pixels (``keypoint_points``).

For the GPU tests (torch-free)::

    from hmr_trt.mesh import meshes, mesh_drift
    verts, joints = meshes(body_backend.infer, temporal_outputs, manifest.model_contract())
    drift = mesh_drift(verts, joints, ref["vertices"], ref["joints3d"])  # mm
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import numpy as np

from .contract import ModelContract
from .errors import InputSpecError

Feed = Dict[str, np.ndarray]
BodyModel = Callable[[Feed], Feed]


def meshes(body: Optional[BodyModel], outputs: Feed, contract: Optional[ModelContract] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Model outputs (lead..., ...) -> vertices (lead..., V, 3) and joints (lead..., J, 3), in metres."""
    if contract is not None and contract.family == "scene" and "pose_rotmat" not in outputs:
        outputs = scene_people(outputs)
    if contract is not None and contract.body_model == "keypoints":
        points = keypoint_points(outputs["heatmaps"])
        return points, points
    if contract is not None and contract.body_model == "none":
        verts = outputs["vertices"]
        # models without joints (DecoMR): the mesh centroid stands in, so joint drift is still defined
        return verts, outputs.get("joints3d", verts.mean(axis=-2, keepdims=True))
    if body is None:
        raise InputSpecError("these outputs need the body-model graph (pose_rotmat, betas -> vertices), none was given")
    betas, pose = outputs["betas"], outputs["pose_rotmat"]
    lead = betas.shape[:-1]
    n = int(np.prod(lead)) if lead else 1
    out = body({"pose_rotmat": np.ascontiguousarray(pose.reshape(n, *pose.shape[len(lead):]), np.float32),
                "betas": np.ascontiguousarray(betas.reshape(n, betas.shape[-1]), np.float32)})
    return out["vertices"].reshape(*lead, -1, 3), out["joints3d"].reshape(*lead, -1, 3)


KEYPOINT_UNIT = 1e-3  # a crop pixel, as the metres the drift figures take: their "mm" read as crop pixels


def keypoint_points(heatmaps: np.ndarray, maxima: Optional[np.ndarray] = None) -> np.ndarray:
    """Heatmaps (N, K, H, W) -> keypoints (N, K, 3): (x, y) in crop pixels (the official decoding with the crop
    as the frame), 0, in units of ``KEYPOINT_UNIT``. ``maxima``: the integer cells to refine from (parity pins
    the reference's: ``runtime.keypoints.decode_heatmaps``)."""
    from hmr_trt.runtime.keypoints import decode_heatmaps

    hm = np.asarray(heatmaps)
    identity = np.broadcast_to(np.eye(2, 3, dtype=np.float32), (len(hm), 2, 3))
    xy = decode_heatmaps(hm, identity, maxima)[..., :2].astype(np.float64)
    return np.concatenate([xy, np.zeros_like(xy[..., :1])], axis=-1) * KEYPOINT_UNIT


SCENE_PEAKS = 4  # parity reads the people at the top 4 center-map peaks of every image (beside the grid)


def scene_peak_cells(center_map: np.ndarray, k: int = SCENE_PEAKS) -> np.ndarray:
    """center_map (B, 1, M, M) -> (B, k) flat cells of the k best local maxima (the runtime's 5x5 max-pool
    test), whatever their scores (no threshold: a fixed count per image), in ascending cell order."""
    from hmr_trt.runtime.scene import max_pool_5x5

    maps = np.asarray(center_map)[:, 0].astype(np.float32)
    b = len(maps)
    scores = np.where(max_pool_5x5(maps) == maps, maps, -np.inf).reshape(b, -1)
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.sort(best, axis=1)


def scene_people(maps: Feed, peaks: int = SCENE_PEAKS) -> Feed:
    """Scene maps -> SMPL parameters (pose_rotmat, betas, cam) with lead axes (B, 64 + peaks): the fixed
    8x8 grid of cells, then the top ``peaks`` center-map peaks (``scene_peak_cells``)."""
    from hmr_trt.runtime.scene import _as_maps, grid_people, smpl_from_params

    center, cam_map, params_map = _as_maps(maps)
    grid = grid_people(maps)
    if peaks < 1:
        return grid
    b, _, h, w = center.shape
    cells = scene_peak_cells(center, peaks)  # (B, K)
    rows = np.arange(b)[:, None]
    cam = cam_map.reshape(b, 3, h * w).transpose(0, 2, 1)[rows, cells].astype(np.float64)  # (B, K, 3)
    params = params_map.reshape(b, params_map.shape[1], h * w).transpose(0, 2, 1)[rows, cells]  # (B, K, P)
    smpl = smpl_from_params(params.reshape(b * peaks, -1).astype(np.float64))
    cam = np.concatenate((np.power(1.1, cam[..., :1]), cam[..., 1:]), -1).astype(np.float32)
    at_peaks = {"pose_rotmat": smpl["pose_rotmat"].reshape(b, peaks, 24, 3, 3),
                "betas": smpl["betas"].reshape(b, peaks, -1), "cam": cam}
    return {k: np.concatenate((grid[k], at_peaks[k]), axis=1) for k in grid}


def drift_mm(candidate: np.ndarray, reference: np.ndarray) -> Tuple[float, float]:
    """Mean and max Euclidean distance, in mm, between matching points (..., 3) in metres."""
    d = np.linalg.norm(candidate.astype(np.float64) - reference.astype(np.float64), axis=-1) * 1000.0
    return float(d.mean()), float(d.max())


def motion_spread_mm(vertices: np.ndarray) -> float:
    """How far vertices move across windows: mean over (frame, vertex) of the RMS distance to their
    mean position across windows (axis 0), in mm.  vertices: (W, ..., V, 3) metres."""
    v = vertices.astype(np.float64)
    rms = np.sqrt(((v - v.mean(axis=0, keepdims=True)) ** 2).sum(-1).mean(axis=0))
    return float(rms.mean() * 1000.0)


def mesh_drift(vertices: np.ndarray, joints: np.ndarray, ref_vertices: np.ndarray,
               ref_joints: np.ndarray) -> Dict[str, float]:
    """Mean/max vertex and joint drift in mm, and the reference's motion spread (mm)."""
    v_mean, v_max = drift_mm(vertices, ref_vertices)
    j_mean, j_max = drift_mm(joints, ref_joints)
    spread = motion_spread_mm(ref_vertices) if len(ref_vertices) > 1 else float("nan")
    return {"vertices_mean_mm": v_mean, "vertices_max_mm": v_max, "joints_mean_mm": j_mean,
            "joints_max_mm": j_max, "spread_mm": spread}


def outputs_drift(body: Optional[BodyModel], candidate: Feed, reference: Feed,
                  contract: Optional[ModelContract] = None) -> Dict[str, float]:
    """Model outputs of a candidate vs a reference, both through the same body model: drift in mm."""
    verts, joints = meshes(body, candidate, contract)
    ref_verts, ref_joints = meshes(body, reference, contract)
    return mesh_drift(verts, joints, ref_verts, ref_joints)
