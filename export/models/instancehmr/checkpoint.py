"""Loading the released checkpoint as released.

``save_single_model`` of the released trainer writes ``{'model_state_dict': {'module.' + key: tensor},
'optimizer_state_dict', 'scaler_state_dict'}`` with ``torch.save`` (file name ``.pkl``). The state dict
also holds the SMPL layer's buffers under ``_result_parser.params_map_parser.smpl_model.``: hmr-trt
runs its own body_model graph, so those (and only those) are set aside. The parameter-map width is read
from ``params_outconv.weight`` (79 released code, 142 paper). Every other key must match exactly: a
file without the ``module.`` prefix, another model's or another config's checkpoint is refused with one
line, never loaded partially.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, Tuple

import torch

from hmr_trt.errors import CheckpointError

from ..checkpoint import load_torch_file, match_state_dict, state_dict_from
from .config import PARAMS_PAPER, PARAMS_RELEASED, InstanceHMRConfig

NAME = "instancehmr"
PREFIX = "module."
SMPL_PREFIX = "_result_parser."  # the released SMPL layer's buffers (replaced by hmr-trt's body model)


def released_state(path: str | Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """(network state without the prefix, the SMPL buffers set aside) of the released file at ``path``."""
    raw = load_torch_file(path, NAME)
    state = state_dict_from(raw, path, NAME, keys=("model_state_dict",))
    unprefixed = sorted(k for k in state if not k.startswith(PREFIX))
    if unprefixed:
        raise CheckpointError(f"{NAME}: {path} is not a released checkpoint: {len(unprefixed)} of {len(state)} keys "
                              f"lack the DataParallel prefix {PREFIX!r} (e.g. {unprefixed[0]!r}); pass the file "
                              f"saved by the official trainer (model_state_dict with 'module.' keys)")
    state = {k[len(PREFIX):]: v for k, v in state.items()}
    smpl = {k: v for k, v in state.items() if k.startswith(SMPL_PREFIX)}
    return {k: v for k, v in state.items() if not k.startswith(SMPL_PREFIX)}, smpl


def config_for_checkpoint(cfg: InstanceHMRConfig, state: Dict[str, torch.Tensor], path: str | Path) -> InstanceHMRConfig:
    """``cfg`` with the parameter-map width of the checkpoint (79 or 142)."""
    weight = state.get("params_outconv.weight")
    if weight is None:
        raise CheckpointError(f"{NAME}: {path} has no params_outconv.weight: not an instance-aware network "
                              f"checkpoint (first keys: {sorted(state)[:4]})")
    width = int(weight.shape[0])
    if width not in (PARAMS_RELEASED, PARAMS_PAPER):
        raise CheckpointError(f"{NAME}: {path} has a parameter map of {width} channels; expected "
                              f"{PARAMS_RELEASED} (released code) or {PARAMS_PAPER} (paper)")
    return dataclasses.replace(cfg, params_dim=width)


def load_released(model: torch.nn.Module, state: Dict[str, torch.Tensor], path: str | Path) -> None:
    match_state_dict(model, state, path, NAME)


def write_released(path: str | Path, state: Dict[str, torch.Tensor],
                   smpl: Dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``state`` the way the released trainer does (for fixtures and tests): DataParallel keys
    under ``model_state_dict`` next to optimizer and scaler states, plus SMPL buffers if given."""
    sd = {PREFIX + k: v for k, v in state.items()}
    sd.update({PREFIX + SMPL_PREFIX + k: v for k, v in (smpl or {}).items()})
    torch.save({"model_state_dict": sd, "optimizer_state_dict": {"state": {}, "param_groups": []},
                "scaler_state_dict": {}}, path)
    return Path(path)


@torch.no_grad()
def random_state(module: torch.nn.Module, seed: int) -> Dict[str, torch.Tensor]:
    """A seeded state dict for ``module`` with every tensor random (BN statistics included), cheap to
    rebuild: the official-parity fixture's checkpoint. Weights are scaled by fan-in so that the 50 layers
    stay finite; BN variances are positive."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, ref in module.state_dict().items():
        if not ref.is_floating_point():
            out[key] = ref.clone()
        elif key.endswith("running_var"):
            out[key] = torch.rand(ref.shape, generator=gen) + 0.5
        elif key.endswith(("running_mean", "bias")):
            out[key] = torch.randn(ref.shape, generator=gen) * 0.1
        elif ref.dim() == 1:  # BN weight
            out[key] = torch.rand(ref.shape, generator=gen) * 0.5 + 0.5
        else:
            fan_in = ref[0].numel() if "deconv" not in key else ref.shape[0] * ref[0, 0].numel() / 4
            out[key] = torch.randn(ref.shape, generator=gen) / fan_in ** 0.5
    return out
