"""``trt-bench``: how fast, against what, and how cost grows; one run on the machine at hand.

Timings on shared machines are noisy, so every figure comes with its spread (p90 / median) and
as a ratio to the torch eager FP32 baseline measured in the same run. Sections:
- temporal model per window, batch 1 and a sweep: torch eager FP32 (baseline), ONNX Runtime
  FP32/FP16/INT8; on a GPU also torch eager FP16, torch.compile and TensorRT engines;
- backbone, the same way;
- end to end (``trt-run``): frames/s with a per-stage breakdown, scaling with video length and
  with the number of tracks;
- peak memory; and the floor: FLOPs per window and the bytes that must move, against the
  machine's measured compute rate and memory bandwidth.
Writes ``report.md``, ``results.json`` and PNG plots to ``--out``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from hmr_trt.manifest import Manifest
from hmr_trt.runtime.backends import OnnxRuntimeBackend

from .models.coseg.config import TINY, CosegConfig
from .models.coseg.model import build_model


@dataclass
class Timing:
    section: str  # "temporal" | "backbone"
    system: str  # "torch eager fp32", "onnxruntime fp32", ...
    batch: int
    median_ms: float
    p90_ms: float
    runs: int

    @property
    def per_item_ms(self) -> float:
        return self.median_ms / self.batch

    @property
    def items_per_s(self) -> float:
        return 1000.0 * self.batch / self.median_ms

    @property
    def spread(self) -> float:
        return self.p90_ms / self.median_ms


@dataclass
class BenchResult:
    machine: dict[str, Any]
    timings: list[Timing] = field(default_factory=list)
    floor: dict[str, Any] = field(default_factory=dict)
    e2e: list[dict[str, Any]] = field(default_factory=list)
    tracks_scaling: list[dict[str, Any]] = field(default_factory=list)
    memory: dict[str, float] = field(default_factory=dict)
    goals: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def time_call(fn: Callable[[], Any], warmup: int = 1, min_runs: int = 3, budget_s: float = 3.0,
              max_runs: int = 50, sync: Callable[[], None] = lambda: None) -> tuple[float, float, int]:
    """(median ms, p90 ms, runs) of ``fn`` after warm-up; repeats until the budget or max_runs."""
    for _ in range(warmup):
        fn()
    sync()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < min_runs or (time.perf_counter() - start < budget_s and len(samples) < max_runs):
        t = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - t) * 1000.0)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(0.9 * len(samples)))], len(samples)


def machine_info() -> dict[str, Any]:
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    return info


def measured_bandwidth_gbs(size_mb: int = 512) -> float:
    """Host memory bandwidth: bytes read + written by a large copy, best of 3."""
    src = np.ones(size_mb * (1 << 20) // 4, dtype=np.float32)
    dst = np.empty_like(src)
    best = min(_timed(lambda: np.copyto(dst, src)) for _ in range(3))
    return 2 * src.nbytes / best / 1e9


def measured_gflops(n: int = 2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = min(_timed(lambda: a @ b) for _ in range(3))
    return 2 * n**3 / best / 1e9


def _timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _flop_counts(model: torch.nn.Module, cfg: CosegConfig) -> dict[str, Any]:
    """torch's FlopCounterMode on one window: {"Global" or "CosegNet.<module path>": {op: flops}}."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, cfg.window, cfg.feature_dim))
    return counter.get_flop_counts()


def temporal_onnx_by_precision(export_dir: Path, tmp: Path, cfg: CosegConfig, result: BenchResult) -> dict[str, Path]:
    """The export's temporal ONNX per precision; FP16/INT8 made here when the export lacks them.

    A stand-in INT8 quantizes every MatMul/Gemm (calibrated on a few windows, no sensitivity
    sweep): right for timing, not for accuracy (trt-export --precision int8 makes that one).
    """
    manifest = Manifest.read(export_dir)
    paths = {p: export_dir / a.path for p in ("fp32", "fp16", "int8")
             if (a := manifest.find("temporal", "onnx", p)) is not None}
    if "fp16" not in paths:
        from hmr_trt.engines.precision import fp16_onnx_from_fp32

        paths["fp16"] = tmp / "temporal_fp16.onnx"
        fp16_onnx_from_fp32(paths["fp32"], paths["fp16"])
        result.notes.append("FP16 ONNX made by the benchmark (engines/precision.py), not taken from the export")
    if "int8" not in paths:
        from hmr_trt.calibration.quantize import int8_onnx_from_fp32

        paths["int8"] = tmp / "temporal_int8.onnx"
        windows = np.abs(np.random.default_rng(0).standard_normal((4, cfg.window, cfg.feature_dim))).astype(np.float32)
        int8_onnx_from_fp32(paths["fp32"], paths["int8"], windows, tmp / "calib.json")
        result.notes.append("INT8 timing uses a stand-in that quantizes every MatMul/Gemm (no sensitivity sweep); "
                            "the accuracy-checked INT8 ONNX keeps more layers in float")
    return paths


