"""Reading the released HMR 2.0 checkpoints without executing pickled code.

The released files (``epoch=35-step=1000000.ckpt`` of HMR 2.0b, ``hmr2a.ckpt`` that WHAM loads) are
PyTorch Lightning checkpoints: ``state_dict`` (the network, plus the training-only discriminator and
the SMPL body-model buffers), ``optimizer_states``, loop and callback progress, and
``hyper_parameters`` holding the training config as a yacs ``CfgNode`` (a pickled class, which
``torch.load(weights_only=True)`` refuses, and whose items its unpickler cannot set: it fills plain dicts
only). The file is read by ``torch.load`` with a restricted unpickler instead: ``find_class`` resolves
exactly the globals of torch's own weights-only allow-list, numpy's scalar and dtypes, and
``yacs.config.CfgNode`` to ``ConfigNode`` (a dict subclass with no behaviour); any other global in the
pickle is refused before anything is built, so no pickled code runs. Keys of the other parts are
dropped by name (``DROPPED_PREFIXES``), the rest is matched strictly.

The config comes from ``model_config.yaml`` beside the checkpoint or two folders above it (the
official layout ``logs/train/multiruns/hmr2/0/{model_config.yaml, checkpoints/*.ckpt}``), else from
the checkpoint's ``hyper_parameters``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch

from hmr_trt.errors import CheckpointError, ConfigError
from hmr_trt.export.models.checkpoint import _numpy_safe_globals, summarise

from .config import config_from_official

# state-dict entries of the Lightning module that are not the network: the adversarial discriminator,
# the SMPL layer's buffers (the pipeline's body-model graph replaces it) and the ActNorm flag
DROPPED_PREFIXES = ("discriminator.", "smpl.", "keypoint_3d_loss.", "keypoint_2d_loss.", "smpl_parameter_loss.")
DROPPED_KEYS = ("initialized",)
NETWORK_PREFIXES = ("backbone.", "smpl_head.")
CONFIG_NAME = "model_config.yaml"


class ConfigNode(dict):
    """Stand-in for yacs' ``CfgNode`` while unpickling: the items and the attributes, nothing else."""


def _allowed_globals() -> Dict[str, Any]:
    """"module.name" -> object for every global the restricted unpickler resolves."""
    from torch import _weights_only_unpickler as wou

    allowed = dict(wou._get_allowed_globals())
    for entry in _numpy_safe_globals():
        obj, name = entry if isinstance(entry, tuple) else (entry, f"{entry.__module__}.{entry.__name__}")
        allowed[name] = obj
    allowed["yacs.config.CfgNode"] = ConfigNode
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    allowed: Dict[str, Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        import _compat_pickle

        if module in ("__builtin__", "copy_reg"):  # Python 2 names (protocol 2 pickles write builtins so)
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = f"{module}.{name}"
        if key not in self.allowed:
            raise pickle.UnpicklingError(f"refused global {key} (not tensor data, a numpy scalar or a yacs config)")
        return self.allowed[key]


class _PickleModule:
    """The ``pickle_module`` torch.load uses: the restricted unpickler, nothing else."""

    Unpickler = _RestrictedUnpickler

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return _RestrictedUnpickler(file, **kwargs).load()


def read_lightning_file(path: Union[str, Path]) -> Dict[str, Any]:
    """The checkpoint dict, weights only (numpy scalars and yacs config nodes as plain data)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"hmr2: checkpoint not found: {path}")
    try:
        _RestrictedUnpickler.allowed = _allowed_globals()
        raw = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_PickleModule,
                         mmap=_is_zip(path))
    except Exception as exc:  # truncated zip, refused global, not a torch file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"hmr2: cannot read checkpoint {path} as weights only: {type(exc).__name__}: "
                              f"{first}") from exc
    if not isinstance(raw, Mapping) or not isinstance(raw.get("state_dict"), Mapping):
        found = sorted(map(str, raw))[:8] if isinstance(raw, Mapping) else type(raw).__name__
        raise CheckpointError(f"hmr2: {path} is not a PyTorch Lightning checkpoint of HMR 2.0: no state_dict "
                              f"(found: {found}); pass epoch=35-step=1000000.ckpt or hmr2a.ckpt")
    return dict(raw)


def _is_zip(path: Path) -> bool:
    import zipfile

    return zipfile.is_zipfile(path)


def _plain(node: Any) -> Any:
    """ConfigNode trees -> plain dicts (lists and scalars as they are)."""
    if isinstance(node, Mapping):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    return node


def find_config(path: Path, raw: Mapping[str, Any]) -> Tuple[Dict[str, Any], str]:
    """(official config as nested dicts, where it came from)."""
    import yaml

    for candidate in (path.parent / CONFIG_NAME, path.parent.parent / CONFIG_NAME):
        if candidate.is_file():
            try:
                cfg = yaml.safe_load(candidate.read_text())
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError(f"hmr2: {candidate}: not a readable YAML config: {type(exc).__name__}") from exc
            if not isinstance(cfg, Mapping):
                raise ConfigError(f"hmr2: {candidate}: not a config (a YAML mapping with MODEL, SMPL, EXTRA)")
            return _plain(cfg), str(candidate)
    hp = raw.get("hyper_parameters")
    if isinstance(hp, Mapping) and isinstance(hp.get("cfg"), Mapping):
        return _plain(hp["cfg"]), f"{path} (hyper_parameters.cfg)"
    raise ConfigError(f"hmr2: {path}: no {CONFIG_NAME} beside it or two folders above it, and the checkpoint "
                      "holds no config (hyper_parameters.cfg); put the released model_config.yaml beside it")


def network_state(raw: Mapping[str, Any], path: Path) -> Dict[str, torch.Tensor]:
    """``state_dict`` minus the parts that are not the network (dropped by name); anything unknown is kept
    so that the strict match names it."""
    state = raw["state_dict"]
    kept = {k: v for k, v in state.items()
            if not (k.startswith(DROPPED_PREFIXES) or k in DROPPED_KEYS)}
    if not any(k.startswith(NETWORK_PREFIXES) for k in kept):
        raise CheckpointError(f"hmr2: {path} holds no HMR 2.0 network (no backbone.* or smpl_head.* keys; "
                              f"found: {summarise(sorted(map(str, state)))})")
    bad = [k for k, v in kept.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"hmr2: {path}: state_dict entries that are not tensors: {summarise(bad)}")
    return kept


def read_checkpoint(path: Union[str, Path]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any], str]:
    """(network state dict, Hmr2Config fields the file's config sets, where the config came from)."""
    path = Path(path)
    raw = read_lightning_file(path)
    state = network_state(raw, path)
    official, where = find_config(path, raw)
    return state, config_from_official(official, where), where


def check_config(fields: Mapping[str, Any], cfg: Any, path: Path, where: str, extra: Optional[str] = None) -> None:
    """The checkpoint's config must describe the model being built: one error naming every difference."""
    diffs = [f"{k} {v} (this export: {getattr(cfg, k)})" for k, v in fields.items() if getattr(cfg, k) != v]
    if diffs:
        raise CheckpointError(f"hmr2: checkpoint {path} is an HMR 2.0 variant this export does not build: "
                              f"{', '.join(diffs)} (config: {where})" + (f"; {extra}" if extra else ""))
