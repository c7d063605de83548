"""What the benchmark measures, per registered model, through the model adapter only (no model names).

``measure_model`` runs every section for one model (``hmr_trt.registry.adapter(name)``), sized by a
``BenchPlan`` (quick: ``make bench``; full: ``make bench-zoo``; tiny: tests): its reference module
(``reference(cfg)``) and model graph (``contract_for(cfg).model_graph``) timed at each batch size on
torch eager FP32 and ONNX Runtime (FP32 exported here for timing, or the export's ONNX per precision),
all systems of one batch in one round robin (``bench_timing``); the per-frame step of a model with a
recurrent step graph; on a GPU also torch eager FP16, torch.compile and the export's TensorRT engines.
Then the floor: FLOPs per item (torch's FlopCounterMode), weight bytes, and this machine's measured
memory bandwidth and SGEMM rate. Outside the tiny plan: the feature extractor the contract names (once
per extractor, however many models share it), and, with an export of the model, the cost as the
number of tracks grows and ``trt-run`` end to end on the first frames of the video. Each round robin
reports one progress line through ``say``.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from hmr_trt import registry
from hmr_trt.contract import GraphSpec, ModelContract
from hmr_trt.errors import ConfigError
from hmr_trt.manifest import Manifest
from hmr_trt.runtime.backends import OnnxRuntimeBackend

from .bench_report import BASELINE, BenchResult, describe_rows
from .bench_timing import RoundRobin, System, Timing, time_systems

Say = Callable[[str], None]  # one progress line (bench.Progress prints it, flushed)


def _silent(_message: str) -> None:
    pass


@dataclass(frozen=True)
class BenchPlan:
    """How much to measure per model: batch sizes, round-robin seconds per batch size, and the sizes of the
    end-to-end sections (which need an export of the model)."""

    name: str
    batches: Tuple[int, ...]
    budget_s: float
    max_reps: int
    extractor_batches: Tuple[int, ...]
    track_counts: Tuple[int, ...]
    track_frames: int
    e2e_frames: Tuple[int, ...]
    tiny: bool = False  # the adapters' tiny configurations (tests)
    # A batch size whose call is estimated (linearly from the largest batch measured below it, slowest system)
    # to take longer than this many seconds is skipped and recorded as such; 0: every batch size is measured.
    max_call_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.batches or min(self.batches) < 1 or not self.budget_s > 0 or self.max_call_s < 0:
            raise ConfigError(f"bench plan {self.name}: batches >= 1, budget_s > 0 and max_call_s >= 0, got {self}")

    @property
    def round_robin(self) -> RoundRobin:
        return RoundRobin(warmup=1, min_reps=3, max_reps=self.max_reps, budget_s=self.budget_s)

    def to_dict(self) -> Dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


# quick: `make bench` (the default model in minutes on 2 cores); full: `make bench-zoo` (every model, the
# README's zoo table); tiny: the tests' seconds-long run on tiny configurations. The 30 s cap per call bounds a
# round robin of two systems at about (1 warm-up + 3 rounds) x 2 x 30 s = 4 min: without it DecoMR, InstanceHMR
# and HMR 2.0 (ViT-H) at batch 16 and 32 take 2-5 min per call on 2 CPU cores, hours for the full plan.
PLANS: Dict[str, BenchPlan] = {
    "quick": BenchPlan("quick", (1, 8), 2.0, 30, (1, 8), (1, 4), 32, (60,), max_call_s=30.0),
    "full": BenchPlan("full", (1, 4, 16, 32), 4.0, 50, (1, 8, 32), (1, 4, 16), 64, (50, 200), max_call_s=30.0),
    "tiny": BenchPlan("tiny", (1, 4), 0.1, 5, (), (), 0, (), tiny=True),
}


def over_cap(result: BenchResult, say: Say, model: str, section: str, batch: int, max_call_s: float) -> bool:
    """Whether ``batch`` is skipped: its call, estimated from the largest smaller batch of this model and section
    already timed (its slowest system's minimum x batch / that batch), exceeds ``max_call_s`` (0: no cap). A
    skip is recorded in ``result.skipped`` and said in one progress line."""
    done = [t for t in result.timings if (t.model, t.section) == (model, section) and t.batch < batch]
    if not max_call_s or not done:
        return False
    base = max(t.batch for t in done)
    est_s = max(t.min_ms for t in done if t.batch == base) / 1000.0 * batch / base
    if est_s <= max_call_s:
        return False
    result.skipped.append({"model": model, "section": section, "batch": batch, "est_call_s": round(est_s, 1),
                           "from_batch": base, "max_call_s": max_call_s})
    say(f"{model} {section} batch {batch}: skipped: est. {est_s:.0f} s per call (batch {base}'s slowest call x "
        f"{batch / base:g}; over the {max_call_s:g} s cap per call)")
    return True


def _measure(result: BenchResult, say: Say, model: str, section: str, batch: int, systems: Sequence[System],
             plan: RoundRobin) -> List[Timing]:
    """One round robin: its rows into ``result`` and one progress line."""
    rows = time_systems(model, section, batch, systems, plan)
    result.timings += rows
    say(describe_rows(rows))
    return rows


@dataclass
class ModelUnderTest:
    """One registered model, built once for every section."""

    name: str
    adapter: Any
    cfg: Any
    contract: ModelContract
    reference: torch.nn.Module
    step: Optional[torch.nn.Module] = None  # track models (WHAM): the one-frame step the model graph computes

    @property
    def graph(self) -> GraphSpec:
        return self.contract.model_graph

    @property
    def timed(self) -> torch.nn.Module:
        """The torch module the model graph computes: the reference itself, or a track model's step (one frame
        for a batch of live tracks; its whole-sequence forward takes other inputs)."""
        return self.reference if self.step is None else self.step

    def inputs(self, batch: int, device: str = "cpu") -> tuple:
        return tuple(t.to(device) for t in self.adapter.example_inputs(self.cfg, self.graph.name, batch))

    def feed(self, batch: int) -> Dict[str, np.ndarray]:
        return {n: t.numpy() for n, t in zip(self.graph.input_names, self.inputs(batch))}


def load_model(name: str, tiny: bool) -> ModelUnderTest:
    adapter = registry.adapter(name)
    cfg = adapter.tiny_config() if tiny else adapter.default_config()
    reference = adapter.reference(cfg).eval()
    contract = adapter.contract_for(cfg)
    step = adapter.exportable(reference, contract.model_graph.name).eval() if contract.family == "track" else None
    return ModelUnderTest(name, adapter, cfg, contract, reference, step)


# ---------------------------------------------------------------------------------------------
# this machine


def machine_info() -> Dict[str, Any]:
    info: Dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                            "python": platform.python_version(), "torch": torch.__version__,
                            "threads": torch.get_num_threads()}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    return info


def _best_seconds(fn: Callable[[], Any], reps: int = 3) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measured_bandwidth_gbs(size_mb: int = 256) -> float:
    """Host memory bandwidth: bytes read + written by a large copy, best of 3."""
    src = np.ones(size_mb * (1 << 20) // 4, dtype=np.float32)
    dst = np.empty_like(src)
    return 2 * src.nbytes / _best_seconds(lambda: np.copyto(dst, src)) / 1e9


def measured_gflops(n: int = 1024) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / _best_seconds(lambda: a @ b) / 1e9


# ---------------------------------------------------------------------------------------------
# ONNX files to time


def onnx_for_timing(mut: ModelUnderTest, path: Path) -> Path:
    """The model graph exported for timing as trt-export writes it (FP32, the contract's names and shapes, the
    weights in ``<name>.onnx.data`` beside it past protobuf's 2 GB, e.g. HMR 2.0's ViT-H)."""
    from .onnx_export import onnx_from_module

    module = mut.adapter.exportable(mut.reference, mut.graph.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        onnx_from_module(module, mut.graph, mut.inputs(1), path)
    return path


def export_of(export_dir: Optional[Path], model: str) -> Optional[Manifest]:
    """The manifest of ``export_dir`` when it is an export of ``model``."""
    if export_dir is None or not (Path(export_dir) / "manifest.json").is_file():
        return None
    manifest = Manifest.read(export_dir)
    return manifest if manifest.model == model else None


def _same_inputs(manifest: Manifest, mut: ModelUnderTest) -> bool:
    """The export's model graph takes the same inputs (names, shapes) as the configuration benchmarked."""
    if not manifest.contract:
        return False
    exported = manifest.model_contract().graph_for("model")
    return exported is not None and exported.inputs == mut.graph.inputs


