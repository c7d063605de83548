"""The model registry: model name -> the folder that holds its contract and its torch code.

Adding a model is a folder ``export/models/<name>/`` (``contract.py`` torch-free with ``CONTRACT``;
``adapter.py`` with the torch side) and one line here. ``contract(name)`` imports only the
torch-free contract module, so the engine builder and the runtime may call it; they normally read
the contract from ``manifest.json`` instead.
"""

from __future__ import annotations

import importlib
from typing import Any, Tuple

from .contract import ModelContract
from .errors import ConfigError

DEFAULT_MODEL = "coseg"

# name -> package of its folder (installed as hmr_trt.export.models.<name>)
MODELS = {
    "coseg": "hmr_trt.export.models.coseg",
    "glot": "hmr_trt.export.models.glot",
    "tcmr": "hmr_trt.export.models.tcmr",
    "mpsnet": "hmr_trt.export.models.mpsnet",
    "vibe": "hmr_trt.export.models.vibe",
    "decomr": "hmr_trt.export.models.decomr",
    "instancehmr": "hmr_trt.export.models.instancehmr",
    "hmr2": "hmr_trt.export.models.hmr2",
    "vitpose": "hmr_trt.export.models.vitpose",
    "wham": "hmr_trt.export.models.wham",
}


def names() -> Tuple[str, ...]:
    return tuple(MODELS)


def _package(name: str) -> str:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; registered: {', '.join(MODELS)}")
    return MODELS[name]


def contract(name: str) -> ModelContract:
    """The registered contract of ``name`` (torch-free)."""
    return importlib.import_module(_package(name) + ".contract").CONTRACT


def adapter(name: str) -> Any:
    """The torch side of ``name`` (imports torch): reference model, checkpoint loader, export wrappers."""
    return importlib.import_module(_package(name) + ".adapter").ADAPTER
