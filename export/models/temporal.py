"""Pieces shared by the GRU/attention video models (VIBE, TCMR, MPS-Net).

- ``TemporalAttention``: TCMR's and MPS-Net's 3-token attention pooling (key names ``fc``,
  ``attention.0/2/4`` as released).
- ``smpl_outputs``: regressor 6D pose -> the window graph's (pose_rotmat, betas, cam) per frame.
- ``seeded_init``: deterministic default weights from a ``torch.Generator`` (never the global RNG),
  with the regressor heads' gain raised so the mesh moves with the input.
- ``load_released``: the official trainer save dict -> the model's keys, matched strictly.
- ``save_trainer_checkpoint``: writes a file in the released layout (for tests and tools).
- ``WindowAdapter``: the ModelAdapter the three share.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Optional, Tuple

import numpy as np
import torch
from torch import nn

from hmr_trt.contract import GraphSpec, ModelContract, TensorSpec, window_outputs
from hmr_trt.errors import ConfigError

from .adapter import ModelAdapter
from .checkpoint import load_torch_file, match_state_dict, state_dict_from
from .spin import Regressor, rot6d_to_rotmat

# Keys of a released gen_state_dict that are not the temporal model: the SPIN regressor's SMPL
# body model (exported separately as the body_model graph) and VIBE_Demo's HMR backbone (the
# feature extractor graph). The official demos load with strict=False and so ignore nothing; we
# drop exactly these prefixes and match the rest strictly.
NOT_TEMPORAL = ("regressor.smpl.", "hmr.")


class TemporalAttention(nn.Module):
    """tokens (N, S, C) -> softmax scores (N, S): per-token fc, flatten, tanh MLP (tanh after the last too)."""

    def __init__(self, attention_size: int = 2048, seq_len: int = 3, hidden: int = 256) -> None:
        super().__init__()
        self.fc = nn.Linear(attention_size, hidden)
        self.attention = nn.Sequential(
            nn.Linear(hidden * seq_len, hidden), nn.Tanh(),
            nn.Linear(hidden, hidden), nn.Tanh(),
            nn.Linear(hidden, seq_len), nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, S, C)
        scores = self.attention(self.fc(x).flatten(1))  # (N, S)
        return torch.softmax(scores, dim=-1)


def attention_pool(attention: TemporalAttention, tokens: torch.Tensor) -> torch.Tensor:
    """(N, S, C) -> (N, C): tokens weighted by their attention scores and summed."""
    return (tokens * attention(tokens)[:, :, None]).sum(dim=1)


def smpl_outputs(regressor: Regressor, feature: torch.Tensor, batch: int,
                 frames: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """features (batch*frames, C) -> pose_rotmat (batch, frames, 24, 3, 3), betas (.., 10), cam (.., 3)."""
    pose6d, betas, cam = regressor(feature)
    rotmat = rot6d_to_rotmat(pose6d).reshape(batch, frames, -1, 3, 3)
    return rotmat, betas.reshape(batch, frames, -1), cam.reshape(batch, frames, 3)


def seeded_init(module: nn.Module, seed: int, head_gain: float) -> None:
    """Every parameter U(-1/sqrt(fan_in), 1/sqrt(fan_in)) from one seeded generator, in state-dict
    order; the regressor heads (decpose/decshape/deccam) scaled by ``head_gain``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            fan_in = p.shape[1] if p.dim() > 1 else p.shape[0]
            if ".weight_hh" in name or ".bias_hh" in name or ".weight_ih" in name or ".bias_ih" in name:
                fan_in = p.shape[0] // 3  # GRU: PyTorch's own bound 1/sqrt(hidden)
            bound = 1.0 / math.sqrt(max(fan_in, 1))
            p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=gen))
            if name.split(".")[-2] in ("decpose", "decshape", "deccam"):
                p.mul_(head_gain if name.endswith("weight") else 0.0)


def load_released(module: nn.Module, path: str | Path, model: str,
                  ignore: Iterable[str] = NOT_TEMPORAL) -> None:
    """Load ``gen_state_dict`` of an official trainer checkpoint into ``module`` strictly, after
    dropping the keys that belong to other graphs (``ignore`` prefixes)."""
    raw = load_torch_file(path, model)
    state = state_dict_from(raw, path, model, keys=("gen_state_dict",))
    ignore = tuple(ignore)
    own = {k: v for k, v in state.items() if not k.startswith(ignore)}
    match_state_dict(module, own, path, model)


