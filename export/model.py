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
from torch.nn import functional as F

from hmr_trt.errors import CheckpointError

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


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """SPIN's 6D -> rotation matrix by Gram-Schmidt.  (N, 6*J) -> (N*J, 3, 3), columns b1, b2, b3."""
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


def default_mean_params(cfg: CosegConfig) -> dict[str, np.ndarray]:
    """Identity rotations in 6D, zero shape, cam (0.9, 0, 0): the regressor's start without a mean file."""
    identity6d = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.0], dtype=np.float32)  # (3, 2) row-major: e1, e2
    return {
        "pose": np.tile(identity6d, cfg.num_joints),
        "shape": np.zeros(cfg.num_betas, dtype=np.float32),
        "cam": np.array([0.9, 0.0, 0.0], dtype=np.float32),
    }


def load_mean_params(path: str | Path, cfg: CosegConfig) -> dict[str, np.ndarray]:
    """SPIN's ``smpl_mean_params.npz`` (keys pose [144] 6D, shape [10], cam [3])."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"mean-parameter file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            params = {k: np.asarray(data[k], dtype=np.float32).reshape(-1) for k in ("pose", "shape", "cam")}
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot read mean parameters from {path}: {exc}") from exc
    want = {"pose": cfg.pose_dim, "shape": cfg.num_betas, "cam": 3}
    for key, n in want.items():
        if params[key].size != n:
            raise CheckpointError(f"{path}: '{key}' has {params[key].size} values, expected {n}")
    return params


class Regressor(nn.Module):
    """SPIN/HMR iterative SMPL regressor; key names follow SPIN so a SPIN regressor state dict loads."""

    def __init__(self, cfg: CosegConfig, mean_params: dict[str, np.ndarray] | None = None) -> None:
        super().__init__()
        mean = mean_params or default_mean_params(cfg)
        self.iters = cfg.regressor_iters
        n_in = cfg.feature_dim + cfg.pose_dim + cfg.num_betas + 3
        self.fc1 = nn.Linear(n_in, cfg.regressor_hidden)
        self.drop1 = nn.Dropout()
        self.fc2 = nn.Linear(cfg.regressor_hidden, cfg.regressor_hidden)
        self.drop2 = nn.Dropout()
        self.decpose = nn.Linear(cfg.regressor_hidden, cfg.pose_dim)
        self.decshape = nn.Linear(cfg.regressor_hidden, cfg.num_betas)
        self.deccam = nn.Linear(cfg.regressor_hidden, 3)
        self.register_buffer("init_pose", torch.from_numpy(mean["pose"]).float()[None])  # (1, 144)
        self.register_buffer("init_shape", torch.from_numpy(mean["shape"]).float()[None])  # (1, 10)
        self.register_buffer("init_cam", torch.from_numpy(mean["cam"]).float()[None])  # (1, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # (N, C)
        n = x.shape[0]
        pose = self.init_pose.expand(n, -1)
        shape = self.init_shape.expand(n, -1)
        cam = self.init_cam.expand(n, -1)
        for _ in range(self.iters):
            xc = torch.cat([x, pose, shape, cam], dim=1)
            xc = self.drop2(self.fc2(self.drop1(self.fc1(xc))))
            pose = self.decpose(xc) + pose
            shape = self.decshape(xc) + shape
            cam = self.deccam(xc) + cam
        return pose, shape, cam  # (N, 144), (N, 10), (N, 3)


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
        self.regressor = Regressor(cfg, mean_params)
        self.reset_parameters(cfg.seed, cfg.head_gain)
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


def _summarise(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... and {len(keys) - limit} more" if len(keys) > limit else "")


def load_checkpoint(model: CosegNet, path: str | Path, *, regressor_only: bool = False) -> None:
    """Load a state dict (``torch.load(weights_only=True)``); SPIN regressor keys load too.

    A plain SPIN checkpoint holds only the backbone and the regressor: pass ``regressor_only``
    to load those keys and keep the seeded temporal stages. Any mismatch raises a
    CheckpointError listing the missing and unexpected keys.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        raw = raw["model"]  # SPIN saves {"model": state_dict, ...}
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    state = _normalise_keys(raw)
    own = model.state_dict()
    if regressor_only:
        state = {k: v for k, v in state.items() if k.startswith("regressor.")}
        own = {k: v for k, v in own.items() if k.startswith("regressor.")}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if regressor_only:
        unexpected = []  # backbone keys of a SPIN checkpoint are not the temporal model's business
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_summarise(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_summarise(unexpected)}")
        if mismatched:
            shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched]
            parts.append(f"shape mismatches ({len(mismatched)}): {_summarise(shapes)}")
        raise CheckpointError(f"checkpoint {path} does not match the model config; " + "; ".join(parts))
    model.load_state_dict(state, strict=not regressor_only)


def build_model(
    cfg: CosegConfig | None = None,
    checkpoint: str | Path | None = None,
    mean_params: str | Path | None = None,
) -> CosegNet:
    """The reference model in eval mode: seeded weights, then the checkpoint when given."""
    cfg = cfg or CosegConfig()
    mean = load_mean_params(mean_params, cfg) if mean_params else None
    model = CosegNet(cfg, mean)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()
