"""The benchmark's results, its goals and its report (``report.md``, ``results.json``, PNG plots).

Goals are ratios between systems measured in the same round robin, judged on each row's minimum
(the least disturbed run on a shared machine); a goal that rests on a noisy row (p90 / median >
1.2) says so. Torch-free: the sections (``bench_sections``) fill a ``BenchResult``, this module
only reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from .bench_timing import NOISY_SPREAD, Timing

BASELINE = "torch eager fp32"


@dataclass
class BenchResult:
    machine: Dict[str, Any]
    models: List[str] = field(default_factory=list)
    timings: List[Timing] = field(default_factory=list)
    floors: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # model -> floor figures
    e2e: List[Dict[str, Any]] = field(default_factory=list)
    tracks_scaling: List[Dict[str, Any]] = field(default_factory=list)
    memory: Dict[str, float] = field(default_factory=dict)
    goals: List[Dict[str, Any]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    scene_vs_window: Dict[str, Any] = field(default_factory=dict)  # bench_sections.bench_scene_vs_window
    provenance: List[Dict[str, Any]] = field(default_factory=list)  # per model: when, load, kept from a record
    plots: List[str] = field(default_factory=list)  # PNG files write_report wrote beside report.md
    skipped: List[Dict[str, Any]] = field(default_factory=list)  # batch sizes over the plan's cap per call

    def find(self, model: str, system: str, batch: int, section: Optional[str] = None) -> Optional[Timing]:
        return next((t for t in self.timings if (t.model, t.system, t.batch) == (model, system, batch)
                     and (section is None or t.section == section)), None)

    def to_dict(self) -> Dict[str, Any]:
        return {"machine": self.machine, "models": self.models, "timings": [t.to_dict() for t in self.timings],
                "floors": self.floors, "e2e": self.e2e, "tracks_scaling": self.tracks_scaling,
                "memory": self.memory, "goals": self.goals, "notes": self.notes,
                "scene_vs_window": self.scene_vs_window, "provenance": self.provenance, "skipped": self.skipped}


def describe_rows(rows: List[Timing]) -> str:
    """One progress line for one round robin: each system's minimum, its ratio to the baseline, noisy marks."""
    if not rows:
        return "(nothing timed)"
    first = rows[0]
    base = next((r for r in rows if r.system == BASELINE), None)
    parts = []
    for r in rows:
        ratio = f" = {base.min_ms / r.min_ms:.2f}x" if base is not None and r is not base else ""
        parts.append(f"{r.system} {r.min_ms:.1f} ms{ratio}{' (noisy)' if r.noisy else ''}")
    return f"{first.model} {first.section} batch {first.batch}: " + ", ".join(parts) + f" [{first.runs} rounds]"


# ---------------------------------------------------------------------------------------------
# goals


def _goal(result: BenchResult, name: str, rows: List[Optional[Timing]], value: Optional[float], target: float,
          why: str = "") -> None:
    """One goal: ``value`` (a ratio of minima) against ``target``; noisy rows are named."""
    if value is None or any(r is None for r in rows):
        result.goals.append({"goal": name, "value": None, "target": target, "met": None, "why": "not measured",
                             "noisy": False})
        return
    noisy = [f"{r.system} b{r.batch}" for r in rows if r is not None and r.noisy]
    met = bool(value >= target)
    text = "" if met else f"missed by {target / value:.2f}x; {why}".rstrip("; ")
    if noisy:
        text = (text + "; " if text else "") + f"noisy rows (p90/median > {NOISY_SPREAD}): {', '.join(noisy)}"
    result.goals.append({"goal": name, "value": round(value, 3), "target": target, "met": met, "why": text,
                         "noisy": bool(noisy)})


