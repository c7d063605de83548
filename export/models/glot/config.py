"""GLoT's configuration: the released ``configs/repr_table1_3dpw.yaml`` values by default.

Only what shapes the inference graph is here (dropout and drop-path rates do nothing in eval).
The official code hard-codes some widths (the cross-attention's 8 heads, the SPIN regressor's
1024 hidden units, 2048-d features); they are fields here so a tiny config can shrink them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Mapping

from hmr_trt.errors import ConfigError


@dataclass(frozen=True)
class GlotConfig:
    seqlen: int = 16  # T: frames per window; the model emits frame T // 2
    feature_dim: int = 2048  # per-frame SPIN ResNet-50 features
    # global branch (GMM): encoder over all T frames, one decoder layer per two encoder layers
    d_model: int = 512
    n_layers: int = 2
    num_head: int = 8
    # local branch: encoder over the 2 * stride_short + 1 middle frames, cross-attention to the global memory
    short_d_model: int = 256
    short_n_layers: int = 3
    short_num_head: int = 8
    cross_num_head: int = 8  # CrossAttention(..., num_heads=8) is a literal in the official code
    stride_short: int = 4
    # regressors
    spin_hidden: int = 1024  # the global branch's SPIN regressor (fc1 -> decpose/decshape/deccam)
    hscr_hidden: int = 1024  # HSCR's fc1/fc2 width and KTD's input
    num_joints: int = 24
    num_betas: int = 10
    spin_iters: int = 3
    # seeded default weights (no checkpoint): a torch.Generator seeded with this, never the global RNG
    seed: int = 0
    # xavier gain of every Linear of the seeded default. Vertex spread across the 7 parity windows
    # (random / sample-video features), mm: 0.4 -> 186 / 17.9 (video under the 50 mm floor: trt-export
    # --video refused it), 0.7 -> 452 / 125, 1.0 -> 353 / 113. Larger gains amplify rounding (FP16
    # drift 1.1 mm at 1.0 vs 0.28 mm at 0.4), so the smallest that moves on video.
    init_gain: float = 0.7
    trained_like: bool = True  # seeded: regressors shaped like trained ones (export/seeded.py); False: plain draw

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "init_gain":
                if not value > 0:
                    raise ConfigError(f"glot config: init_gain must be > 0, got {value}")
            elif f.name == "trained_like":
                if not isinstance(value, bool):
                    raise ConfigError(f"glot config: trained_like must be true or false, got {value!r}")
            elif f.name == "seed":
                if not isinstance(value, int) or value < 0:
                    raise ConfigError(f"glot config: seed must be an int >= 0, got {value!r}")
            elif not isinstance(value, int) or value < 1:
                raise ConfigError(f"glot config: {f.name} must be a positive int, got {value!r}")
        for dim, heads in ((self.d_model, self.num_head), (self.d_model // 2, self.num_head),
                           (self.short_d_model, self.short_num_head), (self.short_d_model, self.cross_num_head)):
            if dim % heads:
                raise ConfigError(f"glot config: width {dim} is not divisible by {heads} heads")
        if self.d_model % 2:
            raise ConfigError(f"glot config: d_model must be even (the decoder is d_model / 2 wide), got {self.d_model}")
        if self.n_layers < 2:
            raise ConfigError(f"glot config: n_layers must be >= 2 (the decoder has n_layers // 2 blocks), "
                              f"got {self.n_layers}")
        if 2 * self.stride_short + 1 > self.seqlen or self.stride_short < 1:
            raise ConfigError(f"glot config: the local window 2 * stride_short + 1 = {2 * self.stride_short + 1} "
                              f"must fit in seqlen {self.seqlen}")
        if self.num_joints != 24:
            raise ConfigError(f"glot config: KTD's kinematic tree is SMPL's 24 joints, got num_joints={self.num_joints}")

    @property
    def mid_frame(self) -> int:
        return self.seqlen // 2

    @property
    def pose_dim(self) -> int:
        return 6 * self.num_joints

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GlotConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"glot config: unknown fields {unknown}; known: {sorted(known)}")
        return cls(**dict(d))


def tiny_config(seed: int = 0) -> GlotConfig:
    """The same structure at small widths, for fast tests."""
    return GlotConfig(seqlen=16, feature_dim=64, d_model=32, n_layers=2, num_head=4, short_d_model=16,
                      short_n_layers=2, short_num_head=4, cross_num_head=4, stride_short=4, spin_hidden=32,
                      hscr_hidden=32, seed=seed)