def onnx_by_precision(mut: ModelUnderTest, export_dir: Optional[Path], tmp: Path,
                      result: BenchResult) -> Dict[str, Path]:
    """The export's model-graph ONNX per precision when ``export_dir`` holds this model, else FP32 made here."""
    manifest = export_of(export_dir, mut.name)
    if manifest is not None and _same_inputs(manifest, mut):
        found = {p: Path(export_dir) / a.path for p in ("fp32", "fp16", "int8")
                 if (a := manifest.find(mut.graph.name, "onnx", p)) is not None}
        if found:
            return found
    elif manifest is not None:
        result.notes.append(f"{mut.name}: the export in {export_dir} has other input shapes than the benchmarked "
                            "configuration; its ONNX files are not timed")
    result.notes.append(f"{mut.name}: ONNX Runtime times an FP32 graph exported by the benchmark (no export of "
                        f"{mut.name} given with --export, so no FP16/INT8 rows)")
    return {"fp32": onnx_for_timing(mut, tmp / f"{mut.name}_{mut.graph.name}.onnx")}


# ---------------------------------------------------------------------------------------------
# sections


def bench_model(result: BenchResult, mut: ModelUnderTest, onnx_paths: Dict[str, Path], batches: Sequence[int],
                plan: RoundRobin, say: Say = _silent, max_call_s: float = 0.0) -> None:
    """torch eager FP32 and ONNX Runtime per precision, in one round robin per batch size (``over_cap``: a
    batch size whose call is estimated over ``max_call_s`` is skipped)."""
    sessions = {p: OnnxRuntimeBackend(path) for p, path in onnx_paths.items()}
    for backend in sessions.values():
        backend.activate()
    try:
        for batch in batches:
            if over_cap(result, say, mut.name, mut.graph.name, batch, max_call_s):
                continue
            inputs, feed = mut.inputs(batch), mut.feed(batch)
            systems = [System(BASELINE, _no_grad(mut.timed, inputs))]
            systems += [System(f"onnxruntime {p}", lambda b=b, feed=feed: b.infer(feed)) for p, b in sessions.items()]
            _measure(result, say, mut.name, mut.graph.name, batch, systems, plan)
    finally:
        for backend in sessions.values():
            backend.deactivate()


