"""Reading the released ViTPose checkpoint (``vitpose-h-multi-coco.pth``) without executing pickled code.

The file is what mmcv's ``save_checkpoint`` writes: ``{"meta": {...}, "state_dict": {...}}`` (sometimes an
``optimizer`` beside), read with torch's weights-only unpickler (plus numpy scalars). The multi-dataset
checkpoints split by the official ``tools/model_split.py`` keep parts the COCO model does not use: the
other datasets' heads (``associate_keypoint_heads.*``) and the backbone's per-dataset MLP experts
(``backbone.blocks.N.mlp.experts.*``; their COCO part is already concatenated into ``mlp.fc2``); mmcv's
``load_checkpoint`` skips them (non-strict), here they are dropped by name and the rest is matched
strictly. The sizes are checked before the model is built: another model's file, or another ViTPose
size, is one error naming the file and what differs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Union

import torch

from hmr_trt.errors import CheckpointError
from hmr_trt.export.models.checkpoint import load_torch_file, state_dict_from, summarise

DROPPED = (re.compile(r"^associate_keypoint_heads\."), re.compile(r"^backbone\.blocks\.\d+\.mlp\.experts\."))
NETWORK_PREFIXES = ("backbone.", "keypoint_head.")


def read_checkpoint(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """The COCO network's state dict (``backbone.*``, ``keypoint_head.*``) of a released mmpose checkpoint."""
    raw = load_torch_file(path, "vitpose")
    state = state_dict_from(raw, path, "vitpose", keys=("state_dict",))
    if state and all(k.startswith("module.") for k in state):  # saved from a DataParallel wrapper (mmcv strips it)
        state = {k[len("module."):]: v for k, v in state.items()}
    kept = {k: v for k, v in state.items() if not any(p.search(k) for p in DROPPED)}
    if not any(k.startswith(NETWORK_PREFIXES) for k in kept):
        raise CheckpointError(f"vitpose: {path} holds no ViTPose network (no backbone.* or keypoint_head.* keys; "
                              f"found: {summarise(sorted(map(str, state)))}); pass vitpose-h-multi-coco.pth")
    return kept


def sizes_of(state: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """The VitPoseConfig fields the state's shapes fix (those it holds)."""
    out: Dict[str, Any] = {}
    pos = state.get("backbone.pos_embed")
    if pos is not None and pos.dim() == 3:
        out["embed_dim"] = int(pos.shape[-1])
    blocks = {int(m.group(1)) for k in state for m in [re.match(r"backbone\.blocks\.(\d+)\.", k)] if m}
    if blocks:
        out["depth"] = max(blocks) + 1
    fc1 = state.get("backbone.blocks.0.mlp.fc1.weight")
    if fc1 is not None and "embed_dim" in out:
        out["mlp_ratio"] = int(fc1.shape[0]) // out["embed_dim"]
    proj = state.get("backbone.patch_embed.proj.weight")
    if proj is not None:
        out["patch"] = int(proj.shape[-1])
    final = state.get("keypoint_head.final_layer.weight")
    if final is not None:
        out["keypoints"] = int(final.shape[0])
    deconvs = sorted({int(m.group(1)) for k in state
                      for m in [re.match(r"keypoint_head\.deconv_layers\.(\d+)\.weight$", k)] if m} )
    convs = [i for i in deconvs if state[f"keypoint_head.deconv_layers.{i}.weight"].dim() == 4]
    if convs:
        out["deconv_layers"] = len(convs)
        out["deconv_filters"] = int(state[f"keypoint_head.deconv_layers.{convs[0]}.weight"].shape[1])
    return out


def check_sizes(state: Dict[str, torch.Tensor], cfg: Any, path: Union[str, Path]) -> None:
    """The file's sizes must be this export's: one error naming every difference."""
    diffs: List[str] = [f"{k} {v} (this export: {getattr(cfg, k)})" for k, v in sizes_of(state).items()
                        if getattr(cfg, k) != v]
    pos = state.get("backbone.pos_embed")
    tokens = (cfg.image_size // cfg.patch) * (cfg.width // cfg.patch) + 1
    if pos is not None and pos.dim() == 3 and int(pos.shape[1]) != tokens:
        diffs.append(f"{int(pos.shape[1])} position embeddings (this export: {tokens}, a "
                     f"{cfg.image_size}x{cfg.width} crop)")
    if diffs:
        raise CheckpointError(f"vitpose: checkpoint {path} is a ViTPose this export does not build: {', '.join(diffs)}")
