"""SMPL linear blend skinning in two forms: the smplx reference and an export-friendly module.

* ``SMPLReference`` runs the ``smplx`` package's ``SMPL`` layer (the de-facto reference
  implementation) on a loaded body-model dict, with rotation-matrix input.
* ``ExportableSMPL`` is the same maths written for ONNX / TensorRT: only MatMul,
  elementwise ops, reshapes, slices and concatenations.  No einsum, no scatter, no
  data-dependent indexing; the 24-joint kinematic chain is unrolled at trace time from the
  (constant) parents list, and every model array is a constant buffer.  Any leading batch
  size works, so the exported graph can have a dynamic batch axis.

Both take ``pose_rotmat`` (N, 24, 3, 3) (joint 0 = global orientation, then SMPL's 23 body
joints, parent-relative rotations) and ``betas`` (N, 10), and return ``vertices`` (N, V, 3)
and ``joints`` (N, 24, 3) in metres, without translation.

Body-model files are read by ``hmr_trt.export.smpl_io`` (no chumpy, no unsafe unpickling).
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn

from hmr_trt.errors import CheckpointError, InputSpecError

from .smpl_io import (
    NUM_JOINTS,
    NUM_POSE_BASIS,
    kinematic_parents,
    load_body_model_data,
    normalize_body_model_data,
)

__all__ = ["ExportableSMPL", "SMPLReference", "body_model_from_file", "landmark_vertex_ids"]

SMPL_NUM_VERTICES = 6890


def _check_inputs(pose_rotmat: torch.Tensor, betas: torch.Tensor, num_betas: int) -> None:
    """Static-shape checks (they resolve at trace time, so export sees no guards)."""
    if pose_rotmat.dim() != 4 or tuple(pose_rotmat.shape[1:]) != (NUM_JOINTS, 3, 3):
        raise InputSpecError(f"pose_rotmat has shape {tuple(pose_rotmat.shape)}, expected (N, {NUM_JOINTS}, 3, 3)")
    if betas.dim() != 2 or betas.shape[1] != num_betas:
        raise InputSpecError(f"betas has shape {tuple(betas.shape)}, expected (N, {num_betas})")


class ExportableSMPL(nn.Module):
    """SMPL LBS with MatMul/elementwise ops only, for ONNX/TensorRT export.

    ``data`` is a body-model dict as returned by ``load_body_model_data`` (or
    ``make_synthetic_smpl``); it is validated again here.
    """

    def __init__(self, data: Mapping[str, Any], num_betas: int = 10) -> None:
        super().__init__()
        data = normalize_body_model_data(data, num_betas=num_betas)
        self.parents: List[int] = kinematic_parents(data)
        self.num_betas = num_betas
        self.num_vertices = int(data["v_template"].shape[0])
        num_v = self.num_vertices
        # faces are not part of the computation; kept for renderers / writers
        self.faces: np.ndarray = data["f"]

        def buf(name: str, arr: np.ndarray) -> None:
            self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)))

        buf("v_template", data["v_template"])  # (V, 3)
        buf("shapedirs", data["shapedirs"].reshape(num_v * 3, num_betas).T)  # (B, V*3)
        buf("posedirs", data["posedirs"].reshape(num_v * 3, NUM_POSE_BASIS).T)  # (207, V*3)
        buf("J_regressor", data["J_regressor"])  # (24, V)
        buf("lbs_weights", data["weights"])  # (V, 24)
        # rel_joints = rel_matrix @ joints: each joint minus its parent (root unchanged)
        rel = np.eye(NUM_JOINTS, dtype=np.float32)
        for j, p in enumerate(self.parents):
            if p >= 0:
                rel[j, p] = -1.0
        buf("rel_matrix", rel)  # (24, 24)
        buf("eye3", np.eye(3, dtype=np.float32))  # (3, 3)

    def forward(self, pose_rotmat: torch.Tensor, betas: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """pose_rotmat (N, 24, 3, 3), betas (N, B) -> vertices (N, V, 3), joints (N, 24, 3)."""
        _check_inputs(pose_rotmat, betas, self.num_betas)
        num_v = self.num_vertices
        # shape blend shapes and rest joints
        v_shaped = self.v_template + torch.matmul(betas, self.shapedirs).reshape(-1, num_v, 3)  # (N, V, 3)
        joints = torch.matmul(self.J_regressor, v_shaped)  # (N, 24, 3)
        # pose blend shapes from (R - I) of the 23 body joints
        pose_feature = (pose_rotmat[:, 1:] - self.eye3).reshape(-1, NUM_POSE_BASIS)  # (N, 207)
        v_posed = v_shaped + torch.matmul(pose_feature, self.posedirs).reshape(-1, num_v, 3)  # (N, V, 3)

        # kinematic chain, unrolled over the constant parents list
        rel_joints = torch.matmul(self.rel_matrix, joints)  # (N, 24, 3)
        rots = torch.unbind(pose_rotmat, dim=1)  # 24 x (N, 3, 3)
        rels = torch.unbind(rel_joints.unsqueeze(-1), dim=1)  # 24 x (N, 3, 1)
        world_r: List[torch.Tensor] = [rots[0]]
        world_t: List[torch.Tensor] = [rels[0]]
        for j in range(1, NUM_JOINTS):
            p = self.parents[j]
            world_r.append(torch.matmul(world_r[p], rots[j]))  # (N, 3, 3)
            world_t.append(torch.matmul(world_r[p], rels[j]) + world_t[p])  # (N, 3, 1)
        rot = torch.stack(world_r, dim=1)  # (N, 24, 3, 3)
        posed_joints = torch.stack(world_t, dim=1)  # (N, 24, 3, 1)
        # skinning transforms map rest positions: x -> R x + (t - R j_rest)
        trans = posed_joints - torch.matmul(rot, joints.unsqueeze(-1))  # (N, 24, 3, 1)
        a = torch.cat([rot, trans], dim=3).reshape(-1, NUM_JOINTS, 12)  # (N, 24, 12) rows of [R | t]
        t_v = torch.matmul(self.lbs_weights, a).reshape(-1, num_v, 3, 4)  # (N, V, 3, 4)
        verts = (t_v[..., :3] * v_posed.unsqueeze(2)).sum(dim=-1) + t_v[..., 3]  # (N, V, 3)
        return verts, posed_joints.squeeze(-1)


def landmark_vertex_ids(data: Mapping[str, np.ndarray]) -> Dict[str, int]:
    """Vertex ids for the keypoints smplx's ``VertexJointSelector`` wants (nose, eyes, ears,
    toes, heels, fingertips), chosen as the vertices nearest points placed relative to the
    rest joints.  For SMPL-topology models use smplx's own table instead."""
    v = np.asarray(data["v_template"], dtype=np.float64)
    j = np.asarray(data["J_regressor"], dtype=np.float64) @ v  # (24, 3)
    pts: Dict[str, np.ndarray] = {
        "nose": j[15] + (0.0, 0.06, 0.12),
        "reye": j[15] + (-0.03, 0.09, 0.10),
        "leye": j[15] + (0.03, 0.09, 0.10),
        "rear": j[15] + (-0.09, 0.07, 0.0),
        "lear": j[15] + (0.09, 0.07, 0.0),
    }
    for side, s, foot, ankle, hand in (("L", 1.0, 10, 7, 22), ("R", -1.0, 11, 8, 23)):
        pts[f"{side}BigToe"] = j[foot] + (-s * 0.02, -0.02, 0.08)
        pts[f"{side}SmallToe"] = j[foot] + (s * 0.03, -0.02, 0.06)
        pts[f"{side}Heel"] = j[ankle] + (0.0, -0.06, -0.06)
        for finger, dz in (("thumb", 0.04), ("index", 0.02), ("middle", 0.0), ("ring", -0.02), ("pinky", -0.04)):
            pts[f"{side.lower()}{finger}"] = j[hand] + (s * 0.1, 0.0, dz)
    return {name: int(np.argmin(np.linalg.norm(v - p, axis=1))) for name, p in pts.items()}


