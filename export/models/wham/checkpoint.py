"""Reading the released WHAM checkpoints (``wham_vit_w_3dpw.pth.tar``, ``wham_vit_bedlam_w_3dpw.pth.tar``)
without executing pickled code.

The files are ``lib/core/trainer.py``'s save dicts: ``epoch``, ``model`` (the network's state dict,
including its SMPL layer's buffers), ``performance`` and ``optimizer``. They are read with
``torch.load(weights_only=True)`` (plus numpy scalars, ``export/models/checkpoint.py``), so a pickle
that tries to run code is refused. The official ``build_network`` drops the keys in
``OFFICIAL_IGNORED`` and loads the rest non-strictly; here the SMPL layer's parameters and buffers
that the forward never reads (``UNUSED_SMPL``) are dropped too and everything else must match
exactly, names and shapes: a checkpoint of another model, or of another size, is one error listing
what differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Union

import torch

from hmr_trt.errors import CheckpointError

from ..checkpoint import load_torch_file, match_state_dict, state_dict_from
from .config import WHAMConfig

OFFICIAL_IGNORED = ("smpl.body_pose", "smpl.betas", "smpl.global_orient", "smpl.J_regressor_extra",
                    "smpl.J_regressor_eval")
UNUSED_SMPL = ("smpl.faces_tensor", "smpl.vertex_joint_selector.extra_joints_idxs")


def read_state(path: Union[str, Path], keep_faces: bool = False) -> Dict[str, torch.Tensor]:
    """The ``model`` state dict of a released file, the unused SMPL entries dropped (``keep_faces``: the
    triangles kept, for the body-model graph's renders)."""
    raw = load_torch_file(path, "wham")
    if not isinstance(raw, dict) or "model" not in raw:
        found = sorted(raw)[:8] if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(f"wham: {path} is not a WHAM checkpoint: it has no 'model' state dict (found: {found})")
    state = state_dict_from(raw, path, "wham", keys=("model",))
    drop = OFFICIAL_IGNORED + tuple(k for k in UNUSED_SMPL if not (keep_faces and k == "smpl.faces_tensor"))
    return {k: v for k, v in state.items() if k not in drop}


def config_for(state: Dict[str, torch.Tensor], base: WHAMConfig) -> WHAMConfig:
    """``base`` with the body model's vertex count the checkpoint carries (the widths are checked by
    the strict match, not guessed)."""
    from dataclasses import replace

    verts = state.get("smpl.v_template")
    return replace(base, vertices=int(verts.shape[0])) if verts is not None and verts.dim() == 2 else base


def load_released(module: torch.nn.Module, path: Union[str, Path]) -> None:
    """Strict match of the released file's network and body buffers; the SMPL faces kept as ``module.faces``."""
    state = read_state(path, keep_faces=True)
    faces = state.pop("smpl.faces_tensor", None)
    module.faces = faces.numpy().astype("int64") if faces is not None else None
    match_state_dict(module, state, path, "wham")
    parents = state["smpl.parents"].tolist()
    from ...smpl_io import SMPL_PARENTS

    if [int(p) for p in parents[1:]] != list(SMPL_PARENTS[1:]):
        raise CheckpointError(f"wham: {path}: smpl.parents is not SMPL's kinematic tree: {parents}")