def bench_temporal(result: BenchResult, cfg: CosegConfig, export_dir: Path, batches: list[int],
                   budget_s: float, onnx_paths: dict[str, Path]) -> None:
    model = build_model(cfg)
    for batch in batches:
        x = torch.randn(batch, cfg.window, cfg.feature_dim)
        with torch.no_grad():
            med, p90, n = time_call(lambda x=x: model(x), budget_s=budget_s)
        result.timings.append(Timing("temporal", "torch eager fp32", batch, med, p90, n))
        for precision, path in onnx_paths.items():
            with OnnxRuntimeBackend(path) as ort:
                feed = {"features": x.numpy()}
                med, p90, n = time_call(lambda feed=feed: ort.infer(feed), budget_s=budget_s)
            result.timings.append(Timing("temporal", f"onnxruntime {precision}", batch, med, p90, n))
    if torch.cuda.is_available():
        bench_temporal_gpu(result, model, cfg, export_dir, batches, budget_s)


def bench_temporal_gpu(result: BenchResult, model: torch.nn.Module, cfg: CosegConfig, export_dir: Path,
                       batches: list[int], budget_s: float) -> None:
    """torch eager FP32/FP16, torch.compile and TensorRT engines (with and without CUDA graphs)."""
    sync = torch.cuda.synchronize
    gpu = model.cuda()
    half = build_model(cfg).cuda().half()
    compiled = torch.compile(build_model(cfg).cuda())
    for batch in batches:
        x = torch.randn(batch, cfg.window, cfg.feature_dim, device="cuda")
        with torch.no_grad():
            for name, fn in (("torch eager fp32 (gpu)", lambda x=x: gpu(x)), ("torch eager fp16 (gpu)", lambda x=x: half(x.half())),
                             ("torch.compile fp32 (gpu)", lambda x=x: compiled(x))):
                med, p90, n = time_call(fn, warmup=3, budget_s=budget_s, sync=sync)
                result.timings.append(Timing("temporal", name, batch, med, p90, n))
    try:
        from hmr_trt.runtime.trt_backend import TensorRTBackend
    except ImportError as exc:
        result.notes.append(f"TensorRT timings skipped: {exc}")
        return
    manifest = Manifest.read(export_dir)
    for art in (a for a in manifest.artifacts if a.kind == "engine" and a.name == "temporal"):
        for graphs in (False, True):
            with TensorRTBackend(export_dir / art.path, cuda_graphs=graphs) as trt:
                for batch in batches:
                    feed = {"features": np.random.default_rng(0).standard_normal(
                        (batch, cfg.window, cfg.feature_dim)).astype(np.float32)}
                    med, p90, n = time_call(lambda feed=feed: trt.infer(feed), warmup=3, budget_s=budget_s)
                    label = f"tensorrt {art.precision}" + (" + cuda graphs" if graphs else "")
                    result.timings.append(Timing("temporal", label, batch, med, p90, n))


def bench_backbone(result: BenchResult, export_dir: Path, batches: list[int], budget_s: float, size: int) -> None:
    from .backbone import ResNet50Backbone

    model = ResNet50Backbone.from_seed(0)
    art = Manifest.read(export_dir).find("backbone", "onnx", "fp32")
    for batch in batches:
        x = torch.randn(batch, 3, size, size)
        with torch.no_grad():
            med, p90, n = time_call(lambda x=x: model(x), budget_s=budget_s)
        result.timings.append(Timing("backbone", "torch eager fp32", batch, med, p90, n))
        if art is not None:
            with OnnxRuntimeBackend(export_dir / art.path) as ort:
                feed = {"images": x.numpy()}
                med, p90, n = time_call(lambda feed=feed: ort.infer(feed), budget_s=budget_s)
            result.timings.append(Timing("backbone", "onnxruntime fp32", batch, med, p90, n))


