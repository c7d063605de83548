"""Reading GLoT's released checkpoint (``table1_3dpw_weights.pth.tar``) strictly.

The file is the trainer's save dict; the model is under ``gen_state_dict`` with the official
parameter names. Besides GLoT's own weights it holds two copies of the SMPL body model that the
official modules carry as buffers (``regressor.smpl.*`` in HSCR, ``global_modeling.regressor.smpl.*``
in the SPIN regressor; smplx ``SMPL`` built with ``batch_size=64, create_transl=False`` plus the
SPIN wrapper's ``J_regressor_extra``). hmr-trt runs the body model as its own graph from the user's
SMPL file, so these keys must be present (by name and rank) and are then dropped; every other key
must match the model exactly (``match_state_dict``). Nothing is unpickled beyond tensors and numpy
scalars (``load_torch_file``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Tuple

import torch

from hmr_trt.errors import CheckpointError
from hmr_trt.export.models.checkpoint import load_torch_file, match_state_dict, state_dict_from, summarise

MODEL = "glot"
BODY_MODEL_PREFIXES = ("regressor.smpl.", "global_modeling.regressor.smpl.")

# smplx SMPL (batch_size 64, no transl) + J_regressor_extra: name -> shape for SMPL's 6890 vertices.
SMPL_BUFFERS: Dict[str, Tuple[int, ...]] = {
    "betas": (64, 10),
    "global_orient": (64, 3),
    "body_pose": (64, 69),
    "faces_tensor": (13776, 3),
    "v_template": (6890, 3),
    "shapedirs": (6890, 3, 10),
    "J_regressor": (24, 6890),
    "posedirs": (207, 20670),
    "parents": (24,),
    "lbs_weights": (6890, 24),
    "J_regressor_extra": (9, 6890),
    "vertex_joint_selector.extra_joints_idxs": (21,),
}
INTEGER_BUFFERS = ("faces_tensor", "parents", "vertex_joint_selector.extra_joints_idxs")


def body_model_keys() -> Dict[str, Tuple[int, ...]]:
    """The SMPL buffer keys of the released state dict (name -> SMPL's shape)."""
    return {prefix + name: shape for prefix in BODY_MODEL_PREFIXES for name, shape in SMPL_BUFFERS.items()}


def body_model_placeholders() -> Dict[str, torch.Tensor]:
    """Zero tensors under the body-model keys, for writing released-format test checkpoints."""
    return {key: torch.zeros(shape, dtype=torch.long if key.endswith(INTEGER_BUFFERS) else torch.float32)
            for key, shape in body_model_keys().items()}


def split_body_model(state: Mapping[str, torch.Tensor], path: str | Path) -> Dict[str, torch.Tensor]:
    """Check the body-model keys (names and ranks) and return the rest of ``state``."""
    expected = body_model_keys()
    is_body = [k for k in state if k.startswith(BODY_MODEL_PREFIXES)]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(is_body) - set(expected))
    wrong_rank = sorted(k for k in set(expected) & set(state) if state[k].dim() != len(expected[k]))
    model_state = {k: v for k, v in state.items() if not k.startswith(BODY_MODEL_PREFIXES)}
    if missing or unexpected or wrong_rank:
        parts = []
        if missing:
            parts.append(f"missing SMPL buffer keys ({len(missing)}): {summarise(missing)}")
        if unexpected:
            parts.append(f"unexpected SMPL buffer keys ({len(unexpected)}): {summarise(unexpected)}")
        if wrong_rank:
            parts.append(f"SMPL buffers of the wrong rank ({len(wrong_rank)}): " + summarise(
                [f"{k} {tuple(state[k].shape)} vs {expected[k]}" for k in wrong_rank]))
        raise CheckpointError(f"{MODEL}: checkpoint {path} is not a released GLoT state dict; " + "; ".join(parts)
                              + " (expected the trainer's gen_state_dict of sxl142/GLoT)")
    return model_state


def load_released(module: torch.nn.Module, path: str | Path) -> None:
    """Load ``table1_3dpw_weights.pth.tar`` (or a bare state dict) into ``module``, strictly."""
    raw = load_torch_file(path, MODEL)
    state = state_dict_from(raw, path, MODEL, keys=("gen_state_dict",))
    own = module.state_dict()
    model_state = {k: v for k, v in state.items() if not k.startswith(BODY_MODEL_PREFIXES)}
    # Another model's or another config's file: report its mismatch against the model first (the clearer
    # message), then the body-model keys.
    if set(model_state) != set(own) or any(tuple(own[k].shape) != tuple(v.shape) for k, v in model_state.items()):
        match_state_dict(module, model_state, path, MODEL)
    match_state_dict(module, split_body_model(state, path), path, MODEL)