STEP_SECTION = "per new frame: window vs step"


def bench_step(result: BenchResult, mut: ModelUnderTest, window_onnx: Path, tmp: Path, batches: Sequence[int],
               plan: RoundRobin, say: Say = _silent, max_call_s: float = 0.0) -> None:
    """Causal models with a recurrent step graph (VIBE): the cost of one new frame per track (batch = tracks),
    as a T-frame window forward (``--emit last`` without a step graph; torch eager is the baseline) against
    one step of the step graph, torch and ONNX Runtime, in one round robin per batch size."""
    from hmr_trt.runtime.recurrent import recurrent_step_graph

    from .onnx_export import onnx_from_module

    if mut.contract.family == "track":
        say(f"{mut.name}: its model graph is already one step per new frame (the rows above; batch = live tracks)")
        return
    graph = recurrent_step_graph(mut.contract)
    if graph is None:
        say(f"{mut.name}: no recurrent step graph (each new frame costs a window): no per-frame step rows"
            if mut.contract.family == "window" else f"{mut.name}: a {mut.contract.family} model: no per-frame step rows")
        return
    step = mut.adapter.exportable(mut.reference, graph.name).eval()
    path = tmp / f"{mut.name}_{graph.name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_from_module(step, graph, mut.adapter.example_inputs(mut.cfg, graph.name, 2), path)
    sessions = {"window": OnnxRuntimeBackend(window_onnx), "step": OnnxRuntimeBackend(path)}
    for backend in sessions.values():
        backend.activate()
    try:
        for batch in batches:
            if over_cap(result, say, mut.name, STEP_SECTION, batch, max_call_s):
                continue
            step_in = mut.adapter.example_inputs(mut.cfg, graph.name, batch)
            step_feed = {n: t.numpy() for n, t in zip(graph.input_names, step_in)}
            feed = mut.feed(batch)
            systems = [System(BASELINE, _no_grad(mut.reference, mut.inputs(batch))),
                       System("torch eager fp32 step", _no_grad(step, step_in)),
                       System("onnxruntime fp32 window", lambda feed=feed: sessions["window"].infer(feed)),
                       System("onnxruntime fp32 step", lambda f=step_feed: sessions["step"].infer(f))]
            _measure(result, say, mut.name, STEP_SECTION, batch, systems, plan)
    finally:
        for backend in sessions.values():
            backend.deactivate()


