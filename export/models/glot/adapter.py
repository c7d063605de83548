"""The torch side of GLoT for the export job, parity and benchmarks (``ModelAdapter``)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Optional, Tuple

import torch

from hmr_trt.contract import ModelContract
from hmr_trt.errors import ConfigError
from hmr_trt.export.models.adapter import ModelAdapter

from . import config
from .checkpoint import load_released
from .contract import CONTRACT, glot_contract
from .model import GLoT, LayerNormForExport


class GlotAdapter(ModelAdapter):
    contract = CONTRACT
    Config = config.GlotConfig

    def tiny_config(self) -> config.GlotConfig:
        return config.tiny_config()

    def with_window(self, cfg: config.GlotConfig, window: int) -> config.GlotConfig:
        """``trt-export --window T``: GLoT's config calls the window ``seqlen`` (the peers' ``window``)."""
        need = 2 * cfg.stride_short + 1
        if window < need:
            raise ConfigError(f"glot: --window {window} is too short: GLoT's local branch reads 2 * stride_short + 1 "
                              f"= {need} frames around the middle, so --window must be >= {need} (the released "
                              f"config and checkpoint use {config.GlotConfig().seqlen})")
        return dataclasses.replace(cfg, seqlen=window)

    def contract_for(self, cfg: config.GlotConfig) -> ModelContract:
        return glot_contract(window=cfg.seqlen, feature_dim=cfg.feature_dim)

    def reference(self, cfg: config.GlotConfig, checkpoint: Optional[Path] = None) -> torch.nn.Module:
        model = GLoT(cfg if checkpoint is None else dataclasses.replace(cfg, trained_like=False))  # the file sets every weight
        if checkpoint is not None:
            load_released(model, checkpoint)
        return model.eval()

    def exportable(self, reference: torch.nn.Module, graph: str) -> torch.nn.Module:
        """A copy whose LayerNorms are written out in primitive ops (the TensorRT 8.6 parser has no
        LayerNormalization); same weights, same module names, so node scopes stay the same."""
        if graph != "temporal":
            raise ConfigError(f"glot: no graph {graph!r} in the model; it exports 'temporal'")
        module = copy.deepcopy(reference).eval()
        for parent in list(module.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.LayerNorm):
                    setattr(parent, name, LayerNormForExport(child))
        return module

    def example_inputs(self, cfg: config.GlotConfig, graph: str, batch: int,
                       seed: int = 0) -> Tuple[torch.Tensor, ...]:
        if graph != "temporal":
            raise ConfigError(f"glot: example inputs exist for the temporal graph only, got {graph!r}")
        gen = torch.Generator().manual_seed(seed)
        return (torch.randn(batch, cfg.seqlen, cfg.feature_dim, generator=gen),)  # (B, T, C)


ADAPTER = GlotAdapter()