class SMPLReference(nn.Module):
    """The reference: ``smplx.SMPL`` built from a body-model dict, rotation-matrix input.

    smplx 0.1.28 works unchanged with numpy 2 and torch 2.x.  Its ``SMPL`` constructor
    prints a warning for 10-beta models; that print is swallowed here.  For models
    without SMPL's 6890-vertex topology (the synthetic one) the extra keypoint vertex ids
    come from ``landmark_vertex_ids`` so smplx's vertex selector stays in range; only the
    24 SMPL joints are returned anyway.
    """

    def __init__(self, data: Mapping[str, Any], num_betas: int = 10) -> None:
        super().__init__()
        try:
            import smplx
            from smplx.utils import Struct
        except ImportError as exc:  # pragma: no cover - smplx is in the export extra
            raise CheckpointError("SMPLReference needs the smplx package: pip install 'hmr-trt[export]'") from exc
        data = normalize_body_model_data(data, num_betas=num_betas)
        num_v = int(data["v_template"].shape[0])
        vertex_ids = None if num_v == SMPL_NUM_VERTICES else landmark_vertex_ids(data)
        with contextlib.redirect_stdout(io.StringIO()):
            self.smpl = smplx.SMPL(
                model_path="",
                data_struct=Struct(**data),
                create_betas=False,
                create_global_orient=False,
                create_body_pose=False,
                create_transl=False,
                num_betas=num_betas,
                vertex_ids=vertex_ids,
                dtype=torch.float32,
            )
        self.num_betas = num_betas

    def forward(self, pose_rotmat: torch.Tensor, betas: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """pose_rotmat (N, 24, 3, 3), betas (N, B) -> vertices (N, V, 3), joints (N, 24, 3)."""
        _check_inputs(pose_rotmat, betas, self.num_betas)
        out = self.smpl(
            betas=betas,
            global_orient=pose_rotmat[:, :1],  # (N, 1, 3, 3)
            body_pose=pose_rotmat[:, 1:],  # (N, 23, 3, 3)
            pose2rot=False,
        )
        return out.vertices, out.joints[:, :NUM_JOINTS]


def body_model_from_file(
    path: str | os.PathLike, num_betas: int = 10, with_reference: bool = True
) -> Tuple[ExportableSMPL, Optional[SMPLReference]]:
    """Load ``path`` (.npz or SMPL .pkl) once and build (ExportableSMPL, SMPLReference or None)."""
    data = load_body_model_data(path, num_betas=num_betas)
    exportable = ExportableSMPL(data, num_betas=num_betas)
    reference = SMPLReference(data, num_betas=num_betas) if with_reference else None
    return exportable, reference