def _no_grad(module: torch.nn.Module, inputs: tuple) -> Callable[[], Any]:
    def run() -> Any:
        with torch.no_grad():
            return module(*inputs)

    return run


def bench_model_gpu(result: BenchResult, mut: ModelUnderTest, batches: Sequence[int], plan: RoundRobin,
                    engines: Optional[Dict[str, Path]] = None, say: Say = _silent) -> None:
    """torch eager FP32/FP16, torch.compile and TensorRT engines (plain and CUDA graphs), one round robin per batch."""
    import copy

    sync = torch.cuda.synchronize
    gpu = copy.deepcopy(mut.timed).cuda()
    half = copy.deepcopy(mut.timed).cuda().half()
    compiled = torch.compile(copy.deepcopy(mut.timed).cuda())
    trt_backends = _tensorrt_backends(engines or {}, result)
    try:
        for batch in batches:
            x = mut.inputs(batch, "cuda")
            xh = tuple(t.half() if t.is_floating_point() else t for t in x)
            systems = [System("torch eager fp32 (gpu)", _no_grad(gpu, x), sync),
                       System("torch eager fp16 (gpu)", _no_grad(half, xh), sync),
                       System("torch.compile fp32 (gpu)", _no_grad(compiled, x), sync)]
            feed = mut.feed(batch)
            systems += [System(label, lambda b=b, feed=feed: b.infer(feed)) for label, b in trt_backends.items()
                        if b.max_batch is None or batch <= b.max_batch]
            _measure(result, say, mut.name, mut.graph.name, batch, systems,
                     RoundRobin(3, plan.min_reps, plan.max_reps, plan.budget_s))
    finally:
        for b in trt_backends.values():
            b.deactivate()


def _tensorrt_backends(engines: Dict[str, Path], result: BenchResult) -> Dict[str, Any]:
    """{label: activated TensorRTBackend} for each engine precision, plain and with CUDA graphs."""
    if not engines:
        return {}
    from hmr_trt.errors import HmrTrtError
    from hmr_trt.runtime.trt_backend import TensorRTBackend

    backends: Dict[str, Any] = {}
    for precision, path in engines.items():
        for graphs in (False, True):
            label = f"tensorrt {precision}" + (" + cuda graphs" if graphs else "")
            backend = TensorRTBackend(path, cuda_graphs=graphs)
            try:
                backend.activate()
            except HmrTrtError as exc:
                result.notes.append(f"{label} not timed: {exc}")
                continue
            backends[label] = backend
    return backends


def engines_of(export_dir: Optional[Path], mut: ModelUnderTest) -> Dict[str, Path]:
    """The export's model-graph engines per precision (built by trt-build into the export's manifest)."""
    manifest = export_of(export_dir, mut.name)
    if manifest is None or not _same_inputs(manifest, mut):
        return {}
    return {a.precision: Path(export_dir) / a.path for a in manifest.artifacts
            if a.kind == "engine" and a.name == mut.graph.name}


def floor_figures(result: BenchResult, mut: ModelUnderTest, bandwidth_gbs: float, gflops: float) -> None:
    """FLOPs per item (one counted pass at batch 1), weight bytes and recurrent share, against this machine."""
    from torch.utils.flop_counter import FlopCounterMode

    model = mut.timed
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*mut.inputs(1))
    counts = counter.get_flop_counts()
    flops = float(sum(counts.get("Global", {}).values()))
    recurrent = {f"{type(model).__name__}.{name}": m for name, m in model.named_modules()
                 if isinstance(m, torch.nn.RNNBase)}
    rec_flops = sum(sum(counts.get(name, {}).values()) for name in recurrent)
    params = sum(p.numel() for p in model.parameters())
    rec_params = sum(p.numel() for m in recurrent.values() for p in m.parameters())
    io_bytes = sum(t.numel() * t.element_size() for t in mut.inputs(1))
    with torch.no_grad():
        outs = model(*mut.inputs(1))
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    io_bytes += sum(t.numel() * t.element_size() for t in outs if isinstance(t, torch.Tensor))
    weight_bytes = 4 * params
    f: Dict[str, Any] = {
        "params": params, "flops_per_item": flops, "weight_bytes_fp32": weight_bytes, "io_bytes_per_item": io_bytes,
        "measured_bandwidth_gbs": bandwidth_gbs, "measured_sgemm_gflops": gflops,
        "floor_batch1_ms_weights": 1000 * (weight_bytes + io_bytes) / (bandwidth_gbs * 1e9),
        "floor_batch1_ms_compute": 1000 * flops / (gflops * 1e9),
        "recurrent_param_share": rec_params / params if params else 0.0,
        "recurrent_flop_share": rec_flops / flops if flops else 0.0,
    }
    f["floor_batch1_ms"] = max(f["floor_batch1_ms_weights"], f["floor_batch1_ms_compute"])
    result.floors[mut.name] = f


