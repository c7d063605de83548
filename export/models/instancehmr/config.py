"""Configuration of the instance-aware network (released values by default: configs/eval_*_resnet.yml)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Mapping, Tuple

from hmr_trt.errors import ConfigError

CAM_DIM = 3  # weak-perspective camera (raw scale, tx, ty): the first three channels of ROMP's params map
# The released code's parameter map: global_orient 6D + 21 body joints axis-angle + 10 betas = 79.
PARAMS_RELEASED = 6 + 21 * 3 + 10
PARAMS_PAPER = 142  # the paper's width (Table 1): 22 x 6D + 10 betas
JOINTS = 24  # joint heatmaps


@dataclass(frozen=True)
class InstanceHMRConfig:
    image_size: int = 512  # padded square input side (B, image_size, image_size, 3), 0-255 RGB
    resnet_width: int = 64  # ResNet-50 stem width (64 released; tiny configs shrink it)
    resnet_layers: Tuple[int, ...] = (3, 4, 6, 3)  # Bottleneck blocks per stage
    deconv_filters: Tuple[int, ...] = (256, 128, 64)  # three stride-2 deconvs; the last is the feature width
    head_channels: int = 64  # NUM_CHANNELS of the map heads
    head_block_num: int = 2  # BasicBlocks per map head (eval configs: 2)
    id_channels: int = 64  # width of the center/joint instance maps (and their positional encoding)
    params_dim: int = PARAMS_RELEASED  # parameter-map channels after the camera (79 released, 142 paper)
    conf_thresh: float = 0.2  # centermap_conf_thresh of the eval configs
    max_person: int = 64  # top-k of the center map
    seed: int = 0  # seeded default initialisation
    residual_gain: float = 0.2  # seeded: scale of each residual branch's last BN (smaller: less round-off growth)
    output_std: float = 0.3  # seeded final 1x1 convs: std of each map's values, so the maps move with the image
    trained_like: bool = True  # seeded: shaped like a trained network (model.shape_like_trained); False: plain draw

    def __post_init__(self) -> None:
        if self.image_size < 64 or self.image_size % 32:
            raise ConfigError(f"instancehmr: image_size must be a multiple of 32 >= 64, got {self.image_size}")
        if len(self.resnet_layers) != 4 or min(self.resnet_layers) < 1:
            raise ConfigError(f"instancehmr: resnet_layers must be 4 positive counts, got {self.resnet_layers}")
        if len(self.deconv_filters) != 3:
            raise ConfigError(f"instancehmr: deconv_filters must hold 3 widths, got {self.deconv_filters}")
        if self.params_dim not in (PARAMS_RELEASED, PARAMS_PAPER):
            raise ConfigError(f"instancehmr: params_dim must be {PARAMS_RELEASED} (released code) or "
                              f"{PARAMS_PAPER} (paper), got {self.params_dim}")
        if not 0.0 < self.conf_thresh < 1.0:
            raise ConfigError(f"instancehmr: conf_thresh must be in (0, 1), got {self.conf_thresh}")
        if self.id_channels % 4:
            raise ConfigError(f"instancehmr: id_channels must be a multiple of 4, got {self.id_channels}")
        if self.max_person < 1 or self.head_block_num < 1:
            raise ConfigError("instancehmr: max_person and head_block_num must be >= 1")

    @property
    def feature_size(self) -> int:
        """Side of the backbone's feature map (stride 32, then three x2 deconvs: image / 4)."""
        return self.image_size // 4

    @property
    def map_size(self) -> int:
        """Side of the output maps (heads downsample the features by 2: centermap_size 64 at 512)."""
        return self.image_size // 8

    @property
    def backbone_channels(self) -> int:
        return self.deconv_filters[-1]

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["resnet_layers"], d["deconv_filters"] = list(self.resnet_layers), list(self.deconv_filters)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InstanceHMRConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"instancehmr config: unknown keys {unknown}; expected some of {sorted(known)}")
        d = dict(d)
        for key in ("resnet_layers", "deconv_filters"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)
