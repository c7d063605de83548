"""coseg's torch side for the export job: configs, reference (FFT form of FDE), exportable (matrix form)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Tuple

import torch

from hmr_trt.contract import ModelContract
from hmr_trt.errors import ConfigError

from ..adapter import ModelAdapter
from ..spin import load_mean_params
from .config import TINY, CosegConfig
from .contract import CONTRACT, make_contract
from .model import CosegNet, build_model


class CosegAdapter(ModelAdapter):
    contract = CONTRACT
    Config = CosegConfig

    def tiny_config(self) -> CosegConfig:
        return TINY

    def contract_for(self, cfg: CosegConfig) -> ModelContract:
        return make_contract(cfg.window, cfg.feature_dim, cfg.num_joints, cfg.num_betas)

    def reference(self, cfg: CosegConfig, checkpoint: Optional[Path] = None) -> CosegNet:
        return build_model(cfg.with_(fde_mode="fft"), checkpoint)

    def exportable(self, reference: torch.nn.Module, graph: str) -> torch.nn.Module:
        if graph != "temporal":
            raise ConfigError(f"coseg exports graph 'temporal' from its reference, not {graph!r}")
        module = build_model(reference.cfg.with_(fde_mode="matrix", trained_like=False))  # FDE as one T x T MatMul; weights below
        module.load_state_dict(reference.state_dict())
        return module.eval()

    def example_inputs(self, cfg: CosegConfig, graph: str, batch: int, seed: int = 0) -> Tuple[torch.Tensor, ...]:
        if graph != "temporal":
            raise ConfigError(f"coseg has no model graph {graph!r}")
        gen = torch.Generator().manual_seed(seed)
        return (torch.randn(batch, cfg.window, cfg.feature_dim, generator=gen),)

    def load_mean_params(self, reference: torch.nn.Module, path: Path) -> None:
        cfg = reference.cfg
        mean = load_mean_params(path, cfg.num_joints, cfg.num_betas)
        reg = reference.regressor
        with torch.no_grad():
            for key, buf in (("pose", reg.init_pose), ("shape", reg.init_shape), ("cam", reg.init_cam)):
                buf.copy_(torch.from_numpy(mean[key])[None])


ADAPTER: Any = CosegAdapter()
