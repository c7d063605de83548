from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=1)
def _tiny():
    from hmr_trt.export.config import TINY
    from hmr_trt.export.model import build_model

    return build_model(TINY.with_(fde_mode="matrix")).eval(), TINY.feature_dim  # exportable FDE form


def tiny_window_model() -> tuple[torch.nn.Module, int]:
    """A small window model that emits all T frames (coseg's structure at tiny widths)."""
    return _tiny()
