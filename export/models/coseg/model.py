"""The two-stage co-segmentation network (CVPR 2023), the reference in PyTorch.

Read top to bottom in the order data flows; ../shared/docs/model-spec.md fixes the sizes and
wiring the paper leaves open. Input ``features`` (B, T, C=2048); outputs for every frame of
the window: ``pose_rotmat`` (B, T, 24, 3, 3), ``betas`` (B, T, 10), ``cam`` (B, T, 3).
The body model (vertices, joints) is applied after, by ``body_model.py``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...seeded import shape_like_trained
from ..checkpoint import load_torch_file, match_state_dict, state_dict_from
from ..spin import Regressor, load_mean_params, rot6d_to_rotmat
from .config import CosegConfig
from .fde import FrequencyEnhancement


class TemporalEncoder(nn.Module):
    """TE(d_in -> d_out): 2-layer bidirectional GRU, hidden d_out/2 per direction (+ residual if d_in == d_out)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.gru = nn.GRU(d_in, d_out // 2, num_layers=2, bidirectional=True, batch_first=True)
        self.residual = d_in == d_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, d_in) -> (B, L, d_out)
        y, _ = self.gru(x)
        return y + x if self.residual else y


class DynamicIntegration(nn.Module):
    """DIS: softmax weights over n equal-shaped streams from their time-pooled concatenation."""

    def __init__(self, n: int, dim: int, hidden: int, fragments: bool = False) -> None:
        super().__init__()
        self.n, self.fragments = n, fragments
        self.mlp = nn.Sequential(nn.Linear(n * dim, hidden), nn.ReLU(), nn.Linear(hidden, n))

    def forward(self, *streams: torch.Tensor) -> torch.Tensor:
        z = torch.cat(streams, dim=-1).mean(dim=1)  # (B, n*D)
        a = torch.softmax(self.mlp(z), dim=-1)  # (B, n)
        weighted = [a[:, i, None, None] * s for i, s in enumerate(streams)]  # n x (B, L, D)
        if self.fragments:  # DIS_frag: fragments of one window go back in time order
            return torch.cat(weighted, dim=1)  # (B, n*L, D)
        return torch.stack(weighted, dim=0).sum(dim=0)  # (B, L, D)


class DualExcitation(nn.Module):
    """DEM: self-excitation weights (attention over frames) gate the two temporally encoded patches."""

    def __init__(self, cfg: CosegConfig) -> None:
        super().__init__()
        c, half = cfg.feature_dim, cfg.feature_dim // 2
        self.scale = 1.0 / math.sqrt(cfg.attn_dim)
        self.query = nn.Linear(c, cfg.attn_dim)
        self.key = nn.Linear(c, cfg.attn_dim)
        self.value = nn.Linear(c, c)
        self.te1, self.te2 = TemporalEncoder(half, half), TemporalEncoder(half, half)
        self.lift1, self.lift2 = nn.Linear(half, c), nn.Linear(half, c)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, T, C)
        half = x.shape[-1] // 2
        v1, v2 = x[..., :half], x[..., half:]  # 2 x (B, T, C/2)
        logits = torch.matmul(self.query(x), self.key(x).transpose(1, 2)) * self.scale  # (B, T, T)
        mo = torch.matmul(torch.softmax(logits, dim=-1), self.value(x)) - x  # (B, T, C)  Eq. 2
        w1 = torch.sigmoid(mo[..., :half].mean(dim=1, keepdim=True))  # (B, 1, C/2)  Eq. 3
        w2 = torch.sigmoid(mo[..., half:].mean(dim=1, keepdim=True))
        return self.lift1(self.te1(v1) * w1), self.lift2(self.te2(v2) * w2)  # 2 x (B, T, C)


