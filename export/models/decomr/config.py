"""DecoMR configuration: the released model's values by default (``h36m_up3d.pt``'s config.json)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Tuple

from hmr_trt.errors import ConfigError

SCATTER_FORMS = ("index_add", "scatter", "dense")


@dataclass(frozen=True)
class DecomrConfig:
    img_res: int = 224  # crop side; the IUV image is img_res / 2**warp_level
    uv_res: int = 128  # side of the output UV location map (official: 128 or 256)
    uv_type: str = "BF"  # boundary-free UV layout (the released model)
    uv_channels: int = 64  # decoder width at uv_res
    warp_level: int = 2  # ResNet level whose features are warped to UV space (2: 256 ch at 56x56)
    norm_type: str = "GN"  # GroupNorm in every ConvBottleNeck (released); "BN" exists in the paper's ablation
    resnet_layers: Tuple[int, ...] = (3, 4, 6, 3)  # ResNet-50
    resnet_width: int = 64  # planes of layer1; ResNet-50's channel list is 3, 64, 256, 512, 1024, 2048
    global_dim: int = 256  # fc_head output broadcast over the UV grid
    # How LNet's image->UV scatter is computed: "index_add" (eager, as the official code),
    # "scatter" (ScatterElements, reduction=add) or "dense" (one-hot by Equal + MatMul).
    scatter: str = "index_add"
    seed: int = 0  # seeds the default (untrained) weights
    head_gain: float = 4.0  # seeded defaults only: gain of the IUV and location-map heads
    trained_like: bool = True  # seeded: shaped like a trained network (model.shape_like_trained); False: plain draw

    def __post_init__(self) -> None:
        problems = []
        if self.warp_level not in (1, 2, 3):
            problems.append(f"warp_level={self.warp_level} (expected 1, 2 or 3)")
        if self.img_res % (2 ** 5) != 0:
            problems.append(f"img_res={self.img_res} (expected a multiple of 32)")
        if self.uv_res not in (128, 256):
            problems.append(f"uv_res={self.uv_res} (expected 128 or 256)")
        if self.uv_type != "BF":
            problems.append(f"uv_type={self.uv_type!r} (only the boundary-free 'BF' layout is supported)")
        if self.norm_type != "GN":
            problems.append(f"norm_type={self.norm_type!r} (the released model uses 'GN')")
        if len(self.resnet_layers) != 4 or min(self.resnet_layers) < 1:
            problems.append(f"resnet_layers={self.resnet_layers} (expected four block counts >= 1)")
        if self.resnet_width < 8 or self.resnet_width % 8:
            problems.append(f"resnet_width={self.resnet_width} (expected a multiple of 8)")
        if self.uv_channels < 16 or self.uv_channels % 16:
            problems.append(f"uv_channels={self.uv_channels} (expected a multiple of 16)")
        if self.scatter not in SCATTER_FORMS:
            problems.append(f"scatter={self.scatter!r} (expected one of {', '.join(SCATTER_FORMS)})")
        if problems:
            raise ConfigError("decomr config: " + "; ".join(problems))

    @property
    def channels(self) -> Tuple[int, ...]:
        """Channels at each ResNet level: [224, 112, 56, 28, 14, 7] px -> [3, 64, 256, 512, 1024, 2048]."""
        w = self.resnet_width
        return (3, w, 4 * w, 8 * w, 16 * w, 32 * w)

    @property
    def warp_res(self) -> int:
        """Side of the UV grid the image features are scattered into (64 for warp_level 2)."""
        return 256 // (2 ** self.warp_level)

    @property
    def dp_res(self) -> int:
        """Side of the IUV image (56 for a 224 crop at warp_level 2)."""
        return self.img_res // (2 ** self.warp_level)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["resnet_layers"] = list(self.resnet_layers)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DecomrConfig:
        d = dict(d)
        if "resnet_layers" in d:
            d["resnet_layers"] = tuple(d["resnet_layers"])
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"decomr config: unknown keys {unknown}")
        return cls(**d)
