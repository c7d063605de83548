"""What makes ``trt-bench`` resumable: one record per measured model, and the README's zoo table from them.

A model's measurements (its timing rows with every sample, floor figures, end-to-end and track rows,
notes, when and under which load it was measured) are written to ``<out>/models/<plan>/<model>.json``
as soon as that model is done, atomically: a run interrupted during the next model leaves every
finished model readable, and the next run with the same plan loads it instead of measuring it again
(``--force`` measures again). Ratios are only ever taken between rows of one record (one round
robin), so a record from an earlier run is as good as one from this run.

Torch-free.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hmr_trt.errors import ConfigError
from hmr_trt.fileio import atomic_write

from .bench_report import BASELINE, BenchResult
from .bench_timing import Timing

RECORD_VERSION = 1
README_BEGIN = "<!-- trt-bench zoo table: begin (written by `make bench-zoo`, trt-bench --readme; do not edit) -->"
README_END = "<!-- trt-bench zoo table: end -->"


def load_average() -> List[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on this platform
        return []


@dataclass
class ModelRecord:
    """One model's measurements from one run (``plan``: the bench plan's name and sizes)."""

    model: str
    plan: Dict[str, Any]
    measured_at: str = ""  # UTC, ISO 8601
    seconds: float = 0.0
    load_before: List[float] = field(default_factory=list)  # 1/5/15-minute load averages
    load_after: List[float] = field(default_factory=list)
    machine: Dict[str, Any] = field(default_factory=dict)
    export: Optional[str] = None  # the export whose ONNX files and runtime were timed
    timings: List[Timing] = field(default_factory=list)
    floors: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    e2e: List[Dict[str, Any]] = field(default_factory=list)
    tracks_scaling: List[Dict[str, Any]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    skipped: List[Dict[str, Any]] = field(default_factory=list)  # batch sizes over the plan's cap per call

    def to_dict(self) -> Dict[str, Any]:
        return {"version": RECORD_VERSION, "model": self.model, "plan": self.plan, "measured_at": self.measured_at,
                "seconds": self.seconds, "load_before": self.load_before, "load_after": self.load_after,
                "machine": self.machine, "export": self.export, "timings": [t.to_dict() for t in self.timings],
                "floors": self.floors, "e2e": self.e2e, "tracks_scaling": self.tracks_scaling,
                "notes": self.notes, "peak_rss_mb": self.peak_rss_mb, "skipped": self.skipped}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> ModelRecord:
        if d.get("version") != RECORD_VERSION:
            raise ValueError(f"record version {d.get('version')!r}, this trt-bench writes {RECORD_VERSION}")
        timings = [Timing(t["model"], t["section"], t["system"], int(t["batch"]), [float(x) for x in t["samples_ms"]])
                   for t in d["timings"]]
        if any(not t.samples_ms for t in timings):
            raise ValueError("a timing row without samples")
        return cls(d["model"], dict(d["plan"]), d.get("measured_at", ""), float(d.get("seconds", 0.0)),
                   list(d.get("load_before", [])), list(d.get("load_after", [])), dict(d.get("machine", {})),
                   d.get("export"), timings, dict(d.get("floors", {})), list(d.get("e2e", [])),
                   list(d.get("tracks_scaling", [])), list(d.get("notes", [])), float(d.get("peak_rss_mb", 0.0)),
                   list(d.get("skipped", [])))

    def add_to(self, result: BenchResult) -> None:
        """Append this record's rows to ``result`` (the run's report)."""
        result.timings += self.timings
        result.floors.update(self.floors)
        result.e2e += self.e2e
        result.tracks_scaling += self.tracks_scaling
        result.notes += self.notes
        result.skipped += self.skipped
        if self.model not in result.models:
            result.models.append(self.model)


class Mark:
    """Where ``result`` stood before a model was measured, to cut that model's record out of it afterwards."""

    def __init__(self, result: BenchResult) -> None:
        self.result = result
        self.counts = (len(result.timings), len(result.e2e), len(result.tracks_scaling), len(result.notes),
                       len(result.skipped))
        self.start = time.perf_counter()
        self.load = load_average()

    def record(self, model: str, plan: Dict[str, Any], export: Optional[Path], peak_rss_mb: float) -> ModelRecord:
        r, (nt, ne, ns, nn, nk) = self.result, self.counts
        return ModelRecord(model, plan, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           round(time.perf_counter() - self.start, 1), self.load, load_average(), dict(r.machine),
                           str(export) if export is not None else None, list(r.timings[nt:]),
                           {model: r.floors[model]} if model in r.floors else {}, list(r.e2e[ne:]),
                           list(r.tracks_scaling[ns:]), list(r.notes[nn:]), round(peak_rss_mb, 1), list(r.skipped[nk:]))


class RecordStore:
    """``<out>/models/<plan>/<model>.json``: the finished models of one plan."""

    def __init__(self, out: Path, plan_name: str) -> None:
        self.folder = Path(out) / "models" / plan_name

    def path(self, model: str) -> Path:
        return self.folder / f"{model}.json"

    def load(self, model: str) -> ModelRecord:
        """The stored record; ValueError when it is missing, unreadable or not this model's."""
        path = self.path(model)
        try:
            record = ModelRecord.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise ValueError("not measured yet") from None
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path} is unreadable ({exc})") from exc
        if record.model != model:
            raise ValueError(f"{path} holds {record.model!r}")
        return record

    def save(self, record: ModelRecord) -> Path:
        text = json.dumps(record.to_dict(), indent=1) + "\n"
        return atomic_write(self.path(record.model), lambda f: f.write(text.encode()))


