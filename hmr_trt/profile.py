"""The batch profile of an exported graph / engine: ``min <= opt <= max``, parsed from ``1:8:64``."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class ShapeProfile:
    min: int = 1
    opt: int = 8
    max: int = 64

    def __post_init__(self) -> None:
        if self.min < 1:
            raise ConfigError(f"batch profile min must be >= 1, got {self.min}")
        if not self.min <= self.opt <= self.max:
            raise ConfigError(
                f"batch profile must satisfy min <= opt <= max, got {self.min}:{self.opt}:{self.max}"
            )

    @classmethod
    def parse(cls, text: str) -> ShapeProfile:
        parts = text.split(":")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
        if len(values) != 3:
            raise ConfigError(f"--batch expects MIN:OPT:MAX with three integers (e.g. 1:8:64), got {text!r}")
        return cls(*values)

    def contains(self, batch: int) -> bool:
        return self.min <= batch <= self.max

    def check(self, batch: int, what: str = "batch") -> None:
        if not self.contains(batch):
            raise ConfigError(f"{what} {batch} is outside the profile {self} (min:opt:max)")

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"

    def to_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}
