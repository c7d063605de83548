"""MPS-Net's configuration: the official demo's ``MPSnet(seqlen=16, n_layers=2, hidden_size=1024)``
(n_layers and hidden_size are unused by its MoCA/HAFI encoder)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping

from hmr_trt.errors import ConfigError


@dataclass(frozen=True)
class MPSNetConfig:
    window: int = 16  # seqlen; HAFI reads frames 4..12 around the middle (8), which is emitted
    feature_dim: int = 2048  # SPIN ResNet-50 feature per frame; MoCA's inner width is half of it
    attention_hidden: int = 256  # TemporalAttention width (hard-coded 256 in the official code)
    regressor_hidden: int = 1024  # SPIN regressor fc1/fc2 width
    iters: int = 3  # regressor error-feedback iterations
    seed: int = 0  # seeded default weights
    head_gain: float = 1.0  # regressor heads' gain on the seeded weights, so meshes move with input
    trained_like: bool = True  # seeded: regressor shaped like a trained one (export/seeded.py); False: plain draw

    def __post_init__(self) -> None:
        for name in ("feature_dim", "attention_hidden", "regressor_hidden", "iters"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"mpsnet config: {name} must be >= 1, got {getattr(self, name)}")
        if self.feature_dim % 2:
            raise ConfigError(f"mpsnet config: feature_dim must be even (MoCA halves it), got {self.feature_dim}")
        if self.window < 13:
            raise ConfigError(f"mpsnet config: window must be >= 13 (HAFI reads frames middle-4..middle+4), "
                              f"got {self.window}")

    @property
    def middle(self) -> int:
        return self.window // 2

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MPSNetConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"mpsnet config: unknown fields {sorted(unknown)}")
        return cls(**d)
