"""MPS-Net (Wei et al., CVPR 2022), the temporal part: SPIN features (B, 16, 2048) -> the middle
frame's SMPL parameters. Official key names (``nonlocalblock.conv_phi`` ...) are kept so the
released ``gen_state_dict`` loads strictly (after dropping the regressor's SMPL buffers).

MoCA: a self-similarity map softmax(x x^T) and a non-local map softmax(theta phi^T), fused by a
1x1 Conv2d over the two maps, softmax, applied to g, projected back (Conv1d) with a residual.
HAFI: frames m-4..m-2, m-1..m+1, m+2..m+4 each pooled by one shared TemporalAttention, then the
three pooled tokens pooled again -> the SPIN regressor.

Each window is computed on its own. The official fusion ``cat((xx, theta_phi), dim=0).view(N, 2, T, T)``
pairs maps of different samples when N > 1; at N = 1 it is ``stack((xx, theta_phi), dim=1)``, which
is what this model computes at every batch size. The second regressor pass that the official
forward makes for the motion discriminator is skipped (it does not change the outputs).
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from ...seeded import shape_like_trained
from ..spin import Regressor
from ..temporal import TemporalAttention, attention_pool, seeded_init, smpl_outputs
from .config import MPSNetConfig


class TemporalEncoder(nn.Module):  # the official "nonlocalblock": MoCA + HAFI
    def __init__(self, cfg: MPSNetConfig) -> None:
        super().__init__()
        c, inner = cfg.feature_dim, cfg.feature_dim // 2
        self.mid = cfg.middle
        self.conv_phi = nn.Conv1d(c, inner, kernel_size=1, bias=False)
        self.conv_theta = nn.Conv1d(c, inner, kernel_size=1, bias=False)
        self.conv_g = nn.Conv1d(c, inner, kernel_size=1, bias=False)
        self.conv_mask = nn.Conv1d(inner, c, kernel_size=1, bias=False)
        self.conv_mask_forR = nn.Conv2d(2, 1, kernel_size=1, bias=False)
        self.attention = TemporalAttention(c, seq_len=3, hidden=cfg.attention_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, C)
        xt = x.transpose(1, 2)  # (N, C, T)
        similarity = torch.softmax(x @ xt, dim=-1)  # (N, T, T)
        theta = self.conv_theta(xt).transpose(1, 2)  # (N, T, C/2)
        phi = self.conv_phi(xt)  # (N, C/2, T)
        g = self.conv_g(xt).transpose(1, 2)  # (N, T, C/2)
        non_local = torch.softmax(theta @ phi, dim=-1)  # (N, T, T)
        maps = torch.stack((similarity, non_local), dim=1)  # (N, 2, T, T): per window (official at N=1)
        fused = torch.softmax(self.conv_mask_forR(maps)[:, 0], dim=-1)  # (N, T, T)
        out = self.conv_mask((fused @ g).transpose(1, 2)) + xt  # (N, C, T)
        m = self.mid
        pooled = [attention_pool(self.attention, out[:, :, s:s + 3].transpose(1, 2))  # (N, C) each
                  for s in (m - 4, m - 1, m + 2)]  # before, current, after
        return attention_pool(self.attention, torch.stack(pooled, dim=1))  # (N, C)


class MPSNet(nn.Module):
    """features (B, T, C) -> pose_rotmat (B, 1, 24, 3, 3), betas (B, 1, 10), cam (B, 1, 3)."""

    def __init__(self, cfg: MPSNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.nonlocalblock = TemporalEncoder(cfg)
        self.regressor = Regressor(cfg.feature_dim, cfg.regressor_hidden, cfg.iters)
        seeded_init(self, cfg.seed, cfg.head_gain)
        if cfg.trained_like:  # a standing person and its crop camera, small deltas on people's features
            shape_like_trained(self, self.regressor, cfg.window, cfg.feature_dim, cfg.seed)

    def forward(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feature = self.nonlocalblock(features)  # (B, C)
        return smpl_outputs(self.regressor, feature, features.shape[0], 1)
