"""MPS-Net's torch side for the export job (see export/models/adapter.py)."""

from __future__ import annotations

from ..temporal import WindowAdapter
from .config import MPSNetConfig
from .contract import CONTRACT
from .model import MPSNet


class MPSNetAdapter(WindowAdapter):
    name = "mpsnet"
    contract = CONTRACT
    Config = MPSNetConfig
    Model = MPSNet
    tiny = {"feature_dim": 32, "attention_hidden": 8, "regressor_hidden": 32}


ADAPTER = MPSNetAdapter()
