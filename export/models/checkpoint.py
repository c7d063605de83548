"""Reading released checkpoints without executing pickled code, and matching them strictly.

Released files are trainer save dicts (``{"epoch", "gen_state_dict", "performance", ...}``) written by
PyTorch 1.x, sometimes in the pre-1.6 non-zip format; ``performance`` is a numpy float64 scalar.
``torch.load(weights_only=True)`` refuses that scalar; we allow-list exactly numpy's scalar
reconstructor and dtypes (under both numpy 1.x and 2.x module names) and nothing else, so a
pickle that tries to run code fails with a ``CheckpointError``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping

import numpy as np
import torch

from hmr_trt.errors import CheckpointError
from hmr_trt.fileio import path_problem


def _numpy_safe_globals() -> list:
    from numpy import dtypes

    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    allowed: list = [np.dtype, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar")]
    for name in dir(dtypes):  # numpy >= 1.25 pickles dtypes as numpy.dtypes.Float64DType etc.
        obj = getattr(dtypes, name)
        if isinstance(obj, type) and issubclass(obj, np.dtype):
            allowed.append(obj)
    return allowed


def load_torch_file(path: str | Path, model: str) -> Any:
    """``torch.load`` with weights only (plus numpy scalars); any failure names the model and the file and
    says what is wrong in words (``why_unreadable``)."""
    path = Path(path)
    problem = path_problem(path)
    if problem:
        raise CheckpointError(f"{model}: checkpoint not found: {path}" if problem == "not found" else
                              f"{model}: checkpoint {path}: {problem}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{model}: cannot read checkpoint {path}: it is empty (0 bytes): its download or copy "
                              "did not finish; fetch the released file again")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types: truncated zip, bad pickle, refused global
        raise CheckpointError(f"{model}: cannot read checkpoint {path} ({size} bytes): it {why_unreadable(exc)}") from exc


def why_unreadable(exc: BaseException) -> str:
    """What torch.load's failure means, in words, without torch's own advice to retry with
    ``weights_only=False`` (that would run whatever code the file carries)."""
    text = str(exc)
    refused = re.search(r"GLOBAL ([\w.]+)", text)
    if refused:
        return (f"holds Python objects besides tensors and numbers ({refused.group(1)}): hmr-trt reads checkpoints "
                "without executing pickled code, so it refuses this file. Released checkpoints hold weights only: "
                "check where this file came from, or save its state dict alone (torch.save(model.state_dict(), path))")
    truncated = ("central directory", "unexpected EOF", "Ran out of input", "file might be corrupted",
                 "truncated", "corrupted")
    if isinstance(exc, (EOFError, OSError)) or any(marker in text for marker in truncated):  # OSError: a seek past the end
        return ("is truncated or corrupt (it ends before the data it announces): its download or copy did not "
                "finish; fetch the released file again")
    unpickler = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    detail = unpickler.group(1).strip() if unpickler else (text.splitlines() or [""])[0]
    if "weights_only" in detail:  # torch's advice, not a reason
        detail = ""
    return (f"is not a PyTorch checkpoint torch.load can read ({type(exc).__name__}"
            f"{': ' + detail if detail else ''}): give the released .pth/.pth.tar/.pt file")


def state_dict_from(raw: Any, path: str | Path, model: str, keys: Iterable[str] = ("gen_state_dict",)) -> Dict[str, torch.Tensor]:
    """The state dict inside a loaded file: under the first of ``keys`` present, or the file itself."""
    state = raw
    if isinstance(raw, Mapping):
        for key in keys:
            if isinstance(raw.get(key), Mapping):
                state = raw[key]
                break
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = sorted(raw)[:8] if isinstance(raw, Mapping) else type(raw).__name__
        raise CheckpointError(f"{model}: {path} holds no state dict of tensors under {', '.join(keys)} "
                              f"(found: {found})")
    return dict(state)


def summarise(keys: list, limit: int = 6) -> str:
    shown = ", ".join(str(k) for k in keys[:limit])
    return shown + (f" ... and {len(keys) - limit} more" if len(keys) > limit else "")


def match_state_dict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, model: str) -> None:
    """Load ``state`` strictly: every key and shape must match, else one CheckpointError listing them."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {summarise(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {summarise(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): " + summarise(
                [f"{k} {tuple(state[k].shape)} vs expected {tuple(own[k].shape)}" for k in mismatched]))
        raise CheckpointError(f"{model}: checkpoint {path} does not match the {model} model; " + "; ".join(parts))
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
