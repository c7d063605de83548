"""VIBE's configuration: the official demo's ``VIBE_Demo(seqlen=16, n_layers=2, hidden_size=1024,
add_linear=True, use_residual=True)``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping

from hmr_trt.errors import ConfigError


@dataclass(frozen=True)
class VIBEConfig:
    window: int = 16  # seqlen: frames per window; every frame is emitted (causal)
    feature_dim: int = 2048  # SPIN ResNet-50 feature per frame
    hidden: int = 1024  # GRU hidden size (unidirectional)
    n_layers: int = 2  # GRU layers
    regressor_hidden: int = 1024  # SPIN regressor fc1/fc2 width
    iters: int = 3  # regressor error-feedback iterations
    seed: int = 0  # seeded default weights
    head_gain: float = 1.0  # regressor heads' gain on the seeded weights, so meshes move with input
    trained_like: bool = True  # seeded: regressor shaped like a trained one (export/seeded.py); False: plain draw

    def __post_init__(self) -> None:
        for name in ("window", "feature_dim", "hidden", "n_layers", "regressor_hidden", "iters"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"vibe config: {name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VIBEConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"vibe config: unknown fields {sorted(unknown)}")
        return cls(**d)
