"""WHAM's torch side for the export job: the ``step`` graph (one frame of every live track, states
in and out) and the ``init`` graph (a track's first frame -> its state)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from hmr_trt.contract import ModelContract

from ..adapter import ModelAdapter
from .checkpoint import config_for, load_released, read_state
from .config import TINY, WHAMConfig
from .contract import CONTRACT, OUTPUTS, STATE, frame_shapes, graphs, init_shapes
from .model import WHAM


class WHAMStepGraph(nn.Module):
    """Flat tensors in contract order: the frame inputs, then the state -> the outputs, then ``next_*``."""

    def __init__(self, model: WHAM) -> None:
        super().__init__()
        self.model = model

    def forward(self, keypoints, mask, features, cam_angvel, bbox, camera, *state: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        out, nxt = self.model.step(keypoints, mask, features, cam_angvel, bbox, camera, dict(zip(STATE, state)))
        return tuple(out[k] for k in OUTPUTS) + tuple(nxt[k] for k in STATE)


class WHAMInitGraph(nn.Module):
    def __init__(self, model: WHAM) -> None:
        super().__init__()
        self.model = model

    def forward(self, init_global_orient, init_body_pose, init_betas, keypoints) -> Tuple[torch.Tensor, ...]:
        state = self.model.init(init_global_orient, init_body_pose, init_betas, keypoints)
        return tuple(state[k] for k in STATE)


def random_rotations(gen: torch.Generator, *shape: int, scale: float = 0.3) -> torch.Tensor:
    """Rotation matrices of random axis-angles (Rodrigues)."""
    aa = torch.randn(*shape, 3, generator=gen) * scale
    th = aa.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    k = aa / th
    zero = torch.zeros_like(k[..., 0])
    km = torch.stack([zero, -k[..., 2], k[..., 1], k[..., 2], zero, -k[..., 0], -k[..., 1], k[..., 0], zero],
                     -1).reshape(*shape, 3, 3)
    th = th[..., None]
    return torch.eye(3) + torch.sin(th) * km + (1 - torch.cos(th)) * (km @ km)


def example_frame(cfg: WHAMConfig, batch: int, gen: torch.Generator) -> Dict[str, torch.Tensor]:
    """Plausible per-frame inputs: keypoints inside the box, a few masked, a 640x480 camera."""
    kp = torch.cat((torch.rand(batch, 34, generator=gen) * 1.6 - 0.8,
                    torch.tensor([0.0, 0.0, 0.5]).expand(batch, 3)), dim=1)
    return {"keypoints": kp, "mask": (torch.rand(batch, 17, generator=gen) < 0.2).float(),
            "features": torch.randn(batch, cfg.d_feat, generator=gen), "cam_angvel": torch.zeros(batch, 6),
            "bbox": torch.tensor([320.0, 240.0, 1.2]).expand(batch, 3).clone(),
            "camera": torch.tensor([640.0, 480.0, 800.0]).expand(batch, 3).clone()}


def example_init(cfg: WHAMConfig, batch: int, gen: torch.Generator) -> Dict[str, torch.Tensor]:
    return {"init_global_orient": random_rotations(gen, batch), "init_body_pose": random_rotations(gen, batch, 23),
            "init_betas": torch.randn(batch, 10, generator=gen) * 0.5,
            "keypoints": example_frame(cfg, batch, gen)["keypoints"]}


class WHAMAdapter(ModelAdapter):
    contract = CONTRACT
    Config = WHAMConfig

    def tiny_config(self) -> WHAMConfig:
        return WHAMConfig(**TINY)

    def contract_for(self, cfg: WHAMConfig) -> ModelContract:
        return replace(CONTRACT, graphs=graphs(cfg.d_embed, cfg.n_layers, cfg.refiner_layers, cfg.d_feat),
                       feature_dim=cfg.d_feat)

    def reference(self, cfg: WHAMConfig, checkpoint: Optional[Path] = None) -> WHAM:
        if checkpoint is None:
            return WHAM(cfg).eval()
        state = read_state(checkpoint)  # before building: the body's size comes from the file
        model = WHAM(config_for(state, cfg))
        load_released(model, checkpoint)
        return model.eval()

    def exportable(self, reference: nn.Module, graph: str) -> nn.Module:
        CONTRACT.graph(graph)
        return WHAMInitGraph(reference) if graph == "init" else WHAMStepGraph(reference)

    def example_inputs(self, cfg: WHAMConfig, graph: str, batch: int, seed: int = 0) -> Tuple[torch.Tensor, ...]:
        CONTRACT.graph(graph)
        gen = torch.Generator().manual_seed(seed)
        init = example_init(cfg, batch, gen)
        if graph == "init":
            return tuple(init[k] for k in init_shapes())
        model = WHAM(cfg)
        with torch.no_grad():  # a state a track can reach: its init, then one step
            state = model.init(*(init[k] for k in init_shapes()))
            frame = example_frame(cfg, batch, gen)
            _, state = model.step(*(frame[k] for k in frame_shapes(cfg.d_feat)), state)
        frame = example_frame(cfg, batch, gen)
        return tuple(frame[k] for k in frame_shapes(cfg.d_feat)) + tuple(state[k] for k in STATE)

    def with_window(self, cfg: Any, window: int) -> Any:
        from hmr_trt.errors import ConfigError

        raise ConfigError("model wham: --window does not apply (it steps one frame at a time)")


ADAPTER = WHAMAdapter()