def bench_e2e(result: BenchResult, export_dir: Path, video: Optional[Path], lengths: list[int]) -> None:
    """trt-run on the first N frames of the video (emit=all: every frame, offline throughput)."""
    from hmr_trt.runtime.pipeline import RunOptions, run_video

    if video is None:
        result.notes.append("end-to-end video timings skipped: no video")
        return
    for n in lengths:
        with tempfile.TemporaryDirectory() as tmp:
            summary = run_video(RunOptions(out=Path(tmp) / "run", export_dir=export_dir, video=video, emit="all",
                                           max_frames=n, min_track_frames=1))
        result.e2e.append({"frames": summary["frames_decoded"], "tracks": summary["tracks"],
                           "fps": summary["frames_per_second"], "timings_s": summary["timings_s"],
                           "total_s": summary["total_s"], "backend": summary["backend"]})


def bench_tracks(result: BenchResult, export_dir: Path, cfg: CosegConfig, counts: list[int], frames: int) -> None:
    """Temporal + body model cost as the number of tracks grows (precomputed features, emit=all)."""
    from hmr_trt.runtime.pipeline import RunOptions, run_features

    rng = np.random.default_rng(0)
    for k in counts:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "f.npz"
            np.savez(path, features=rng.standard_normal((k, frames, cfg.feature_dim)).astype(np.float32))
            summary = run_features(RunOptions(out=Path(tmp) / "run", export_dir=export_dir, features=path,
                                              emit="all", vertices=False))
        t = summary["timings_s"]
        result.tracks_scaling.append({"tracks": k, "frames_per_track": frames, "temporal_s": t["temporal"],
                                      "body_model_s": t["body_model"], "total_s": summary["total_s"]})


def floor_figures(result: BenchResult, cfg: CosegConfig) -> None:
    """FLOPs per window (and the GRUs' share) from one counted pass, weight bytes, and this machine's rates."""
    model = build_model(cfg)
    counts = _flop_counts(model, cfg)
    flops = float(sum(counts["Global"].values()))
    grus = {f"{type(model).__name__}.{name}": m for name, m in model.named_modules() if isinstance(m, torch.nn.GRU)}
    gru_flops = sum(sum(counts.get(name, {}).values()) for name in grus)
    params = sum(p.numel() for p in model.parameters())
    gru_params = sum(p.numel() for m in grus.values() for p in m.parameters())
    bw, gflops = measured_bandwidth_gbs(), measured_gflops()
    weight_bytes = 4 * params
    io_bytes = 4 * (cfg.window * cfg.feature_dim + cfg.window * (9 * cfg.num_joints + cfg.num_betas + 3))
    result.floor = {
        "params": params, "flops_per_window": flops, "weight_bytes_fp32": weight_bytes, "io_bytes_per_window": io_bytes,
        "measured_bandwidth_gbs": bw, "measured_sgemm_gflops": gflops,
        "floor_batch1_ms_weights": 1000 * (weight_bytes + io_bytes) / (bw * 1e9),
        "floor_batch1_ms_compute": 1000 * flops / (gflops * 1e9),
        "gru_param_share": gru_params / params, "gru_flop_share": gru_flops / flops,
    }
    result.floor["floor_batch1_ms"] = max(result.floor["floor_batch1_ms_weights"], result.floor["floor_batch1_ms_compute"])


def _find(result: BenchResult, section: str, system: str, batch: int) -> Optional[Timing]:
    return next((t for t in result.timings if (t.section, t.system, t.batch) == (section, system, batch)), None)


