"""TCMR (Choi et al., CVPR 2021), the temporal part: SPIN features (B, 16, 2048) -> the middle frame's
SMPL parameters. Official key names (``encoder.gru_cur`` ...) are kept so the released
``gen_state_dict`` loads strictly (after dropping the regressor's SMPL buffers).

Three GRUs read the window: ``gru_cur`` bidirectional over all frames, ``gru_bef`` over the past
frames 0..7, ``gru_aft`` over the future frames 9..15 in reverse order. Each branch gives one
2048-d token (ReLU + Linear); ``TemporalAttention`` weighs the three tokens; their weighted sum
goes through the SPIN regressor.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ...seeded import shape_like_trained
from ..spin import Regressor
from ..temporal import TemporalAttention, attention_pool, seeded_init, smpl_outputs
from .config import TCMRConfig


class TemporalEncoder(nn.Module):
    def __init__(self, cfg: TCMRConfig) -> None:
        super().__init__()
        c, h = cfg.feature_dim, cfg.hidden
        self.mid_frame = cfg.middle
        self.gru_cur = nn.GRU(c, h, num_layers=cfg.n_layers, bidirectional=True)
        self.gru_bef = nn.GRU(c, h, num_layers=cfg.n_layers)
        self.gru_aft = nn.GRU(c, h, num_layers=cfg.n_layers)
        self.linear_cur = nn.Linear(2 * h, c)
        self.linear_bef = nn.Linear(h, c)
        self.linear_aft = nn.Linear(h, c)
        self.attention = TemporalAttention(c, seq_len=3, hidden=cfg.attention_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, C)
        m = self.mid_frame
        x = x.transpose(0, 1)  # (T, N, C): the GRUs are time-major
        y_all, _ = self.gru_cur(x)  # (T, N, 2H)
        y_bef, _ = self.gru_bef(x[:m])  # (m, N, H): past frames, forward in time
        y_aft, _ = self.gru_aft(torch.flip(x[m + 1:], dims=[0]))  # (T-m-1, N, H): future frames, backward
        tokens = torch.stack((self.linear_bef(F.relu(y_bef[-1])),
                              self.linear_cur(F.relu(y_all[m])),
                              self.linear_aft(F.relu(y_aft[-1]))), dim=1)  # (N, 3, C)
        return attention_pool(self.attention, tokens)  # (N, C)


class TCMR(nn.Module):
    """features (B, T, C) -> pose_rotmat (B, 1, 24, 3, 3), betas (B, 1, 10), cam (B, 1, 3)."""

    def __init__(self, cfg: TCMRConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = TemporalEncoder(cfg)
        self.regressor = Regressor(cfg.feature_dim, cfg.regressor_hidden, cfg.iters)
        seeded_init(self, cfg.seed, cfg.head_gain)
        if cfg.trained_like:  # a standing person and its crop camera, small deltas on people's features
            shape_like_trained(self, self.regressor, cfg.window, cfg.feature_dim, cfg.seed)

    def forward(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feature = self.encoder(features)  # (B, C)
        return smpl_outputs(self.regressor, feature, features.shape[0], 1)
