"""ViTPose configuration: the ``ViTPose_huge_coco_256x192`` config's values by default (the model WHAM's demo
runs). The backbone fields mean what HMR 2.0's mean (``export/models/hmr2/config.py``): the two share one ViT
code (``export/models/hmr2/model.py``), which reads ``image_size``, ``width``, ``patch``, ``embed_dim``,
``depth``, ``heads``, ``mlp_ratio`` and ``attention``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping

from hmr_trt.errors import ConfigError

from ..hmr2.config import ATTENTION_FORMS


@dataclass(frozen=True)
class VitPoseConfig:
    image_size: int = 256  # crop height; the crop is image_size x image_size * 3 / 4 (256 x 192)
    patch: int = 16
    embed_dim: int = 1280  # ViT-H
    depth: int = 32
    heads: int = 16
    mlp_ratio: int = 4
    deconv_layers: int = 2  # the head: 2 x (4x4 stride-2 transposed conv, BatchNorm, ReLU), then a 1x1 conv
    deconv_filters: int = 256
    keypoints: int = 17  # COCO
    # The official test: the horizontally flipped crop's heatmaps, flipped back with left/right swapped, averaged
    # with the plain ones (test_cfg flip_test, which WHAM's demo keeps). Inside the graph: one call, 2N crops.
    flip_test: bool = True
    attention: str = "matmul"  # as HMR 2.0's: "matmul" (the official form) or "sdpa"
    seed: int = 0  # seeds the default (untrained) weights

    def __post_init__(self) -> None:
        problems = []
        if self.image_size % (4 * self.patch):
            problems.append(f"image_size={self.image_size} (expected a multiple of 4 * patch)")
        if self.embed_dim % self.heads:
            problems.append(f"embed_dim={self.embed_dim} is not a multiple of heads={self.heads}")
        for name in ("depth", "heads", "deconv_filters", "keypoints"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} (expected >= 1)")
        if self.deconv_layers < 0:
            problems.append(f"deconv_layers={self.deconv_layers} (expected >= 0)")
        if self.attention not in ATTENTION_FORMS:
            problems.append(f"attention={self.attention!r} (expected one of {', '.join(ATTENTION_FORMS)})")
        if self.flip_test and self.keypoints != 17:
            problems.append(f"flip_test with keypoints={self.keypoints} (the flip pairs are COCO's 17)")
        if problems:
            raise ConfigError("vitpose config: " + "; ".join(problems))

    @property
    def width(self) -> int:
        """Crop columns (192 of a 256-row crop)."""
        return self.image_size * 3 // 4

    @property
    def heatmap_size(self) -> tuple:
        """(rows, columns) of the heatmaps: the token grid doubled per deconvolution (64 x 48)."""
        scale = 2 ** self.deconv_layers
        return (self.image_size // self.patch * scale, self.width // self.patch * scale)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VitPoseConfig:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"vitpose config: unknown keys {unknown}")
        return cls(**dict(d))
