"""coseg's temporal graph straight from a ``CosegNet`` (tests and tools that hold a coseg module; the export
job itself goes through the adapter)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hmr_trt.errors import ConfigError
from hmr_trt.manifest import TensorSpec
from hmr_trt.profile import ShapeProfile

from ...onnx_export import onnx_from_module


def export_temporal(model: torch.nn.Module, path: str | Path, profile: ShapeProfile, exporter: str = "torchscript",
                    metadata: dict[str, Any] | None = None) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The temporal graph of a ``CosegNet`` with its FDE in matrix form (no DFT, no complex tensors)."""
    from .adapter import ADAPTER as adapter

    cfg = model.cfg
    if cfg.fde_mode != "matrix":
        raise ConfigError("export the temporal model with fde_mode='matrix' (see export/models/coseg/fde.py)")
    spec = adapter.contract_for(cfg).graph("temporal")
    example = adapter.example_inputs(cfg, "temporal", max(2, min(profile.opt, 4)))  # batch > 1: no axis fixed to 1
    meta = {"model": "coseg", "config": cfg.to_dict(), "profile": profile.to_dict(), **(metadata or {})}
    return onnx_from_module(model, spec, example, path, exporter=exporter, max_batch=profile.max, metadata=meta)