# ---------------------------------------------------------------------------------------------
# the README's zoo table


def zoo_table(records: List[ModelRecord]) -> List[str]:
    """Markdown: per model, torch eager and ORT FP32 at batch 1, ORT per item at the largest batch, the floor."""
    lines = ["| model | torch eager b1 | ORT FP32 b1 | ORT speed-up b1 | ORT FP32 per item (batch) | GFLOP per item "
             "| weights | ORT b1 vs floor | measured (UTC), load avg | noisy rows | batches not measured |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for rec in records:
        rows = [t for t in rec.timings if t.model == rec.model]
        graph = rows[0].section if rows else ""
        mine = [t for t in rows if t.section == graph]

        base, ort = _find(mine, BASELINE, 1), _find(mine, "onnxruntime fp32", 1)
        big = max((t.batch for t in mine), default=1)
        ort_big = _find(mine, "onnxruntime fp32", big)
        f = rec.floors.get(rec.model, {})
        noisy = [f"{t.system} b{t.batch}" for t in mine if t.noisy]
        load = "/".join(f"{x:.1f}" for x in rec.load_before[:1] + rec.load_after[:1]) or "n/a"
        cells = [rec.model, _ms(base), _ms(ort), f"{base.min_ms / ort.min_ms:.1f}x" if base and ort else "n/a",
                 f"{ort_big.per_item_ms:.1f} ms ({big})" if ort_big else "n/a",
                 f"{f['flops_per_item'] / 1e9:.2f}" if f else "n/a",
                 f"{f['weight_bytes_fp32'] / 1e6:.1f} MB" if f else "n/a",
                 f"{ort.min_ms / f['floor_batch1_ms']:.2f}x" if ort and f.get("floor_batch1_ms") else "n/a",
                 f"{rec.measured_at[:16].replace('T', ' ')}, {load}", ", ".join(noisy) or "none",
                 "; ".join(f"b{k['batch']} skipped: est. {k['est_call_s']:.0f} s per call" for k in rec.skipped
                           if (k["model"], k["section"]) == (rec.model, graph)) or "none"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _find(rows: List[Timing], system: str, batch: int) -> Optional[Timing]:
    return next((t for t in rows if (t.system, t.batch) == (system, batch)), None)


def _ms(t: Optional[Timing]) -> str:
    if t is None:
        return "n/a"
    return f"{t.min_ms:.1f} ms" if t.min_ms < 100 else f"{t.min_ms:.0f} ms"


def zoo_block(records: List[ModelRecord]) -> List[str]:
    """The generated block: how it was measured (wrapped to the README's width), then the table."""
    plans: Dict[str, List[str]] = {}
    for r in records:
        cap = r.plan.get("max_call_s") or 0
        key = (f"{r.plan.get('name')} (batches {', '.join(map(str, r.plan.get('batches', [])))}, "
               f"{r.plan.get('budget_s')} s of round robin per batch size"
               + (f", a batch size whose call is estimated over {cap:g} s skipped)" if cap else ")"))
        plans.setdefault(key, []).append(r.model)
    how = "; ".join(f"{k}: {', '.join(v)}" if len(plans) > 1 else k for k, v in plans.items())
    machine = records[0].machine if records else {}
    text = (f"`trt-bench --readme` from {len(records)} model records, plan {how}; {machine.get('cpu', '?')}, "
            f"{machine.get('cores', '?')} cores, torch {machine.get('torch', '?')}, ONNX Runtime "
            f"{machine.get('onnxruntime', '?')}. Minimum ms of a round robin; ratios within one model's run; "
            "load average (1 min) before / after each model; a noisy row has p90/median > 1.2. Each model's default "
            "configuration (HMR 2.0: ViT-H, per crop) with seeded weights; ONNX Runtime times its FP32 graph (the "
            "export's, or one exported by the benchmark). A batch size not measured says its estimated seconds per "
            "call (the slowest call at the largest smaller batch, scaled linearly).")
    return [*textwrap.wrap(text, width=110, break_on_hyphens=False), "", *zoo_table(records)]


def rewrite_between_markers(text: str, lines: List[str], begin: str = README_BEGIN, end: str = README_END) -> str:
    """``text`` with everything between the ``begin`` and ``end`` marker lines replaced by ``lines``."""
    pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.DOTALL)
    found = pattern.findall(text)
    if len(found) != 1:
        raise ConfigError(f"expected one zoo table between the markers {begin!r} and {end!r}, found {len(found)}")
    return pattern.sub(lambda _m: "\n".join([begin, *lines, end]), text)


def update_readme(readme: Path, records: List[ModelRecord]) -> Path:
    """Rewrite the zoo table of ``readme`` (between the markers) from ``records``; nothing else changes."""
    if not Path(readme).is_file():
        raise ConfigError(f"--readme {readme}: file not found")
    text = Path(readme).read_text()
    new = rewrite_between_markers(text, zoo_block(records))
    return atomic_write(readme, lambda f: f.write(new.encode()))
