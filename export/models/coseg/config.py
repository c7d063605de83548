"""The co-segmentation network's configuration: one frozen dataclass that validates itself.

Field meanings follow ../shared/docs/model-spec.md (and docs/model-spec.md in this repository).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from hmr_trt.errors import ConfigError


@dataclass(frozen=True)
class CosegConfig:
    feature_dim: int = 2048  # C: width of the per-frame backbone feature (SPIN ResNet-50 pool)
    window: int = 16  # T: frames per window; any even T >= 4 for the reference model
    attn_dim: int = 256  # a_k: width of the self-excitation query/key projections
    dis_hidden: int = 512  # hidden width of the dynamic-integration MLPs
    fde_cutoff: int = 2  # FDE mask keeps frequency bins with |k| >= cutoff (DC and 1st harmonic removed)
    fde_mode: str = "fft"  # "fft" (torch.fft reference) or "matrix" (constant T x T product, exportable)
    regressor_hidden: int = 1024  # SPIN regressor fc1/fc2 width
    regressor_iters: int = 3  # iterative error feedback steps
    num_joints: int = 24  # SMPL joints (pose is 24 x 6D = 144)
    num_betas: int = 10
    head_gain: float = 0.1  # xavier gain of the heads; SPIN's 0.01 returns the mean pose for every input, while 0.1
    # moves vertices ~100 mm across random windows and ~330 mm across sample-video windows (real-motion scale)
    seed: int = 0  # seeded deterministic initialisation
    trained_like: bool = True  # seeded: regressor shaped like a trained one (export/seeded.py); False: plain draw

    def __post_init__(self) -> None:
        if self.window < 4 or self.window % 2:
            raise ConfigError(f"window must be an even number >= 4, got {self.window}")
        if self.feature_dim < 2 or self.feature_dim % 2:
            raise ConfigError(f"feature_dim must be even (it is split in two patches), got {self.feature_dim}")
        if self.fde_mode not in ("fft", "matrix"):
            raise ConfigError(f"fde_mode must be 'fft' or 'matrix', got {self.fde_mode!r}")
        if not 0 <= self.fde_cutoff <= self.window // 2:
            raise ConfigError(f"fde_cutoff must be in [0, window/2 = {self.window // 2}], got {self.fde_cutoff}")
        for name in ("attn_dim", "dis_hidden", "regressor_hidden", "regressor_iters", "num_joints", "num_betas"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def pose_dim(self) -> int:
        return 6 * self.num_joints

    def with_(self, **changes: Any) -> CosegConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CosegConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


# A small configuration with the same structure, for fast unit tests.
TINY = CosegConfig(feature_dim=64, attn_dim=16, dis_hidden=32, regressor_hidden=64)
