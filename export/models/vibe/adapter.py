"""VIBE's torch side for the export job (see export/models/adapter.py): the window graph
("temporal") and the streaming step graph ("step")."""

from __future__ import annotations

from typing import Any, Tuple

import torch
from torch import nn

from hmr_trt.contract import GraphSpec

from ..temporal import WindowAdapter, random_features
from .config import VIBEConfig
from .contract import CONTRACT, step_graph
from .model import VIBE, VIBEStep


class VIBEAdapter(WindowAdapter):
    name = "vibe"
    contract = CONTRACT
    Config = VIBEConfig
    Model = VIBE
    tiny = {"feature_dim": 32, "hidden": 16, "regressor_hidden": 32}

    def step_graph(self, cfg: VIBEConfig) -> GraphSpec:
        return step_graph(cfg.feature_dim, cfg.hidden, cfg.n_layers)

    def exportable(self, reference: nn.Module, graph: str) -> nn.Module:
        return VIBEStep(reference) if graph == "step" else reference

    def example_inputs(self, cfg: Any, graph: str, batch: int, seed: int = 0) -> Tuple[torch.Tensor, ...]:
        if graph != "step":
            return super().example_inputs(cfg, graph, batch, seed)
        gen = torch.Generator().manual_seed(seed)
        hidden = torch.randn(batch, cfg.n_layers, cfg.hidden, generator=gen).tanh()  # a GRU state is in (-1, 1)
        return random_features(gen, batch, 1, cfg.feature_dim)[:, 0], hidden


ADAPTER = VIBEAdapter()