def evaluate_goals(result: BenchResult, big_batch: int) -> None:
    """The issue's goals, as ratios measured in this run; a miss says by how much and what dominates."""
    def goal(name: str, value: Optional[float], target: float, why: str = "") -> None:
        if value is None:
            result.goals.append({"goal": name, "value": None, "target": target, "met": None, "why": "not measured"})
            return
        met = bool(value >= target)
        result.goals.append({"goal": name, "value": round(value, 3), "target": target, "met": met,
                             "why": "" if met else f"missed by {target / value:.2f}x; {why}"})

    f = result.floor

    base1 = _find(result, "temporal", "torch eager fp32", 1)
    ort1 = _find(result, "temporal", "onnxruntime fp32", 1)
    why1 = ""
    if base1 and ort1 and f:
        why1 = (f"4x needs {base1.median_ms / 4:.1f} ms = {base1.median_ms / 4 / f['floor_batch1_ms']:.2f}x the floor "
                f"({f['floor_batch1_ms']:.1f} ms); ORT runs at {ort1.median_ms / f['floor_batch1_ms']:.2f}x it, its "
                f"bidirectional GRU kernels ({f.get('gru_flop_share', 0):.0%} of the FLOPs) dominate")
    goal("CPU: ORT FP32 speed-up over torch eager, batch 1", base1 and ort1 and base1.median_ms / ort1.median_ms, 4.0,
         why1)
    if ort1 and result.floor:
        goal("CPU: weight-read floor / ORT FP32 batch-1 time (>= 0.5 means within 2x)",
             result.floor["floor_batch1_ms_weights"] / ort1.median_ms, 0.5)
    base_b = _find(result, "temporal", "torch eager fp32", big_batch)
    ort_b = _find(result, "temporal", "onnxruntime fp32", big_batch)
    why_b = ""
    if base_b and f:
        floor_b = 1000 * big_batch * f["flops_per_window"] / (f["measured_sgemm_gflops"] * 1e9)
        why_b = (f"at batch {big_batch} the floor is arithmetic: {floor_b:.0f} ms at the measured SGEMM rate; torch "
                 f"eager already takes {base_b.median_ms:.0f} ms ({floor_b / base_b.median_ms:.0%} of that rate), so "
                 f"2x over it would be {base_b.median_ms / 2 / floor_b:.2f}x the floor")
    goal(f"CPU: ORT FP32 windows/s over torch eager, batch {big_batch}",
         base_b and ort_b and ort_b.items_per_s / base_b.items_per_s, 2.0, why_b)
    int8 = _find(result, "temporal", "onnxruntime int8", 1)
    goal("CPU: ORT INT8 speed-up over ORT FP32, batch 1", ort1 and int8 and ort1.median_ms / int8.median_ms, 1.0,
         f"the GRUs stay float ({f.get('gru_param_share', 0):.0%} of the weights, {f.get('gru_flop_share', 0):.0%} of "
         "the FLOPs; no one quantizes GRUs), so INT8 only adds Q/DQ work around the small MatMuls at batch 1")
    trt16 = _find(result, "temporal", "tensorrt fp16", 1)
    gpu32 = _find(result, "temporal", "torch eager fp32 (gpu)", 1)
    comp = _find(result, "temporal", "torch.compile fp32 (gpu)", 1)
    if gpu32 is not None:
        goal("GPU: TensorRT FP16 speed-up over torch eager FP32, batch 1", trt16 and gpu32.median_ms / trt16.median_ms, 8.0)
        goal("GPU: TensorRT FP16 speed-up over torch.compile, batch 1", trt16 and comp and comp.median_ms / trt16.median_ms, 2.0)


