"""WHAM's two graphs written as ONNX (``init`` and ``step``), shapes as the contract declares them."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

from .adapter import ADAPTER
from .config import WHAMConfig
from .model import WHAM


def export_graphs(model: WHAM, folder: Path, max_batch: int = 16, exporter: str = "torchscript") -> Dict[str, Path]:
    """-> {"init": path, "step": path} in ``folder``."""
    from hmr_trt.export.onnx_export import onnx_from_module

    cfg: WHAMConfig = model.cfg
    contract = ADAPTER.contract_for(cfg)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("init", "step"):
        path = folder / f"{name}.onnx"
        onnx_from_module(ADAPTER.exportable(model, name), contract.graph(name), ADAPTER.example_inputs(cfg, name, 2),
                         path, exporter=exporter, max_batch=max_batch, metadata={"model": "wham"})
        paths[name] = path
    return paths