def evaluate_goals(result: BenchResult, model: str, big_batch: int) -> None:
    """The goals for one model, as ratios of minimum times measured in this run."""
    f = result.floors.get(model, {})
    base1, ort1 = result.find(model, BASELINE, 1), result.find(model, "onnxruntime fp32", 1)
    why1 = ""
    if base1 and ort1 and f.get("floor_batch1_ms"):
        why1 = (f"4x needs {base1.min_ms / 4:.1f} ms = {base1.min_ms / 4 / f['floor_batch1_ms']:.2f}x the floor "
                f"({f['floor_batch1_ms']:.1f} ms); ORT runs at {ort1.min_ms / f['floor_batch1_ms']:.2f}x it; "
                f"recurrent layers hold {f.get('recurrent_flop_share', 0):.0%} of the FLOPs")
    _goal(result, f"{model} CPU: ORT FP32 speed-up over torch eager, batch 1", [base1, ort1],
          base1 and ort1 and base1.min_ms / ort1.min_ms, 4.0, why1)
    if ort1 and f.get("floor_batch1_ms_weights"):
        _goal(result, f"{model} CPU: weight-read floor / ORT FP32 batch-1 time (>= 0.5 means within 2x)", [ort1],
              f["floor_batch1_ms_weights"] / ort1.min_ms, 0.5)
    base_b, ort_b = result.find(model, BASELINE, big_batch), result.find(model, "onnxruntime fp32", big_batch)
    why_b = ""
    if base_b and f.get("measured_sgemm_gflops"):
        floor_b = 1000 * big_batch * f["flops_per_item"] / (f["measured_sgemm_gflops"] * 1e9)
        why_b = (f"at batch {big_batch} the floor is arithmetic: {floor_b:.0f} ms at the measured SGEMM rate; torch "
                 f"eager takes {base_b.min_ms:.0f} ms")
    _goal(result, f"{model} CPU: ORT FP32 items/s over torch eager, batch {big_batch}", [base_b, ort_b],
          base_b and ort_b and ort_b.items_per_s / base_b.items_per_s, 2.0, why_b)
    int8 = result.find(model, "onnxruntime int8", 1)
    if int8 is not None:
        _goal(result, f"{model} CPU: ORT INT8 speed-up over ORT FP32, batch 1", [ort1, int8],
              ort1 and ort1.min_ms / int8.min_ms, 1.0,
              f"recurrent layers stay float ({f.get('recurrent_param_share', 0):.0%} of the weights)")
    gpu32 = result.find(model, "torch eager fp32 (gpu)", 1)
    if gpu32 is not None:
        trt16, comp = result.find(model, "tensorrt fp16", 1), result.find(model, "torch.compile fp32 (gpu)", 1)
        _goal(result, f"{model} GPU: TensorRT FP16 speed-up over torch eager FP32, batch 1", [gpu32, trt16],
              trt16 and gpu32.min_ms / trt16.min_ms, 8.0)
        _goal(result, f"{model} GPU: TensorRT FP16 speed-up over torch.compile, batch 1", [comp, trt16],
              trt16 and comp and comp.min_ms / trt16.min_ms, 2.0)


# ---------------------------------------------------------------------------------------------
# report


