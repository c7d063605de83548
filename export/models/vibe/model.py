"""VIBE (Kocabas et al., CVPR 2020), the temporal part: SPIN features (B, T, 2048) -> SMPL
parameters for every frame. Official key names (``encoder.gru``, ``encoder.linear``, ``regressor``)
are kept so the released ``gen_state_dict`` loads strictly (after dropping the regressor's SMPL
buffers and VIBE_Demo's ``hmr.*`` backbone keys).

The encoder is a unidirectional GRU, ReLU, Linear back to 2048 and a residual; the SPIN regressor
runs on every frame. Frame t reads frames <= t only, so ``VIBEStep`` computes the same thing one
frame at a time from a carried GRU hidden state (true streaming, no window recompute).
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ...seeded import shape_like_trained
from ..spin import Regressor
from ..temporal import seeded_init, smpl_outputs
from .config import VIBEConfig


class TemporalEncoder(nn.Module):
    def __init__(self, cfg: VIBEConfig) -> None:
        super().__init__()
        self.gru = nn.GRU(cfg.feature_dim, cfg.hidden, num_layers=cfg.n_layers)
        self.linear = nn.Linear(cfg.hidden, cfg.feature_dim)  # add_linear=True

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """x (T, N, C) time-major, h0 (layers, N, H) or None (zeros) -> (T, N, C), h_T (layers, N, H)."""
        y, h = self.gru(x, h0)  # (T, N, H)
        return self.linear(F.relu(y)) + x, h  # use_residual=True


class VIBE(nn.Module):
    """features (B, T, C) -> pose_rotmat (B, T, 24, 3, 3), betas (B, T, 10), cam (B, T, 3)."""

    def __init__(self, cfg: VIBEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = TemporalEncoder(cfg)
        self.regressor = Regressor(cfg.feature_dim, cfg.regressor_hidden, cfg.iters)
        seeded_init(self, cfg.seed, cfg.head_gain)
        if cfg.trained_like:  # a standing person and its crop camera, small deltas on people's features
            shape_like_trained(self, self.regressor, cfg.window, cfg.feature_dim, cfg.seed)

    def forward(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, c = features.shape
        y, _ = self.encoder(features.transpose(0, 1))  # (T, B, C)
        return smpl_outputs(self.regressor, y.transpose(0, 1).reshape(b * t, c), b, t)


class VIBEStep(nn.Module):
    """One frame of a track with its GRU state: features (B, C), hidden (B, layers, H) ->
    pose_rotmat (B, 24, 3, 3), betas (B, 10), cam (B, 3), next_hidden (B, layers, H).
    A new track starts from zeros (what the whole-sequence forward starts from)."""

    def __init__(self, vibe: VIBE) -> None:
        super().__init__()
        self.vibe = vibe  # shares the weights

    def forward(self, features: torch.Tensor, hidden: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        y, h = self.vibe.encoder(features[None], hidden.transpose(0, 1).contiguous())  # (1, B, C), (L, B, H)
        rotmat, betas, cam = smpl_outputs(self.vibe.regressor, y[0], features.shape[0], 1)
        return rotmat[:, 0], betas[:, 0], cam[:, 0], h.transpose(0, 1)
