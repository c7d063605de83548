"""HMR 2.0 configuration: the released model's values by default (``model_config.yaml`` of
``hmr2_data.tar.gz``, experiment ``hmr_vit_transformer``), and the mapping from that yacs config.

The official backbone constructor fixes the ViT-H sizes in code (it reads nothing from the config);
the SMPL head reads ``MODEL.SMPL_HEAD.TRANSFORMER_DECODER`` (token width ``dim`` 1024 unless given).
The camera translation uses ``EXTRA.FOCAL_LENGTH`` at ``MODEL.IMAGE_SIZE``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping

from hmr_trt.errors import ConfigError

ATTENTION_FORMS = ("matmul", "sdpa")


@dataclass(frozen=True)
class Hmr2Config:
    image_size: int = 256  # square crop side; the backbone sees its middle image_size * 3 / 4 columns
    patch: int = 16
    embed_dim: int = 1280  # ViT-H
    depth: int = 32
    heads: int = 16
    mlp_ratio: int = 4
    token_dim: int = 1024  # the head's query token width (WHAM/GVHMR read this token)
    head_depth: int = 6
    head_heads: int = 8
    head_dim_head: int = 64
    head_mlp: int = 1024
    num_body_joints: int = 23
    ief_iters: int = 1
    focal_length: float = 5000.0
    # How attention is written for export: "matmul" (the official einsum-free MatMul/Softmax/MatMul) or
    # "sdpa" (torch's scaled_dot_product_attention; same math). TensorRT fuses either MHA pattern.
    attention: str = "matmul"
    seed: int = 0  # seeds the default (untrained) weights

    def __post_init__(self) -> None:
        problems = []
        if self.image_size % (4 * self.patch):
            problems.append(f"image_size={self.image_size} (expected a multiple of 4 * patch)")
        if self.embed_dim % self.heads:
            problems.append(f"embed_dim={self.embed_dim} is not a multiple of heads={self.heads}")
        for name in ("depth", "heads", "head_depth", "head_heads", "head_dim_head", "head_mlp", "token_dim", "ief_iters"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} (expected >= 1)")
        if self.attention not in ATTENTION_FORMS:
            problems.append(f"attention={self.attention!r} (expected one of {', '.join(ATTENTION_FORMS)})")
        if problems:
            raise ConfigError("hmr2 config: " + "; ".join(problems))

    @property
    def width(self) -> int:
        """Columns of the crop the backbone sees (192 of 256: the official ``x[..., 32:-32]``)."""
        return self.image_size * 3 // 4

    @property
    def grid(self) -> tuple:
        """Token grid (rows, columns): (16, 12) for 256x192 with patch 16 and the patch conv's padding 2."""
        pad = self.patch // 8
        return ((self.image_size + 2 * pad - self.patch) // self.patch + 1,
                (self.width + 2 * pad - self.patch) // self.patch + 1)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Hmr2Config:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"hmr2 config: unknown keys {unknown}")
        return cls(**dict(d))


def config_from_official(model_cfg: Mapping[str, Any], where: str) -> Dict[str, Any]:
    """The fields of Hmr2Config an official config (``model_config.yaml`` or the checkpoint's
    ``hyper_parameters.cfg``, as nested dicts) sets; anything this code does not implement is an error
    naming ``where``."""
    def get(path: str, default: Any = None) -> Any:
        node: Any = model_cfg
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    problems = []
    if get("MODEL.BACKBONE.TYPE") != "vit":
        problems.append(f"MODEL.BACKBONE.TYPE is {get('MODEL.BACKBONE.TYPE')!r}, not 'vit'")
    if get("MODEL.SMPL_HEAD.TYPE") != "transformer_decoder":
        problems.append(f"MODEL.SMPL_HEAD.TYPE is {get('MODEL.SMPL_HEAD.TYPE')!r}, not 'transformer_decoder'")
    if get("MODEL.SMPL_HEAD.JOINT_REP", "6d") != "6d":
        problems.append(f"MODEL.SMPL_HEAD.JOINT_REP is {get('MODEL.SMPL_HEAD.JOINT_REP')!r}, not '6d'")
    if get("MODEL.SMPL_HEAD.TRANSFORMER_INPUT", "zero") != "zero":
        problems.append("MODEL.SMPL_HEAD.TRANSFORMER_INPUT is not 'zero' (the released models' zero token)")
    dec = get("MODEL.SMPL_HEAD.TRANSFORMER_DECODER", {}) or {}
    if dec.get("norm", "layer") != "layer":
        problems.append(f"TRANSFORMER_DECODER.norm is {dec.get('norm')!r}, not 'layer'")
    if dec.get("skip_token_embedding", False):
        problems.append("TRANSFORMER_DECODER.skip_token_embedding is set (the released models embed the token)")
    bbox = get("MODEL.BBOX_SHAPE")
    if bbox is not None and list(bbox) != [192, 256]:
        problems.append(f"MODEL.BBOX_SHAPE is {list(bbox)}, not [192, 256]")
    if problems:
        raise ConfigError(f"hmr2: {where}: " + "; ".join(problems))
    fields: Dict[str, Any] = {"image_size": int(get("MODEL.IMAGE_SIZE", 256)),
                              "focal_length": float(get("EXTRA.FOCAL_LENGTH", 5000.0)),
                              "num_body_joints": int(get("SMPL.NUM_BODY_JOINTS", 23)),
                              "ief_iters": int(get("MODEL.SMPL_HEAD.IEF_ITERS", 1))}
    for key, field in (("depth", "head_depth"), ("heads", "head_heads"), ("dim_head", "head_dim_head"),
                       ("mlp_dim", "head_mlp"), ("dim", "token_dim"), ("context_dim", "embed_dim")):
        if key in dec:
            fields[field] = int(dec[key])
    return fields
