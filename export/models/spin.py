"""SPIN's pieces that the video models share (VIBE, TCMR, MPS-Net, GLoT, coseg).

- ``rot6d_to_rotmat``: 6D -> rotation matrix by Gram-Schmidt (SPIN ``rot6d_to_rotmat``).
- ``Regressor``: the HMR/SPIN iterative regressor. Key names follow SPIN's ``Regressor``
  (``fc1``, ``fc2``, ``decpose``, ``decshape``, ``deccam``, buffers ``init_pose``/``init_shape``/
  ``init_cam``) so a released state dict loads strictly. ``use_fc2=False`` reproduces models whose
  forward skips ``fc2`` (GLoT) while keeping its weights in the state dict.
- Mean parameters: SPIN's ``smpl_mean_params.npz`` or the identity start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hmr_trt.errors import CheckpointError


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """(N, 6*J) -> (N*J, 3, 3), columns b1, b2, b1 x b2 (SPIN's reading of the 6D layout)."""
    x = x.reshape(-1, 3, 2)
    a1, a2 = x[:, :, 0], x[:, :, 1]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(dim=-1, keepdim=True) * b1, dim=-1)
    # b3 = b1 x b2, written out (ONNX has no cross-product op)
    b3 = torch.stack(
        (
            b1[:, 1] * b2[:, 2] - b1[:, 2] * b2[:, 1],
            b1[:, 2] * b2[:, 0] - b1[:, 0] * b2[:, 2],
            b1[:, 0] * b2[:, 1] - b1[:, 1] * b2[:, 0],
        ),
        dim=-1,
    )
    return torch.stack((b1, b2, b3), dim=-1)


def identity_mean_params(num_joints: int = 24, num_betas: int = 10) -> Dict[str, np.ndarray]:
    """Identity rotations in 6D, zero shape, cam (0.9, 0, 0): the regressor's start without a mean file."""
    identity6d = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.0], dtype=np.float32)  # (3, 2) row-major: e1, e2
    return {"pose": np.tile(identity6d, num_joints), "shape": np.zeros(num_betas, dtype=np.float32),
            "cam": np.array([0.9, 0.0, 0.0], dtype=np.float32)}


def load_mean_params(path: str | Path, num_joints: int = 24, num_betas: int = 10) -> Dict[str, np.ndarray]:
    """SPIN's ``smpl_mean_params.npz`` (keys pose [144] 6D, shape [10], cam [3])."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"mean-parameter file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            params = {k: np.asarray(data[k], dtype=np.float32).reshape(-1) for k in ("pose", "shape", "cam")}
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot read mean parameters from {path}: {exc}") from exc
    for key, n in {"pose": 6 * num_joints, "shape": num_betas, "cam": 3}.items():
        if params[key].size != n:
            raise CheckpointError(f"{path}: '{key}' has {params[key].size} values, expected {n}")
    return params


class Regressor(nn.Module):
    """features (N, C) -> pose6d (N, 6J), shape (N, betas), cam (N, 3) by ``iters`` error-feedback steps."""

    def __init__(self, feature_dim: int = 2048, hidden: int = 1024, iters: int = 3, num_joints: int = 24,
                 num_betas: int = 10, mean_params: Optional[Dict[str, np.ndarray]] = None,
                 use_fc2: bool = True) -> None:
        super().__init__()
        mean = mean_params or identity_mean_params(num_joints, num_betas)
        self.iters, self.use_fc2 = iters, use_fc2
        pose_dim = 6 * num_joints
        self.fc1 = nn.Linear(feature_dim + pose_dim + num_betas + 3, hidden)
        self.drop1 = nn.Dropout()
        self.fc2 = nn.Linear(hidden, hidden)
        self.drop2 = nn.Dropout()
        self.decpose = nn.Linear(hidden, pose_dim)
        self.decshape = nn.Linear(hidden, num_betas)
        self.deccam = nn.Linear(hidden, 3)
        self.register_buffer("init_pose", torch.from_numpy(mean["pose"]).float()[None])  # (1, 6J)
        self.register_buffer("init_shape", torch.from_numpy(mean["shape"]).float()[None])  # (1, betas)
        self.register_buffer("init_cam", torch.from_numpy(mean["cam"]).float()[None])  # (1, 3)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # (N, C)
        n = x.shape[0]
        pose = self.init_pose.expand(n, -1)
        shape = self.init_shape.expand(n, -1)
        cam = self.init_cam.expand(n, -1)
        for _ in range(self.iters):
            xc = self.drop1(self.fc1(torch.cat([x, pose, shape, cam], dim=1)))
            if self.use_fc2:
                xc = self.drop2(self.fc2(xc))
            pose = self.decpose(xc) + pose
            shape = self.decshape(xc) + shape
            cam = self.deccam(xc) + cam
        return pose, shape, cam  # (N, 6J), (N, betas), (N, 3)