def timing_table(result: BenchResult) -> List[str]:
    lines = ["| model | graph | system | batch | min ms | median ms | p90/median | noisy | ms per item | "
             "items/s | vs torch eager |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in result.timings:
        base = result.find(t.model, BASELINE, t.batch, t.section)
        ratio = f"{base.min_ms / t.min_ms:.2f}x" if base else ""
        lines.append(f"| {t.model} | {t.section} | {t.system} | {t.batch} | {t.min_ms:.2f} | {t.median_ms:.2f} | "
                     f"{t.spread:.2f} | {'noisy' if t.noisy else ''} | {t.per_item_ms:.3f} | {t.items_per_s:.1f} | "
                     f"{ratio} |")
    return lines


def skipped_lines(skipped: List[Dict[str, Any]]) -> List[str]:
    """The batch sizes not measured: each one's estimated seconds per call against the plan's cap."""
    if not skipped:
        return []
    lines = ["", "Not measured (the estimated call, the slowest system's minimum at the largest smaller batch scaled "
             "linearly, exceeds the plan's cap per call):", "", "| model | graph | batch | skipped | cap |",
             "|---|---|---|---|---|"]
    for s in skipped:
        lines.append(f"| {s['model']} | {s['section']} | {s['batch']} | skipped: est. {s['est_call_s']:.0f} s per call "
                     f"(from batch {s['from_batch']}) | {s['max_call_s']:g} s |")
    return lines


def provenance_lines(provenance: List[Dict[str, Any]]) -> List[str]:
    """When each model was measured, under which load, and whether this run kept an earlier record."""
    if not provenance:
        return []
    lines = ["## Runs", "", "| model | measured (UTC) | seconds | load avg before / after (1, 5, 15 min) | export "
             "| this run |", "|---|---|---|---|---|---|"]
    for p in provenance:
        load = " / ".join(", ".join(f"{x:.1f}" for x in p.get(k) or []) or "n/a" for k in ("load_before", "load_after"))
        lines.append(f"| {p['model']} | {p['measured_at']} | {p['seconds']:.0f} | {load} | {p.get('export') or 'none'} "
                     f"| {'kept from ' + p['record'] if p.get('kept') else 'measured'} |")
    return lines + [""]


def floor_lines(model: str, f: Dict[str, Any], ort1: Optional[Timing]) -> List[str]:
    lines = [f"### {model}", "",
             f"- FLOPs per item: {f['flops_per_item'] / 1e9:.3f} GFLOP; parameters {f['params'] / 1e6:.2f} M "
             f"({f['weight_bytes_fp32'] / 1e6:.1f} MB in FP32, read once per batch); inputs + outputs "
             f"{f['io_bytes_per_item'] / 1e3:.0f} kB per item.",
             f"- Measured here: memory bandwidth {f['measured_bandwidth_gbs']:.1f} GB/s (large copy), "
             f"SGEMM {f['measured_sgemm_gflops']:.0f} GFLOP/s.",
             f"- Batch-1 floor: {f['floor_batch1_ms_weights']:.2f} ms to read the weights, "
             f"{f['floor_batch1_ms_compute']:.2f} ms of arithmetic at the SGEMM rate."]
    if ort1 is not None:
        lines.append(f"- ONNX Runtime FP32 batch 1: {ort1.min_ms:.2f} ms (minimum) = "
                     f"{ort1.min_ms / f['floor_batch1_ms']:.2f}x the floor.")
    return lines + [""]


def write_report(result: BenchResult, out: Path, plots: bool = True) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    result.plots = [p.name for p in write_plots(result, out)] if plots else []
    lines = ["# hmr-trt benchmark", "", f"Machine: {result.machine}", "",
             f"Systems at one batch size are timed in alternation (round robin); goals use each row's minimum; "
             f"a row is noisy when p90/median > {NOISY_SPREAD}.", "", *provenance_lines(result.provenance),
             "## Models", "", *timing_table(result), *skipped_lines(result.skipped)]
    if result.floors:
        lines += ["", "## The floor", ""]
        for model, f in result.floors.items():
            lines += floor_lines(model, f, result.find(model, "onnxruntime fp32", 1))
    if result.e2e:
        stages = list(result.e2e[0]["timings_s"])
        lines += ["", "## End to end (trt-run)", "",
                  "| model | frames | tracks | frames/s | " + " | ".join(stages) + " |", "|---" * (4 + len(stages)) + "|"]
        for e in result.e2e:
            lines.append(f"| {e.get('model', '')} | {e['frames']} | {e['tracks']} | {e['fps']} | " +
                         " | ".join(f"{v:.2f}" for v in e["timings_s"].values()) + " |")
        lines.append(f"\nBackend: {result.e2e[0]['backend']}. Stage columns are seconds.")
    if result.tracks_scaling:
        stages = list(result.tracks_scaling[0]["timings_s"])
        lines += ["", "## Cost vs number of tracks (features in)", "",
                  "| tracks | frames each | " + " | ".join(f"{s} s" for s in stages) + " | total s |",
                  "|---" * (3 + len(stages)) + "|"]
        for r in result.tracks_scaling:
            lines.append(f"| {r['tracks']} | {r['frames_per_track']} | " +
                         " | ".join(f"{r['timings_s'][s]:.2f}" for s in stages) + f" | {r['total_s']:.2f} |")
    if result.scene_vs_window:
        lines += scene_vs_window_lines(result.scene_vs_window)
    lines += ["", "## Memory", "", *[f"- {k}: {v:.0f} MB" for k, v in result.memory.items()]]
    lines += ["", "## Goals (ratios of minimum times from this run)", "",
              "| goal | measured | target | met | why not / noise |", "|---|---|---|---|---|"]
    for g in result.goals:
        lines.append(f"| {g['goal']} | {g['value']} | {g['target']} | {g['met']} | {g.get('why', '')} |")
    lines += ["", *[f"- {n}" for n in result.notes]]
    if result.plots:
        lines += ["", "Plots: " + ", ".join(f"![{p}]({p})" for p in result.plots)]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def scene_vs_window_lines(s: Dict[str, Any]) -> List[str]:
    """The scene-vs-window section: end to end with stage shares, then per-frame cost vs people per frame."""
    lines = ["", f"## Scene model vs window model ({s['frames']} frames of the video, end to end)", "",
             "| family | model | frames/s | people per frame | stage shares |", "|---|---|---|---|---|"]
    for family, e in s["e2e"].items():
        shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in sorted(e["shares"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {family} | {e['model']} | {e['fps']} | {e['people_per_frame']} | {shares} |")
    lines += ["", "Per-frame cost vs people per frame (ms, best of 3; window: one detector call plus crop, backbone, "
              "temporal and body model per person; scene: letterbox and maps graph once, then post-processing "
              "and body model per person):", "",
              "| people | window detect | window per-person path | window total | scene network | scene people path "
              "| scene total |", "|---|---|---|---|---|---|---|"]
    for r in s["people"]:
        w, sc = r["window_ms"], r["scene_ms"]
        lines.append(f"| {r['people']} | {w['detect']:.1f} | {w['per_person_path']:.1f} | "
                     f"{w['detect'] + w['per_person_path']:.1f} | {sc['network']:.1f} | {sc['people_path']:.1f} | "
                     f"{sc['network'] + sc['people_path']:.1f} |")
    return lines


def write_plots(result: BenchResult, out: Path) -> List[Path]:
    """PNG plots: latency and throughput vs batch per model; trt-run's stages. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: List[Path] = []
    for model in result.models:
        rows = [t for t in result.timings if t.model == model]
        systems = sorted({t.system for t in rows})
        if not systems:
            continue
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        for s in systems:
            pts = sorted((t.batch, t.min_ms, t.items_per_s) for t in rows if t.system == s)
            ax1.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=s)
            ax2.plot([p[0] for p in pts], [p[2] for p in pts], marker="o", label=s)
        for ax, ylabel in ((ax1, "latency per call, ms (minimum)"), (ax2, "items per second")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("batch")
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
        ax1.legend(fontsize=7)
        fig.suptitle(f"{model}: latency and throughput vs batch")
        fig.tight_layout()
        fig.savefig(out / f"{model}_vs_batch.png", dpi=100)
        plt.close(fig)
        written.append(out / f"{model}_vs_batch.png")
    if result.e2e:
        written.append(write_stage_plot(result.e2e, out / "e2e_stages.png"))
    return written


def write_stage_plot(runs: List[Dict[str, Any]], path: Path) -> Path:
    """trt-run end to end: seconds per stage, one stacked bar per run (model, frames)."""
    import matplotlib.pyplot as plt

    stages = list(dict.fromkeys(k for e in runs for k, v in e["timings_s"].items() if v > 0))
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.5 * len(runs)))
    labels = [f"{e.get('model', '')} {e['frames']} frames ({e['fps']} frames/s)" for e in runs]
    left = [0.0] * len(runs)
    for stage in stages:
        widths = [e["timings_s"].get(stage, 0.0) for e in runs]
        ax.barh(labels, widths, left=left, label=stage)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_xlabel("seconds")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("trt-run end to end: seconds per stage")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