def _smpl_buffer_placeholders(vertices: int = 6890) -> dict:
    """The names and shapes of the SMPL buffers a released regressor carries (values unused here)."""
    return {"regressor.smpl.betas": torch.zeros(1, 10), "regressor.smpl.global_orient": torch.zeros(1, 3),
            "regressor.smpl.body_pose": torch.zeros(1, 69), "regressor.smpl.faces_tensor": torch.zeros(13776, 3,
                                                                                                      dtype=torch.long),
            "regressor.smpl.v_template": torch.zeros(vertices, 3), "regressor.smpl.shapedirs": torch.zeros(vertices, 3, 10),
            "regressor.smpl.J_regressor": torch.zeros(24, vertices), "regressor.smpl.posedirs": torch.zeros(207, 3 * vertices),
            "regressor.smpl.parents": torch.zeros(24, dtype=torch.long),
            "regressor.smpl.lbs_weights": torch.zeros(vertices, 24),
            "regressor.smpl.vertex_joint_selector.extra_joints_idxs": torch.zeros(21, dtype=torch.long),
            "regressor.smpl.J_regressor_extra": torch.zeros(9, vertices)}


def save_trainer_checkpoint(module: nn.Module, path: str | Path, *, extra: Optional[dict] = None,
                            legacy: bool = False, smpl_vertices: int = 6890) -> Path:
    """Write ``module`` as the official trainer does (``lib/core/trainer.py: save_model``): epoch,
    gen_state_dict (with the regressor's SMPL buffers, and ``extra`` keys such as ``hmr.*``),
    a numpy float64 performance, Adam states, and a motion discriminator with its Adam state.
    ``legacy`` writes PyTorch's pre-1.6 non-zip format."""
    gen = {**{k: v.clone() for k, v in module.state_dict().items()}, **_smpl_buffer_placeholders(smpl_vertices),
           **(extra or {})}
    gen_opt = torch.optim.Adam(module.parameters(), lr=5e-5)
    disc = nn.Sequential(nn.GRU(69, 8), nn.Linear(8, 1))
    disc_opt = torch.optim.Adam(disc.parameters(), lr=1e-4)
    for p, opt in ((next(module.parameters()), gen_opt), (next(disc.parameters()), disc_opt)):
        kept = p.detach().clone()
        p.grad = torch.ones_like(p)  # one step so the optimizer states hold exp_avg/exp_avg_sq
        opt.step()
        p.grad = None
        with torch.no_grad():
            p.copy_(kept)  # the saved model is the module as given
    save = {"epoch": 17, "gen_state_dict": gen, "performance": np.mean(np.array([51.9, 52.3])),
            "gen_optimizer": gen_opt.state_dict(), "disc_motion_state_dict": disc.state_dict(),
            "disc_motion_optimizer": disc_opt.state_dict()}
    path = Path(path)
    torch.save(save, path, _use_new_zipfile_serialization=not legacy)
    return path


class WindowAdapter(ModelAdapter):
    """The adapter the three window models share: a config class, a model class, features in."""

    Model: type
    name: str
    tiny: dict

    def tiny_config(self) -> Any:
        return self.Config(**self.tiny)

    def contract_for(self, cfg: Any) -> ModelContract:
        """The registered contract with this config's window and feature widths."""
        c = self.contract
        graphs = []
        for g in c.graphs:
            if g.role == "model":
                out_frames = cfg.window if c.emit == "all" else 1
                g = replace(g, inputs=(TensorSpec("features", ("batch", cfg.window, cfg.feature_dim)),),
                            outputs=window_outputs("batch", out_frames))
            elif g.role == "step":
                g = self.step_graph(cfg)
            graphs.append(g)
        return replace(c, graphs=tuple(graphs), window=cfg.window, feature_dim=cfg.feature_dim)

    def step_graph(self, cfg: Any) -> GraphSpec:
        raise NotImplementedError

    def reference(self, cfg: Any, checkpoint: Optional[Path] = None) -> nn.Module:
        # a checkpoint overwrites every weight: no need to shape the seeded draw first
        model = self.Model(cfg if checkpoint is None else replace(cfg, trained_like=False))
        if checkpoint is not None:
            load_released(model, checkpoint, self.name)
        return model.eval()

    def example_inputs(self, cfg: Any, graph: str, batch: int, seed: int = 0) -> Tuple[torch.Tensor, ...]:
        """SPIN-like features: non-negative (post-ReLU average pool), per-window level and motion."""
        gen = torch.Generator().manual_seed(seed)
        if graph == self.contract.model_graph.name:
            return (random_features(gen, batch, cfg.window, cfg.feature_dim),)
        raise ConfigError(f"{self.name}: no example inputs for graph {graph!r}")


def random_features(gen: torch.Generator, batch: int, frames: int, dim: int) -> torch.Tensor:
    """(batch, frames, dim) non-negative features that drift smoothly over frames (like a video's)."""
    base = torch.rand(batch, 1, dim, generator=gen) * 2.0
    drift = torch.randn(batch, 1, dim, generator=gen) * 0.05
    t = torch.arange(frames, dtype=torch.float32)[None, :, None]
    noise = torch.rand(batch, frames, dim, generator=gen) * 0.2
    return (base + drift * t + noise).clamp_min(0.0)
