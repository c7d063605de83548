"""TCMR's torch side for the export job (see export/models/adapter.py)."""

from __future__ import annotations

from ..temporal import WindowAdapter
from .config import TCMRConfig
from .contract import CONTRACT
from .model import TCMR


class TCMRAdapter(WindowAdapter):
    name = "tcmr"
    contract = CONTRACT
    Config = TCMRConfig
    Model = TCMR
    tiny = {"feature_dim": 32, "hidden": 16, "attention_hidden": 8, "regressor_hidden": 32}


ADAPTER = TCMRAdapter()