class IntraFrameStage(nn.Module):
    """Stage 1: DEM streams and the frequency-enhanced stream, integrated by DIS."""

    def __init__(self, cfg: CosegConfig) -> None:
        super().__init__()
        c = cfg.feature_dim
        self.dem = DualExcitation(cfg)
        self.fde = FrequencyEnhancement(cfg.window, cfg.fde_cutoff, cfg.fde_mode)
        self.te_f = TemporalEncoder(c, c)
        self.dis = DynamicIntegration(3, c, cfg.dis_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        dem1, dem2 = self.dem(x)
        f_tk = self.te_f(self.fde(x))
        return self.dis(dem1, dem2, f_tk)


class InterFrameStage(nn.Module):
    """Stage 2: two temporal fragments, plain and superposed ("self-added"), each integrated by DIS_frag."""

    def __init__(self, cfg: CosegConfig) -> None:
        super().__init__()
        c = cfg.feature_dim
        self.te_h1, self.te_h2 = TemporalEncoder(c, c), TemporalEncoder(c, c)
        self.dis_frag1 = DynamicIntegration(2, c, cfg.dis_hidden, fragments=True)
        self.dis_frag2 = DynamicIntegration(2, c, cfg.dis_hidden, fragments=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, T, C)
        mid = x.shape[1] // 2
        s1, s2 = self.te_h1(x[:, :mid]), self.te_h2(x[:, mid:])  # 2 x (B, T/2, C)
        bra1 = self.dis_frag1(s1, s2)  # (B, T, C)
        bra2 = self.dis_frag2(s1 + s1, s2 + s2)  # fragment superposition, (B, T, C)
        return bra1, bra2


class CosegNet(nn.Module):
    """features (B, T, C) -> pose_rotmat (B, T, 24, 3, 3), betas (B, T, 10), cam (B, T, 3)."""

    output_names = ("pose_rotmat", "betas", "cam")

    def __init__(self, cfg: CosegConfig, mean_params: dict[str, np.ndarray] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.feature_dim
        self.stage1 = IntraFrameStage(cfg)
        self.stage2 = InterFrameStage(cfg)
        self.dis_all = DynamicIntegration(3, c, cfg.dis_hidden)
        self.regressor = Regressor(c, cfg.regressor_hidden, cfg.regressor_iters, cfg.num_joints, cfg.num_betas,
                                   mean_params)
        self.reset_parameters(cfg.seed, cfg.head_gain)
        if cfg.trained_like and mean_params is None:  # a standing person, its crop camera, small deltas
            shape_like_trained(self, self.regressor, cfg.window, c, cfg.seed)
        self.eval()

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, c = features.shape
        s1 = self.stage1(features)  # (B, T, C)
        bra1, bra2 = self.stage2(features)  # 2 x (B, T, C)
        f_all = self.dis_all(bra1, bra2, s1)  # (B, T, C)
        pose6d, betas, cam = self.regressor(f_all.reshape(b * t, c))  # frame by frame
        rotmat = rot6d_to_rotmat(pose6d).reshape(b, t, self.cfg.num_joints, 3, 3)
        return rotmat, betas.reshape(b, t, -1), cam.reshape(b, t, 3)

    @torch.no_grad()
    def reset_parameters(self, seed: int, head_gain: float) -> None:
        """Deterministic seeded initialisation that leaves the global RNG untouched.

        PyTorch's default schemes for the GRUs and linear layers; the regressor heads use xavier
        with ``head_gain``: SPIN's 0.01 returns the mean pose for every input, so parity would
        prove nothing. The default gain makes poses move with the input like real motion does.
        """
        gen = torch.Generator().manual_seed(seed)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.in_features)
                module.weight.uniform_(-bound, bound, generator=gen)
                module.bias.uniform_(-bound, bound, generator=gen)
            elif isinstance(module, nn.GRU):
                bound = 1.0 / math.sqrt(module.hidden_size)
                for p in module.parameters():
                    p.uniform_(-bound, bound, generator=gen)
        for head in (self.regressor.decpose, self.regressor.decshape, self.regressor.deccam):
            fan = head.in_features + head.out_features
            bound = head_gain * math.sqrt(6.0 / fan)
            head.weight.uniform_(-bound, bound, generator=gen)
            head.bias.zero_()


# --- checkpoints -------------------------------------------------------------------------------

MODEL = "coseg"
_SPIN_REGRESSOR_KEYS = ("fc1.", "fc2.", "decpose.", "decshape.", "deccam.", "init_pose", "init_shape", "init_cam")


def _normalise_keys(state: dict[str, Any]) -> dict[str, Any]:
    """Strip wrapper prefixes and map a SPIN regressor's top-level keys under ``regressor.``."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "model."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key.startswith(_SPIN_REGRESSOR_KEYS):
            key = "regressor." + key
        out[key] = value
    return out


def load_checkpoint(model: CosegNet, path: str | Path, *, regressor_only: bool = False) -> None:
    """Load a state dict without executing pickled code; SPIN regressor keys load too.

    Accepted layouts: a bare state dict, or one under ``gen_state_dict``/``model``/``state_dict``
    (SPIN saves ``{"model": ...}``). A plain SPIN checkpoint holds only the backbone and the
    regressor: ``regressor_only`` loads those keys and keeps the seeded temporal stages. Any
    mismatch raises one CheckpointError summarising missing, unexpected and mis-shaped keys.
    """
    raw = load_torch_file(path, MODEL)
    state = _normalise_keys(state_dict_from(raw, path, MODEL, ("gen_state_dict", "model", "state_dict")))
    if regressor_only:
        sub = {k[len("regressor."):]: v for k, v in state.items() if k.startswith("regressor.")}
        match_state_dict(model.regressor, sub, path, MODEL)  # backbone keys of a SPIN file are ignored
        return
    match_state_dict(model, state, path, MODEL)


def build_model(
    cfg: CosegConfig | None = None,
    checkpoint: str | Path | None = None,
    mean_params: str | Path | None = None,
) -> CosegNet:
    """The reference model in eval mode: seeded weights, then the checkpoint when given."""
    cfg = cfg or CosegConfig()
    mean = load_mean_params(mean_params, cfg.num_joints, cfg.num_betas) if mean_params else None
    model = CosegNet(cfg if checkpoint is None else cfg.with_(trained_like=False), mean)  # the file sets the weights
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()