def _spin_resnet50() -> torch.nn.Module:
    from .backbone import ResNet50Backbone

    return ResNet50Backbone.from_seed(0).eval()


# contract.feature_extractor -> its torch module (seeded weights: timing only); shared by the models that use it
FEATURE_EXTRACTORS: Dict[str, Callable[[], torch.nn.Module]] = {"spin_resnet50": _spin_resnet50}


def bench_feature_extractor(result: BenchResult, mut: ModelUnderTest, export_dir: Optional[Path],
                            batches: Sequence[int], plan: RoundRobin, say: Say = _silent,
                            max_call_s: float = 0.0) -> None:
    """The model's feature extractor (torch eager FP32 vs the export's ONNX on ONNX Runtime), once per extractor."""
    graph = mut.contract.graph_for("feature_extractor")
    name = mut.contract.feature_extractor
    if graph is None or name not in FEATURE_EXTRACTORS or any(t.model == name for t in result.timings):
        return
    module = FEATURE_EXTRACTORS[name]()
    manifest = export_of(export_dir, mut.name)
    art = manifest.find(graph.name, "onnx", "fp32") if manifest is not None else None
    ort = OnnxRuntimeBackend(Path(export_dir) / art.path) if art is not None else None
    if ort is None:
        result.notes.append(f"{name}: no ONNX Runtime row (no export of {mut.name} with a {graph.name} graph)")
    else:
        ort.activate()
    try:
        for batch in batches:
            if over_cap(result, say, name, graph.name, batch, max_call_s):
                continue
            x = torch.randn(batch, *graph.inputs[0].shape[1:])
            feed = {graph.inputs[0].name: x.numpy()}
            systems = [System(BASELINE, _no_grad(module, (x,)))]
            if ort is not None:
                systems.append(System("onnxruntime fp32", lambda feed=feed: ort.infer(feed)))
            _measure(result, say, name, graph.name, batch, systems, plan)
    finally:
        if ort is not None:
            ort.deactivate()


def bench_e2e(result: BenchResult, export_dir: Path, video: Optional[Path], lengths: Sequence[int],
              say: Say = _silent, model: str = "") -> None:
    """trt-run on the first N frames of the video."""
    from hmr_trt.runtime.pipeline import RunOptions, run_video

    if video is None:
        result.notes.append("end-to-end video timings skipped: no video")
        say("end to end: skipped (no video)")
        return
    for n in lengths:
        say(f"{model} end to end: trt-run on the first {n} frames of {Path(video).name} ...")
        with tempfile.TemporaryDirectory() as tmp:
            summary = run_video(RunOptions(out=Path(tmp) / "run", export_dir=export_dir, video=video,
                                           max_frames=n, min_track_frames=1), progress=_frame_ticks(say, model, n))
        result.e2e.append({"model": model, "frames": summary["frames_decoded"], "tracks": summary["tracks"],
                           "fps": summary["frames_per_second"], "timings_s": summary["timings_s"],
                           "total_s": summary["total_s"], "backend": summary["backend"]})
        say(f"{model} end to end, {summary['frames_decoded']} frames: {summary['frames_per_second']} frames/s, "
            f"{summary['tracks']} tracks ({summary['backend']})")


