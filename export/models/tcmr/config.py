"""TCMR's configuration: the official demo's ``TCMR(seqlen=16, n_layers=2, hidden_size=1024)``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping

from hmr_trt.errors import ConfigError


@dataclass(frozen=True)
class TCMRConfig:
    window: int = 16  # seqlen: frames per window; the middle one (index 8) is emitted
    feature_dim: int = 2048  # SPIN ResNet-50 feature per frame
    hidden: int = 1024  # GRU hidden size (gru_cur is bidirectional: 2 x hidden out)
    n_layers: int = 2  # GRU layers
    attention_hidden: int = 256  # TemporalAttention width (hard-coded 256 in the official code)
    regressor_hidden: int = 1024  # SPIN regressor fc1/fc2 width
    iters: int = 3  # regressor error-feedback iterations
    seed: int = 0  # seeded default weights
    head_gain: float = 4.0  # regressor heads' gain on the seeded weights, so meshes move with input
    trained_like: bool = True  # seeded: regressor shaped like a trained one (export/seeded.py); False: plain draw

    def __post_init__(self) -> None:
        for name in ("window", "feature_dim", "hidden", "n_layers", "attention_hidden", "regressor_hidden", "iters"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"tcmr config: {name} must be >= 1, got {getattr(self, name)}")
        if self.window < 3:
            raise ConfigError(f"tcmr config: window must be >= 3 (past, middle, future), got {self.window}")

    @property
    def middle(self) -> int:
        return self.window // 2

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TCMRConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"tcmr config: unknown fields {sorted(unknown)}")
        return cls(**d)
