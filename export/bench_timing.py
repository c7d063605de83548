"""Timing that stays honest on a shared machine: systems measured in alternation, minimum and median kept.

On a 2-core machine shared with other jobs, load comes and goes in bursts. Timing all of system A
and then all of system B lets a burst land on one of them only, and the ratio between them (what
the goals judge) then says more about the neighbours than about A and B. ``round_robin`` runs one
repetition of every system in turn (A, B, C, A, B, C, ...), so a burst hits them alike, and
``Timing`` keeps every sample: the minimum (the least disturbed run: what goals are judged on), the
median, the p90, and a ``noisy`` flag when p90 / median > 1.2 (the row's ratios are then suspect).

Torch-free: a system is any callable; ``sync`` waits for asynchronous work (``torch.cuda.synchronize``).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from hmr_trt.errors import ConfigError

NOISY_SPREAD = 1.2  # p90 / median above this marks a row noisy
Clock = Callable[[], float]  # seconds


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of non-empty ``samples``."""
    if not samples:
        raise ConfigError("percentile of no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Timing:
    """Every sample (ms) of one system at one batch size, and what the report shows of them."""

    model: str  # registry name, e.g. "coseg"
    section: str  # the graph timed: the model graph's name, "backbone", ...
    system: str  # "torch eager fp32", "onnxruntime fp32", ...
    batch: int
    samples_ms: List[float] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return len(self.samples_ms)

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms)

    @property
    def median_ms(self) -> float:
        return float(statistics.median(self.samples_ms))

    @property
    def p90_ms(self) -> float:
        return percentile(self.samples_ms, 90)

    @property
    def spread(self) -> float:
        """p90 / median: 1.0 on a quiet machine."""
        return self.p90_ms / self.median_ms

    @property
    def noisy(self) -> bool:
        return self.spread > NOISY_SPREAD

    @property
    def per_item_ms(self) -> float:
        return self.min_ms / self.batch

    @property
    def items_per_s(self) -> float:
        """Throughput at the minimum time."""
        return 1000.0 * self.batch / self.min_ms

    def to_dict(self) -> Dict[str, Any]:
        return {"model": self.model, "section": self.section, "system": self.system, "batch": self.batch,
                "runs": self.runs, "min_ms": self.min_ms, "median_ms": self.median_ms, "p90_ms": self.p90_ms,
                "spread": self.spread, "noisy": self.noisy, "per_item_ms": self.per_item_ms,
                "items_per_s": self.items_per_s, "samples_ms": list(self.samples_ms)}


@dataclass(frozen=True)
class System:
    """One thing to time: ``run()`` does one call; ``sync()`` waits until it has really finished."""

    name: str
    run: Callable[[], Any]
    sync: Optional[Callable[[], Any]] = None


@dataclass(frozen=True)
class RoundRobin:
    """How long to measure: at least ``min_reps`` rounds, then more until ``budget_s`` or ``max_reps``."""

    warmup: int = 1
    min_reps: int = 3
    max_reps: int = 50
    budget_s: float = 3.0

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.min_reps < 1 or self.max_reps < self.min_reps or self.budget_s < 0:
            raise ConfigError(f"round robin needs warmup >= 0, 1 <= min_reps <= max_reps and budget_s >= 0, "
                              f"got {self}")


def round_robin(systems: Sequence[System], plan: RoundRobin = RoundRobin(),
                clock: Clock = time.perf_counter) -> Dict[str, List[float]]:
    """Samples (ms) per system name, measured in alternation: one rep of each system per round."""
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise ConfigError(f"system names repeat: {names}")
    for _ in range(plan.warmup):
        for s in systems:
            _once(s, clock)
    samples: Dict[str, List[float]] = {s.name: [] for s in systems}
    start = clock()
    rounds = 0
    while rounds < plan.min_reps or (rounds < plan.max_reps and clock() - start < plan.budget_s):
        for s in systems:
            samples[s.name].append(_once(s, clock))
        rounds += 1
    return samples


def _once(system: System, clock: Clock) -> float:
    """One call of ``system`` in ms, synchronized."""
    t = clock()
    system.run()
    if system.sync is not None:
        system.sync()
    return (clock() - t) * 1000.0


def time_systems(model: str, section: str, batch: int, systems: Sequence[System],
                 plan: RoundRobin = RoundRobin(), clock: Clock = time.perf_counter) -> List[Timing]:
    """``round_robin`` as Timing rows, in the systems' order."""
    samples = round_robin(systems, plan, clock)
    return [Timing(model, section, s.name, batch, samples[s.name]) for s in systems]