def _frame_ticks(say: Say, model: str, total: int, parts: int = 4) -> Callable[[int], None]:
    """trt-run's per-frame progress callback as a line every ``total / parts`` frames."""
    every = max(1, total // parts)
    state = {"done": 0, "next": every, "start": time.perf_counter()}

    def tick(frames: int) -> None:
        state["done"] += frames
        if state["done"] >= state["next"] and state["done"] < total:
            state["next"] += every
            say(f"{model} end to end: {state['done']}/{total} frames read "
                f"({time.perf_counter() - state['start']:.0f} s)")

    return tick


def bench_tracks(result: BenchResult, export_dir: Path, contract: ModelContract, counts: Sequence[int],
                 frames: int, say: Say = _silent, model: str = "") -> None:
    """Model + body model cost as the number of tracks grows (precomputed features in)."""
    from hmr_trt.runtime.pipeline import RunOptions, run_features

    rng = np.random.default_rng(0)
    for k in counts:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "f.npz"
            np.savez(path, features=rng.standard_normal((k, frames, contract.feature_dim)).astype(np.float32))
            summary = run_features(RunOptions(out=Path(tmp) / "run", export_dir=export_dir, features=path,
                                              vertices=False))
        result.tracks_scaling.append({"model": model, "tracks": k, "frames_per_track": frames,
                                      "timings_s": summary["timings_s"], "total_s": summary["total_s"]})
        say(f"{model} tracks: {k} x {frames} frames (features in) in {summary['total_s']:.2f} s")


def machine_floor(plan: BenchPlan) -> Tuple[float, float]:
    """This machine's memory bandwidth (GB/s) and SGEMM rate (GFLOP/s), small for the tiny plan."""
    if plan.tiny:
        return measured_bandwidth_gbs(32), measured_gflops(256)
    return measured_bandwidth_gbs(), measured_gflops()


def measure_model(result: BenchResult, name: str, export_dir: Optional[Path], video: Optional[Path],
                  plan: BenchPlan, machine: Tuple[float, float], say: Say = _silent) -> None:
    """Every section for one model into ``result``. ``export_dir``: a checked export of this model, or None
    (ONNX Runtime then times an FP32 graph exported here, and the end-to-end sections are skipped)."""
    rr = plan.round_robin
    say(f"{name}: building the torch reference ({'tiny' if plan.tiny else 'default'} configuration)")
    mut = load_model(name, plan.tiny)
    if mut.step is not None:
        result.notes.append(f"{name}: the {mut.graph.name} rows are one new video frame for a batch of live tracks "
                            "(batch = tracks); its keypoints and image features are the vitpose (per crop) and hmr2 "
                            "models' own rows")
    with tempfile.TemporaryDirectory() as tmp:
        if export_of(export_dir, name) is None:
            say(f"{name}: exporting the {mut.graph.name} graph to ONNX (FP32) for timing")
        onnx_paths = onnx_by_precision(mut, export_dir, Path(tmp), result)
        say(f"{name}: timing the {mut.graph.name} graph: torch eager vs ONNX Runtime "
            f"{'/'.join(onnx_paths)} at batch {', '.join(map(str, plan.batches))}")
        bench_model(result, mut, onnx_paths, plan.batches, rr, say, plan.max_call_s)
        bench_step(result, mut, onnx_paths["fp32"], Path(tmp), plan.batches, rr, say, plan.max_call_s)
    floor_figures(result, mut, *machine)
    f = result.floors[name]
    say(f"{name}: floor {f['flops_per_item'] / 1e9:.2f} GFLOP and {f['weight_bytes_fp32'] / 1e6:.0f} MB of weights "
        f"per item; batch 1 cannot beat {f['floor_batch1_ms']:.1f} ms here")
    if torch.cuda.is_available():
        bench_model_gpu(result, mut, plan.batches, rr, engines_of(export_dir, mut), say)
    if plan.tiny:
        return
    bench_feature_extractor(result, mut, export_dir, plan.extractor_batches, rr, say, plan.max_call_s)
    if export_of(export_dir, name) is None:
        result.notes.append(f"{name}: end-to-end and track-scaling sections skipped: no export of {name} "
                            f"(make one with trt-export --model {name}, or trt-bench --make-export)")
        say(f"{name}: no export: end-to-end and track-scaling sections skipped")
        return
    if mut.contract.family == "window":
        bench_tracks(result, Path(export_dir), mut.contract, plan.track_counts, plan.track_frames, say, name)
    bench_e2e(result, Path(export_dir), video, plan.e2e_frames, say, name)


# ---------------------------------------------------------------------------------------------
# scene model vs window model (issue 12 part 5): runs when both exports are given


def bench_scene_vs_window(result: BenchResult, window_export: Path, scene_export: Path, video: Optional[Path],
                          frames: int = 60, people: Sequence[int] = (1, 4, 16), reps: int = 3) -> None:
    """Frames per second end to end on ``frames`` frames of the video for both exports, with per-stage shares;
    then the per-frame cost of each family's people-dependent path for ``people`` people per frame, timed
    stage by stage on the exports' graphs (window: crop + backbone + temporal + body model per person,
    after one detector call; scene: letterbox + maps graph once, then post-processing and the body model
    per person). Seeded weights find arbitrary people, so people counts are set, not detected."""
    from hmr_trt.runtime.pipeline import RunOptions, run_video

    if video is None:
        result.notes.append("scene vs window: skipped (no video)")
        return
    section: Dict[str, Any] = {"frames": frames, "e2e": {}, "people": []}
    for label, export in (("window", window_export), ("scene", scene_export)):
        with tempfile.TemporaryDirectory() as tmp:
            s = run_video(RunOptions(out=Path(tmp) / "run", export_dir=export, video=video, max_frames=frames,
                                     min_track_frames=1, vertices=False))
            rows = sum(r["frames"] for r in s["track_files"])
        total = sum(s["timings_s"].values()) or 1.0
        section["e2e"][label] = {"model": s["model"], "fps": s["frames_per_second"], "total_s": s["total_s"],
                                 "people_per_frame": round(rows / max(s["frames_decoded"], 1), 2),
                                 "shares": {k: round(v / total, 3) for k, v in s["timings_s"].items() if v > 0},
                                 "backend": s["backend"], "detector": s.get("detector", "")}
    frame = next(iter(_video_frames(video, 1)))
    section["people"] = [{"people": k, "window_ms": _window_ms(window_export, frame, k, reps),
                          "scene_ms": _scene_ms(scene_export, frame, k, reps)} for k in people]
    result.scene_vs_window = section


def _video_frames(video: Path, n: int) -> List[np.ndarray]:
    from hmr_trt.runtime.video import frames_from_video

    return [f for _, f in frames_from_video(video, n)]


def _window_ms(export: Path, frame: np.ndarray, k: int, reps: int) -> Dict[str, float]:
    from hmr_trt.runtime.backends_select import open_backends
    from hmr_trt.runtime.crops import crop_from_frame, normalise_crops, tile_boxes
    from hmr_trt.runtime.pipeline import _detector

    detector = _detector("auto")
    with open_backends(export, "auto") as b:
        c = b.contract
        windows = np.random.default_rng(0).standard_normal((k, c.window, c.feature_dim)).astype(np.float32)
        inputs = b.temporal.inputs[0].name

        def detect() -> Any:
            return detector.detect(frame)

        def per_person() -> Any:
            crops = np.stack([crop_from_frame(frame, box) for box in tile_boxes(*frame.shape[:2], k)])
            b.infer_backbone(normalise_crops(crops))
            out = b.temporal.infer({inputs: windows})
            pose, betas = out["pose_rotmat"], out["betas"]
            return b.infer_body(pose.reshape(-1, *pose.shape[-3:])[:k], betas.reshape(-1, betas.shape[-1])[:k])

        return {"detect": 1000 * _best_seconds(detect, reps), "per_person_path": 1000 * _best_seconds(per_person, reps)}


def _scene_ms(export: Path, frame: np.ndarray, k: int, reps: int) -> Dict[str, float]:
    from hmr_trt.runtime.backends_select import open_backends
    from hmr_trt.runtime.scene import letterbox, people_from_maps

    with open_backends(export, "auto") as b:
        graph = b.contract.model_graph
        image, pad = letterbox(frame, int(b.contract.image_size), bgr=True)
        maps = b.temporal.infer({graph.input_names[0]: image[None]})

        def network() -> Any:
            return b.temporal.infer({graph.input_names[0]: letterbox(frame, int(b.contract.image_size), bgr=True)[0][None]})

        def body(smpl: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
            return {"joints3d": b.infer_body(smpl["pose_rotmat"], smpl["betas"])[1]}

        def post() -> Any:  # threshold near 0 and max_person k: k people (seeded maps peak everywhere)
            return people_from_maps(maps, 1e-6, pad, body_model=body, max_person=k)

        found = len(post())
        return {"network": 1000 * _best_seconds(network, reps), "people_path": 1000 * _best_seconds(post, reps),
                "people_found": found}
