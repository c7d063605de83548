"""WHAM's configuration: the official ``configs/yamls/model_base.yaml`` (``d_embed: 512``,
``n_layers: 3``, ``layer: LSTM``) with the ViT image feature (``IMG_FEAT_DIM['vit'] = 1024``: HMR 2.0's
token), the trajectory refiner's two LSTM layers and the integrator's 1024 hidden units as
``lib/models/wham.py`` and ``lib/models/layers/modules.py`` build them, and the demo's options
(``return_y_up=True``, tracks of at least ``MINIMUM_FRMAES = 30`` frames)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping

from hmr_trt.errors import ConfigError

N_JOINTS = 17  # COCO keypoints (configs/constants.py KEYPOINTS.NUM_JOINTS)
N_POSE = 24  # SMPL joints, 6D each
N_FEET = 4  # rows of J_regressor_feet
N_WHAM_JOINTS = 31  # rows of J_regressor_wham (17 COCO + 14 common)
MAIN_JOINTS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21)  # BMODEL.MAIN_JOINTS


@dataclass(frozen=True)
class WHAMConfig:
    d_embed: int = 512  # model_base.yaml d_embed
    n_layers: int = 3  # LSTM layers of the encoder and the two decoders
    refiner_layers: int = 2  # the trajectory refiner's LSTM layers (wham.py: n_layers=2)
    d_feat: int = 1024  # image feature per frame (HMR 2.0's ViT token)
    integrator_hidden: int = 1024  # Integrator hid_channel
    vertices: int = 6890  # body-model vertices (the checkpoint's smpl.* buffers decide when one is loaded)
    y_up: bool = True  # demo.py: return_y_up=True (world outputs rotated by pi about x)
    min_frames: int = 30  # lib/models/preproc/detector.py MINIMUM_FRMAES: shorter tracks are dropped
    seed: int = 0  # seeded default weights

    def __post_init__(self) -> None:
        for name in ("d_embed", "n_layers", "refiner_layers", "d_feat", "integrator_hidden", "vertices", "min_frames"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"wham config: {name} must be >= 1, got {getattr(self, name)}")

    @property
    def d_context(self) -> int:
        """Motion context width: the encoder's LSTM output plus its 3D keypoints."""
        return self.d_embed + N_JOINTS * 3

    @property
    def in_dim(self) -> int:
        """Per-frame keypoint input: 17 normalised (x, y) plus the box's centre and scale."""
        return N_JOINTS * 2 + 3

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WHAMConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"wham config: unknown fields {sorted(unknown)}")
        return cls(**d)


TINY = {"d_embed": 16, "d_feat": 32, "integrator_hidden": 32, "vertices": 40}