def write_report(result: BenchResult, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(_jsonable(result), indent=2) + "\n")
    _plots(result, out)
    lines = ["# hmr-trt benchmark", "", f"Machine: {result.machine}", ""]
    lines += ["## Temporal model and backbone", "",
              "| section | system | batch | median ms | p90/median | ms per item | items/s | vs torch eager |",
              "|---|---|---|---|---|---|---|---|"]
    for t in result.timings:
        base = _find(result, t.section, "torch eager fp32", t.batch)
        ratio = f"{base.median_ms / t.median_ms:.2f}x" if base else ""
        lines.append(f"| {t.section} | {t.system} | {t.batch} | {t.median_ms:.1f} | {t.spread:.2f} | "
                     f"{t.per_item_ms:.2f} | {t.items_per_s:.1f} | {ratio} |")
    if result.floor:
        f = result.floor
        lines += ["", "## The floor", "",
                  f"- FLOPs per window: {f['flops_per_window'] / 1e9:.2f} GFLOP; parameters {f['params'] / 1e6:.1f} M "
                  f"({f['weight_bytes_fp32'] / 1e6:.0f} MB in FP32, read once per batch); inputs + outputs "
                  f"{f['io_bytes_per_window'] / 1e3:.0f} kB per window.",
                  f"- Measured here: memory bandwidth {f['measured_bandwidth_gbs']:.1f} GB/s (large copy), "
                  f"SGEMM {f['measured_sgemm_gflops']:.0f} GFLOP/s.",
                  f"- Batch-1 floor: {f['floor_batch1_ms_weights']:.1f} ms to read the weights, "
                  f"{f['floor_batch1_ms_compute']:.1f} ms of arithmetic at the SGEMM rate."]
        ort1 = _find(result, "temporal", "onnxruntime fp32", 1)
        if ort1:
            lines.append(f"- ONNX Runtime FP32 batch 1: {ort1.median_ms:.1f} ms = "
                         f"{ort1.median_ms / f['floor_batch1_ms']:.2f}x the floor.")
    if result.e2e:
        lines += ["", "## End to end (trt-run, emit=all)", "", "| frames | tracks | frames/s | " +
                  " | ".join(result.e2e[0]["timings_s"]) + " |", "|---" * (3 + len(result.e2e[0]["timings_s"])) + "|"]
        for e in result.e2e:
            lines.append(f"| {e['frames']} | {e['tracks']} | {e['fps']} | " +
                         " | ".join(f"{v:.2f}" for v in e["timings_s"].values()) + " |")
        lines.append(f"\nBackend: {result.e2e[0]['backend']}. Stage columns are seconds.")
    if result.tracks_scaling:
        lines += ["", "## Cost vs number of tracks (features in, emit=all)", "",
                  "| tracks | frames each | temporal s | body model s | total s |", "|---|---|---|---|---|"]
        for r in result.tracks_scaling:
            lines.append(f"| {r['tracks']} | {r['frames_per_track']} | {r['temporal_s']:.2f} | "
                         f"{r['body_model_s']:.2f} | {r['total_s']:.2f} |")
    lines += ["", "## Memory", "", *[f"- {k}: {v:.0f} MB" for k, v in result.memory.items()]]
    lines += ["", "## Goals (ratios from this run)", "", "| goal | measured | target | met | why not |",
              "|---|---|---|---|---|"]
    for g in result.goals:
        lines.append(f"| {g['goal']} | {g['value']} | {g['target']} | {g['met']} | {g.get('why', '')} |")
    lines += ["", *[f"- {n}" for n in result.notes]]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _plots(result: BenchResult, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for section in ("temporal", "backbone"):
        systems = sorted({t.system for t in result.timings if t.section == section})
        if not systems:
            continue
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        for s in systems:
            pts = sorted((t.batch, t.median_ms, t.items_per_s) for t in result.timings
                         if t.section == section and t.system == s)
            ax1.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=s)
            ax2.plot([p[0] for p in pts], [p[2] for p in pts], marker="o", label=s)
        for ax, ylabel in ((ax1, "latency per call, ms (median)"), (ax2, "items per second")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("batch")
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
        ax1.legend(fontsize=7)
        fig.suptitle(f"{section}: latency and throughput vs batch")
        fig.tight_layout()
        fig.savefig(out / f"{section}_vs_batch.png", dpi=100)
        plt.close(fig)
    if result.e2e:
        e = result.e2e[-1]
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.barh(list(e["timings_s"]), list(e["timings_s"].values()))
        ax.set_xlabel("seconds")
        ax.set_title(f"trt-run stage breakdown: {e['frames']} frames, {e['tracks']} tracks, {e['fps']} frames/s")
        fig.tight_layout()
        fig.savefig(out / "stage_breakdown.png", dpi=100)
        plt.close(fig)


def _jsonable(result: BenchResult) -> dict[str, Any]:
    d = asdict(result)
    d["timings"] = [{**asdict(t), "per_item_ms": t.per_item_ms, "items_per_s": t.items_per_s, "spread": t.spread}
                    for t in result.timings]
    return d


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_bench(out: Path, export_dir: Optional[Path], video: Optional[Path], tiny: bool = False) -> BenchResult:
    """Everything, sized for a 2-core CPU in under 10 minutes (``tiny``: seconds, for tests)."""
    torch.manual_seed(0)
    result = BenchResult(machine_info())
    cfg = TINY if tiny else CosegConfig()
    with tempfile.TemporaryDirectory() as tmp:
        if export_dir is None or tiny:
            export_dir = _tiny_export(Path(tmp)) if tiny else _full_export(Path(tmp), video)
        batches = [1, 4] if tiny else [1, 4, 16, 32]
        budget = 0.2 if tiny else 4.0
        bench_temporal(result, cfg, export_dir, batches, budget,
                       temporal_onnx_by_precision(export_dir, Path(tmp), cfg, result))
        if not tiny:
            bench_backbone(result, export_dir, [1, 8, 32], budget, 224)
            bench_e2e(result, export_dir, video, [50, 200])
        bench_tracks(result, export_dir, cfg, [1, 4] if tiny else [1, 4, 16], 16 if tiny else 64)
        floor_figures(result, cfg)
        result.memory["peak host RSS"] = peak_rss_mb()
        if torch.cuda.is_available():
            result.memory["peak GPU memory (torch)"] = torch.cuda.max_memory_allocated() / 2**20
        evaluate_goals(result, batches[-1])
        write_report(result, out)
    return result


def _full_export(tmp: Path, video: Optional[Path]) -> Path:
    from .pipeline import ExportOptions, run_export

    run_export(ExportOptions(out=tmp / "export", video=video))
    return tmp / "export"


def _tiny_export(tmp: Path) -> Path:
    """A TINY-config export with the manifest layout trt-run expects (no backbone, no parity)."""
    from hmr_trt.manifest import Artifact, sha256_of
    from hmr_trt.profile import ShapeProfile

    from . import onnx_export
    from .pipeline import body_models

    out = tmp / "tiny"
    out.mkdir()
    profile = ShapeProfile(1, 4, 64)
    model = build_model(TINY.with_(fde_mode="matrix"))
    ins, outs = onnx_export.export_temporal(model, out / "t.onnx", profile)
    body, _, _ = body_models(None)
    b_ins, b_outs = onnx_export.export_body_model(body, out / "b.onnx", 1024)
    manifest = Manifest(model="coseg", config=TINY.to_dict(), profile=profile.to_dict())
    manifest.add(Artifact("temporal", "t.onnx", "onnx", "fp32", sha256_of(out / "t.onnx"), ins, outs))
    manifest.add(Artifact("body_model", "b.onnx", "onnx", "fp32", sha256_of(out / "b.onnx"), b_ins, b_outs))
    manifest.write(out)
    return out


def main() -> None:
    import typer

    from hmr_trt.cli_common import run_cli

    def bench(
        out: Path = typer.Option(Path("out/bench"), help="Folder for report.md, results.json and plots."),
        export: Optional[Path] = typer.Option(Path("out/demo/export"), help="Export dir (made when missing)."),
        video: Optional[Path] = typer.Option(Path("data/vtest.avi"), help="Video for the end-to-end section."),
        tiny: bool = typer.Option(False, help="A tiny configuration that runs in seconds (tests)."),
        gpu: bool = typer.Option(False, help="Require a GPU (fail if none) instead of CPU-only sections."),
    ) -> None:
        def job() -> None:
            from hmr_trt.errors import ConfigError

            if gpu and not torch.cuda.is_available():
                raise ConfigError("--gpu given but torch sees no CUDA device")
            exp = export if export is not None and (export / "manifest.json").is_file() else None
            vid = video if video is not None and video.is_file() else None
            t = time.perf_counter()
            result = run_bench(out, exp, vid, tiny=tiny)
            print(f"wrote {out}/report.md ({time.perf_counter() - t:.0f} s)")
            for g in result.goals:
                print(f"  {g['goal']}: {g['value']} (target {g['target']}) -> {g['met']}")

        run_cli(job)

    typer.run(bench)
