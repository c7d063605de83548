"""The export job behind ``trt-export``: build the reference, export, validate, measure parity, write.

Model-agnostic: the model's contract (``hmr_trt.registry``) lists the graphs to export and their
shapes; its adapter builds the torch reference, the exportable modules and the example inputs.
The body model (role ``body_model``) and the SPIN feature extractor (role ``feature_extractor``)
are the pipeline's own. Everything is written into a staging directory that replaces ``--out`` only
at the end, so a failure (bad checkpoint, FP32 parity, a reduced-precision miss under ``--strict``,
Ctrl-C) leaves nothing half-written.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from hmr_trt import external_data, registry
from hmr_trt.contract import GraphSpec, ModelContract
from hmr_trt.engines.preflight import MAX_OPSET_TRT86, validate_onnx
from hmr_trt.errors import ConfigError, InputSpecError, ParityError
from hmr_trt.fileio import path_problem
from hmr_trt.manifest import Artifact, Manifest, sha256_of, staged_output, tool_versions
from hmr_trt.profile import ShapeProfile
from hmr_trt.runtime.backends import OnnxRuntimeBackend

from . import onnx_export, parity, step_graph
from .backbone import ResNet50Backbone, backbone_from_checkpoint
from .body_model import ExportableSMPL, SMPLReference
from .smpl_io import load_body_model_data
from .synthetic_smpl import make_synthetic_smpl

PRECISIONS = ("fp32", "fp16", "int8")
CALIBRATION_START_FRAME = 400  # calibration frames of the sample video do not overlap the parity windows
FACES_NAME = "body_model_faces.npy"  # runtime/backends_select.py reads it under this name
PARITY_REFERENCE_NAME = "parity_reference.npz"  # torch outputs for the parity windows (GPU tests, no torch there)
BATCH_SIZES = (1, 2, 7)
SIZES = ("released", "tiny")  # trt-export --size
TINY_NOTE = ("TINY CONFIGURATION (trt-export --size tiny): the model's small untrained network with seeded "
             "weights, for trying the pipeline and CI only; NOT the released network, its outputs mean nothing")


@dataclass
class ExportOptions:
    out: Path
    model: str = registry.DEFAULT_MODEL
    precision: str = "fp32"
    window: int | None = None  # None: the model's default config
    profile: ShapeProfile = field(default_factory=ShapeProfile)
    checkpoint: Path | None = None
    backbone_checkpoint: Path | None = None
    smpl_model: Path | None = None
    mean_params: Path | None = None
    video: Path | None = None  # real frames for the parity windows
    exporter: str = "torchscript"
    parity_windows: int = 7
    config: Any = None  # the adapter's Config; overrides window (tests use tiny configs)
    with_backbone: bool = True
    calib: Path | None = None  # INT8 calibration: a video, a folder of videos, or .npz feature files
    calib_cache: Path | None = None  # default: ~/.cache/hmr-trt/calibration (survives re-exports)
    recipe: str | None = None  # precision recipe of the contract (default: the contract's for --precision)
    max_drift_mm: float | None = None  # a reduced-precision miss over this exits 1 with nothing written
    strict: bool = False  # the same with the contract's goal as the limit
    build_engines: bool = True  # when TensorRT and a GPU are present
    step: bool | None = None  # step graph: None = the model's own, or the generic one under 100 MB (step_graph.py)
    decomr_data: Path | None = None  # DecoMR's UV data folder (default: hmr-trt's synthetic layout)
    size: str = "released"  # "tiny": the adapter's tiny config (untrained, seeded), labelled so in the manifest


Step = Callable[[str], Any]  # a context-manager factory that shows one step of progress


@dataclass
class ExportResult:
    manifest: Manifest
    reports: list[parity.ParityReport]
    seconds: dict[str, float]


@dataclass
class Job:
    """What _validate_options resolves: the adapter, the config and the contract at that config."""

    adapter: Any
    cfg: Any
    contract: ModelContract
    recipe: str = ""
    limit_mm: float | None = None


def check_feature_windows(windows: np.ndarray, cfg: Any, what: str) -> None:
    """``cfg``: a window model's contract (or config) with ``window`` and ``feature_dim``."""
    if windows.ndim != 3:
        raise InputSpecError(f"{what}: expected windows (B, T, C), got shape {windows.shape}")
    if windows.shape[1] != cfg.window:
        raise InputSpecError(f"{what}: window length {windows.shape[1]}, the model expects T = {cfg.window}")
    if windows.shape[2] != cfg.feature_dim:
        raise InputSpecError(f"{what}: feature width {windows.shape[2]}, the model expects {cfg.feature_dim}")


def _validate_options(opts: ExportOptions) -> Job:
    if opts.model not in registry.names():
        raise ConfigError(f"unknown --model {opts.model!r}; available: {', '.join(registry.names())}")
    check_input_paths(opts)
    adapter = registry.adapter(opts.model)
    adapter.use_data_dir(opts.decomr_data)  # models without data files refuse a folder
    if opts.size not in SIZES:
        raise ConfigError(f"--size must be one of {', '.join(SIZES)}, got {opts.size!r}")
    if opts.size == "tiny" and (opts.checkpoint or opts.backbone_checkpoint):
        raise ConfigError("--size tiny is an untrained configuration with seeded weights; a checkpoint is "
                          "exported at its own size (leave --size out)")
    if opts.config is not None:
        cfg = opts.config
    else:
        cfg = adapter.tiny_config() if opts.size == "tiny" else adapter.default_config()
        if opts.window is not None:
            cfg = adapter.with_window(cfg, opts.window)
    contract = adapter.contract_for(cfg)
    for batch in BATCH_SIZES:
        if not opts.profile.contains(batch) and batch <= opts.profile.max:
            raise ConfigError(f"parity batch {batch} is below the profile's min {opts.profile.min}")
    if opts.precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {opts.precision!r}")
    job = Job(adapter, cfg, contract)
    if opts.precision == "fp32":
        if opts.recipe is not None:
            raise ConfigError(f"--recipe {opts.recipe} applies to --precision fp16 or int8, not fp32")
    else:
        job.recipe = contract.recipe_for(opts.precision, opts.recipe).name
    if opts.strict and opts.max_drift_mm is not None:
        raise ConfigError("give --strict (the contract's goal) or --max-drift-mm, not both")
    if opts.max_drift_mm is not None and not opts.max_drift_mm > 0:
        raise ConfigError(f"--max-drift-mm must be > 0, got {opts.max_drift_mm}")
    job.limit_mm = contract.goal_mm(opts.precision) if opts.strict else opts.max_drift_mm
    if opts.calib is not None:
        check_calibration_source(Path(opts.calib), contract)
    return job


def check_input_paths(opts: ExportOptions) -> None:
    """Every path the user gave that must exist, before any work: one line naming it as given, never an
    OSError (a name too long for the file system, a device such as /dev/zero, a folder for a file)."""
    for label, path, kind in (("--checkpoint", opts.checkpoint, "file"), ("--smpl-model", opts.smpl_model, "file"),
                              ("--backbone-checkpoint", opts.backbone_checkpoint, "file"),
                              ("--mean-params", opts.mean_params, "file"), ("--video", opts.video, "file"),
                              ("--calib", opts.calib, "any"), ("--decomr-data", opts.decomr_data, "dir")):
        problem = path_problem(path, kind) if path is not None else None
        if problem == "not found" and kind == "file":
            problem = "file not found"
        if problem == "is not a folder" and label == "--decomr-data":
            problem = "not a folder (DecoMR's data/ with the UV files)"
        if problem:
            raise ConfigError(f"{label} {path}: {problem}")
    problem = path_problem(opts.out, "dir")  # a name no file system takes is said before any work
    if problem and problem.startswith("name too long"):
        raise ConfigError(f"--out {opts.out}: {problem}")


def artifact_file(model: str, graph: GraphSpec, precision: str) -> str:
    """File name of a graph: model graphs carry the model's name (``coseg_temporal_fp32.onnx``)."""
    prefix = f"{model}_" if graph.role in ("model", "step") else ""
    return f"{prefix}{graph.name}_{precision}.onnx"


def run_export(opts: ExportOptions, step: Step | None = None) -> ExportResult:
    """Export the contract's graphs to ``opts.out``; returns the manifest and the parity reports."""
    step = step or (lambda _label: ExitStack())
    seconds: dict[str, float] = {}
    job = _validate_options(opts)
    if job.contract.family == "track":  # init + one-frame graphs (WHAM): their own job
        from .track_export import run_track_export

        return run_track_export(opts, job, step)
    adapter, cfg = job.adapter, job.cfg
    t0 = time.perf_counter()

    with step("building the torch reference"):
        reference = adapter.reference(cfg, opts.checkpoint)
        if opts.mean_params is not None:
            adapter.load_mean_params(reference, Path(opts.mean_params))
        body = body_ref = None
        body_info = ("body model: none (a keypoint model: heatmaps, and keypoints in crop pixels)"
                     if job.contract.body_model == "keypoints" else "body model: none (the model outputs vertices)")
        if job.contract.body_model == "smpl":
            body, body_ref, body_info = body_models(opts.smpl_model)
        backbone = None
        if job.contract.feature_extractor == "spin_resnet50" and (opts.with_backbone or opts.video is not None):
            backbone = (backbone_from_checkpoint(opts.backbone_checkpoint) if opts.backbone_checkpoint
                        else ResNet50Backbone.from_seed(0))
    seconds["reference"] = time.perf_counter() - t0
    contract = exported_contract(job.contract, body, opts.with_backbone and backbone is not None)
    contract, step_note = step_graph.with_step_graph(contract, reference, opts.step)
    model_graph = contract.model_graph

    with staged_output(opts.out) as stage:
        manifest = Manifest(model=opts.model, config=cfg.to_dict(), profile=opts.profile.to_dict(),
                            tools=tool_versions("torch", "onnx", "onnxruntime", "onnxscript", "smplx"),
                            contract=contract.to_dict())
        if opts.size == "tiny":
            manifest.notes.append(TINY_NOTE)
        manifest.notes.append(body_info)
        if step_note:
            manifest.notes.append(step_note)
        if opts.checkpoint is None:
            manifest.notes.append(f"{opts.model} weights: seeded defaults (untrained); meshes are not poses")
        meta = {"model": opts.model, "exporter": opts.exporter}

        t = time.perf_counter()
        paths: dict[str, Path] = {}
        specs: dict[str, tuple] = {}
        for graph in contract.graphs:
            with step(f"exporting the {graph.name} graph ({opts.exporter})"):
                path = stage / artifact_file(opts.model, graph, "fp32")
                if graph.role == "body_model":
                    # the exporter's bound on the batch axis: the engine profile's rows (rows_per_item), and whole
                    # windows' frames, which parity feeds the body model
                    specs[graph.name] = onnx_export.export_body_model(
                        body, path, opts.profile.max * max(contract.rows_per_item(graph), contract.window or 1),
                        opts.exporter,
                        {**meta, "body_model": body_info})
                elif graph.role == "feature_extractor":
                    specs[graph.name] = onnx_export.export_backbone(
                        backbone, path, opts.profile.max * (contract.window or 1), opts.exporter, meta, spec=graph)
                elif graph.role == "step":
                    module, example = step_graph.step_module(adapter, reference, contract, cfg,
                                                             max(2, min(opts.profile.opt, 4)))
                    specs[graph.name] = onnx_export.onnx_from_module(
                        module, graph, example, path, exporter=opts.exporter, max_batch=opts.profile.max,
                        metadata={**meta, "config": cfg.to_dict(), "profile": opts.profile.to_dict()})
                else:
                    example = adapter.example_inputs(cfg, graph.name, max(2, min(opts.profile.opt, 4)))
                    specs[graph.name] = onnx_export.onnx_from_module(
                        adapter.exportable(reference, graph.name), graph, example, path, exporter=opts.exporter,
                        max_batch=opts.profile.max,
                        metadata={**meta, "config": cfg.to_dict(), "profile": opts.profile.to_dict()})
                paths[graph.name] = path
        seconds["export"] = time.perf_counter() - t

        t = time.perf_counter()
        max_opset = MAX_OPSET_TRT86 if opts.exporter == "torchscript" else None
        with step("validating (onnx.checker, shape inference, TensorRT op preflight)"):
            for path in paths.values():
                validate_onnx(path, max_opset=max_opset)
        seconds["validate"] = time.perf_counter() - t

        t = time.perf_counter()
        with step("measuring parity against torch (ONNX Runtime, CPU)"):
            windows = parity_sets(opts, job, contract, backbone)
            references = {k: parity.reference_outputs(reference, body_ref, w, model_graph, contract)
                          for k, w in windows.items()}
            pin = Pins(job.adapter, reference, body_ref, contract, stage)
            report = fp32_parity(paths, references, windows, reference, contract, pin)
        seconds["parity"] = time.perf_counter() - t
        step_report = None
        if contract.graph_for("step") is not None:
            t = time.perf_counter()
            with step("step graph parity: parity windows fed frame by frame (ONNX Runtime, CPU)"):
                step_report = fp32_step_parity(paths, references, windows, contract)
            report.failures.extend(step_report["failures"])
            seconds["step_parity"] = time.perf_counter() - t

        if body is not None:
            np.save(stage / FACES_NAME, np.asarray(body.faces, dtype=np.int64))  # for rendering meshes
        save_parity_reference(stage / PARITY_REFERENCE_NAME, windows, references)
        for graph in contract.graphs:
            g_ins, g_outs = specs[graph.name]
            extra = {"faces": FACES_NAME} if graph.role == "body_model" else {}
            extra.update(external_data.manifest_extra(paths[graph.name]))  # weights beside a > 2 GB graph
            graph_parity = {"model": report.to_dict(), "step": step_report}.get(graph.role)
            manifest.add(Artifact(graph.name, paths[graph.name].name, "onnx", "fp32", sha256_of(paths[graph.name]),
                                  g_ins, g_outs, parity=graph_parity, extra=extra))
        manifest.parity = {"fp32": report.to_dict()}
        manifest.verdict = {"fp32": report.verdict()}
        reports = [report]
        if not report.passed:
            raise _parity_error("FP32 parity failed: " + "; ".join(report.failures), reports)
        if opts.precision != "fp32":
            t = time.perf_counter()
            reduced = reduced_precision(opts, job, contract, stage, paths, references, windows, manifest, step, pin)
            reduced.conditioning = dict(report.conditioning)  # the network's own share of the drift
            reports.append(reduced)
            seconds[opts.precision] = time.perf_counter() - t
            verdict = reduced.verdict(job.recipe, job.limit_mm)
            manifest.verdict[opts.precision] = verdict
            if job.limit_mm is not None and verdict["worst_mean_vertex_mm"] > job.limit_mm:
                raise _parity_error(
                    f"{opts.precision.upper()} parity misses the limit of {job.limit_mm:g} mm mean vertex drift "
                    f"(recipe {job.recipe}): worst {verdict['worst_mean_vertex_mm']:.3g} mm on "
                    f"{verdict['worst_case']} ({_worst_per_set(reduced)}); nothing was written", reports)
        if opts.build_engines:
            build_or_explain_engines(opts, stage, manifest, step)
        seconds["total"] = time.perf_counter() - t0
        manifest.notes.append(f"export seconds: {seconds}")
        manifest.write(stage)
    return ExportResult(manifest, reports, seconds)


def parity_sets(opts: ExportOptions, job: Job, contract: ModelContract, backbone: Any) -> dict[str, Any]:
    """Window models: random windows and backbone features of real video frames (when a video is given).
    Other families: the adapter's seeded example inputs ({input name: array}) and, with a video, the
    adapter's ``video_inputs`` (crops of people, whole frames) as the "video" set."""
    if contract.family == "window":
        windows = parity.parity_windows(contract, str(opts.video) if opts.video else None, opts.parity_windows,
                                        backbone=backbone)
        for name, w in windows.items():
            check_feature_windows(w, contract, f"{name} parity windows")
        return windows
    graph = contract.model_graph
    example = job.adapter.example_inputs(job.cfg, graph.name, opts.parity_windows, seed=0)
    sets = {"random": {n: t.detach().numpy() for n, t in zip(graph.input_names, example)}}
    if opts.video is not None:
        real = job.adapter.video_inputs(job.cfg, graph.name, Path(opts.video), opts.parity_windows)
        if real is not None:
            sets["video"] = {n: np.ascontiguousarray(real[n], dtype=np.float32) for n in graph.input_names}
    return sets


def exported_contract(contract: ModelContract, body: Any, with_backbone: bool) -> ModelContract:
    """The contract as exported: body-model shapes from the body model actually used; no backbone graph
    when none is exported."""
    graphs = []
    for g in contract.graphs:
        if g.role == "feature_extractor" and not with_backbone:
            continue
        if g.role == "body_model" and body is not None:
            g = dataclasses.replace(onnx_export.body_graph_for(body), name=g.name)
        graphs.append(g)
    return dataclasses.replace(contract, graphs=tuple(graphs))


def _worst_per_set(report: parity.ParityReport) -> str:
    worst: dict[str, float] = {}
    for row in report.rows:
        worst[row["set"]] = max(worst.get(row["set"], 0.0), row["vertices_mean_mm"])
    return ", ".join(f"{name} windows {mm:.3g} mm" for name, mm in worst.items())


def _parity_error(message: str, reports: list[parity.ParityReport]) -> ParityError:
    err = ParityError(message)
    err.reports = reports  # the CLI prints the table before the one-line error
    return err


def reduced_precision(opts: ExportOptions, job: Job, contract: ModelContract, stage: Path, paths: dict[str, Path],
                      references: dict, windows: dict, manifest: Manifest, step: Step,
                      pins: Pins | None = None) -> parity.ParityReport:
    """The FP16 or INT8 model graph beside the FP32 one (the contract's recipe), with its parity in mm
    (ONNX Runtime, CPU). Graphs with ``precision_passes`` False (body model, backbone) stay FP32."""
    import tempfile

    from hmr_trt.engines.precision import (
        emulation_onnx_from_fp16,
        fp16_onnx_from_fp32,
        reduced_precision_share,
    )
    from hmr_trt.engines.preflight import MAX_OPSET_TRT86 as _max_opset

    graph = contract.model_graph
    recipe = contract.recipe_for(opts.precision, job.recipe)
    src = paths[graph.name]
    body_graph = contract.graph_for("body_model")
    path = stage / artifact_file(opts.model, graph, opts.precision)
    max_opset = _max_opset if opts.exporter == "torchscript" else None
    with tempfile.TemporaryDirectory() as tmp:
        if opts.precision == "fp16":
            with step(f"FP16: mixed-precision ONNX (recipe {recipe.name}: {len(recipe.keep)} FP32 keep rules)"):
                info = fp16_onnx_from_fp32(src, path, recipe.keep)
                validate_onnx(path, max_opset=max_opset)
            # ONNX Runtime's CPU provider computes FP16 ops in FP32: parity runs a stand-in that
            # rounds every FP16 tensor, as TensorRT's FP16 storage does (engines/precision.py)
            candidate = Path(tmp) / "fp16_emulated.onnx"
            emulation_onnx_from_fp16(path, candidate)
            label = "FP16 parity (ONNX Runtime CPU, FP16 rounding emulated)"
        else:
            if body_graph is None and contract.body_model not in ("none", "keypoints"):
                raise ConfigError(f"model {opts.model}: the INT8 sweep measures drift through the body model graph")
            cal = calibration_windows(opts, contract, paths)
            what = "windows" if contract.family == "window" else "images"
            count = len(cal) if isinstance(cal, np.ndarray) else len(next(iter(cal.values())))
            with step(f"INT8: calibration on {count} {what}, Q/DQ on {'/'.join(recipe.int8_ops)}, "
                      "sensitivity sweep over layer groups"):
                from hmr_trt.calibration.quantize import int8_with_sweep

                cache = calibration_cache(opts, src)
                _, info = int8_with_sweep(src, path, cal, windows[next(reversed(windows))],
                                          paths[body_graph.name] if body_graph is not None else None,
                                          cache, goal_mm=contract.goal_mm("int8"), recipe=recipe, contract=contract)
                validate_onnx(path, max_opset=max_opset)
            candidate = path
            label = "INT8 parity (ONNX Runtime CPU)"
        with step(label):
            stack, run = ort_runner({**{n: p for n, p in paths.items() if n != graph.name}, graph.name: candidate})
            with stack:
                pinning = pins.pinning(candidate, stack) if pins is not None else None
                report = parity.compare(run, references, windows, precision=opts.precision, batch_sizes=BATCH_SIZES,
                                        judged={"video"} if "video" in windows else None, contract=contract,
                                        pinning=pinning)
        if opts.precision == "int8" and not info["passed"]:  # e.g. every layer left float: no INT8 graph to speak of
            report.failures.append(f"INT8 sweep: {info.get('note', 'goal not met')} "
                                   f"({info['int8_nodes']} {'/'.join(info['op_types'])} nodes in INT8)")
    from .onnx_export import tensor_specs

    report.share = reduced_precision_share(path)
    model = onnx_load(path)
    manifest.add(Artifact(graph.name, path.name, "onnx", opts.precision, sha256_of(path),
                          tensor_specs(model.graph.input), tensor_specs(model.graph.output),
                          parity=report.to_dict(), extra={"conversion": _jsonable(info), "recipe": recipe.name,
                                                          **external_data.manifest_extra(path)}))
    manifest.parity[opts.precision] = report.to_dict()
    return report


def calibration_cache(opts: ExportOptions, src: Path) -> Path:
    """The INT8 calibration ranges' cache file of the FP32 graph ``src``: --calib-cache or ~/.cache/hmr-trt."""
    folder = opts.calib_cache or Path.home() / ".cache" / "hmr-trt" / "calibration"
    return Path(folder) / f"{opts.model}_{sha256_of(src)[:16]}.json"


def calibration_windows(opts: ExportOptions, contract: ModelContract,
                        paths: dict[str, Path]) -> np.ndarray | dict[str, np.ndarray]:
    """INT8 calibration data from --calib, else from the --video (frames from CALIBRATION_START_FRAME on).

    Window models: feature windows (W, T, C) of videos through the exported feature extractor, or of
    .npz feature files. Frame and scene models: {input name: images} of videos (calibration/images.py:
    crops of people, or whole letterboxed frames)."""
    from hmr_trt.calibration.windows import windows_from_features_npz, windows_from_videos

    source = Path(opts.calib) if opts.calib else opts.video
    start = CALIBRATION_START_FRAME if opts.calib is None else 0
    if contract.family != "window":
        from hmr_trt.calibration.images import images_from_videos

        if source is None:
            raise ConfigError("--precision int8 needs calibration data: --calib VIDEO_OR_FOLDER (or --video)")
        return images_from_videos(source, contract, start_frame=start)
    extractor = contract.graph_for("feature_extractor")
    backbone = paths.get(extractor.name) if extractor is not None else None
    if source is None:
        raise ConfigError("--precision int8 needs calibration data: --calib VIDEO_OR_FOLDER_OR_NPZ (or --video)")
    npz = source.suffix == ".npz" or (source.is_dir() and any(source.glob("*.npz")))
    if npz:
        return windows_from_features_npz(source, contract.window, feature_dim=contract.feature_dim)
    if backbone is None:
        raise ConfigError("calibration from videos needs the backbone graph")
    return windows_from_videos(source, backbone, contract.window, max_windows=8, start_frame=start,
                               feature_dim=contract.feature_dim)


def check_calibration_source(source: Path, contract: ModelContract) -> None:
    """Fail before any export work on calibration data that cannot be used (missing, empty, wrong width)."""
    from hmr_trt.calibration.windows import VIDEO_SUFFIXES, windows_from_features_npz

    if not source.exists():
        raise ConfigError(f"--calib {source}: not found")
    files = [source] if source.is_file() else sorted(p for p in source.iterdir() if p.is_file())
    usable = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES + (".npz",)]
    if contract.family != "window":
        if any(p.suffix.lower() == ".npz" for p in usable):
            raise ConfigError(f"--calib {source}: .npz feature files calibrate window models only; {contract.name} "
                              f"is a {contract.family} model and calibrates on video frames: give a video or a "
                              "folder of videos")
        if not usable:
            raise InputSpecError(f"--calib {source}: no videos in it")
        return
    if not usable:
        raise InputSpecError(f"--calib {source}: no videos or .npz feature files in it")
    if any(p.suffix == ".npz" for p in usable):
        windows_from_features_npz(source, contract.window, feature_dim=contract.feature_dim)  # raises on a wrong width


def build_or_explain_engines(opts: ExportOptions, stage: Path, manifest: Manifest, step: Step) -> None:
    """Engines when TensorRT and a GPU are here; otherwise say so and give the command for the target."""
    from hmr_trt.runtime.trt_compat import trt_available

    ok, why = trt_available()
    if ok:
        from hmr_trt.engines.cli import add_engines_to_export

        add_engines_to_export(stage, manifest, opts.precision, opts.profile, step=step)
        return
    manifest.notes.append(
        f"no TensorRT engine was built: {why.split(':')[0]}. On the target GPU machine run: "
        f"trt-build {opts.out} --precision {opts.precision} --batch {opts.profile} --out {opts.out}-engines"
    )


def onnx_load(path: Path):  # noqa: ANN201 - onnx.ModelProto
    import onnx

    return onnx.load(str(path), load_external_data=False)


def _jsonable(d: Any) -> Any:
    import json

    return json.loads(json.dumps(d, default=str))


def ort_runner(paths: dict[str, Path]) -> tuple[ExitStack, parity.Runner]:
    stack = ExitStack()
    backends = {name: stack.enter_context(OnnxRuntimeBackend(p)) for name, p in paths.items()}
    return stack, lambda name, feed: backends[name].infer(feed)


@dataclasses.dataclass
class Pins:
    """Builds the ``parity.Pinning`` of a model graph file for models with contract ``decisions`` (else None):
    the graph with its decision tensors as extra outputs runs beside the torch reference with those pinned."""

    adapter: Any
    reference: torch.nn.Module
    body_ref: Any
    contract: ModelContract
    tmp: Path

    def pinning(self, model_onnx: Path, stack: ExitStack) -> parity.Pinning | None:
        if not self.contract.decisions:
            return None
        import tempfile

        graph = self.contract.model_graph
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hmr-decisions-", dir=self.tmp)))
        outputs = parity.decision_graph(model_onnx, folder / "decisions.onnx", self.contract)
        backend = stack.enter_context(OnnxRuntimeBackend(folder / "decisions.onnx"))
        return parity.Pinning(
            run=backend.infer, outputs=outputs,
            reference=lambda feed, taken: parity.pinned_reference_outputs(
                self.adapter, self.reference, self.body_ref, feed, taken, graph, self.contract),
            own=lambda feed: parity.own_decisions(self.adapter, self.reference, feed, graph),
            describe=lambda own, taken: self.adapter.describe_decisions(self.reference, own, taken))


def fp32_parity(paths: dict[str, Path], references: dict[str, parity.Reference], windows: dict[str, np.ndarray],
                model: torch.nn.Module, contract: ModelContract, pins: Pins | None = None) -> parity.ParityReport:
    # the torch reference's own float32 noise (inputs, then weights, moved by an ulp): FP32 passes within the goal
    # or within parity.FLOOR_MULTIPLE x that floor. Measured before ONNX Runtime opens the graphs, so the weights'
    # perturbed copy is freed first (ViT-H: torch weights, their copy and ORT's would peak at 8.4 GB together)
    floor = (parity.float32_floor(model, pins.body_ref, windows, references, contract.model_graph, contract,
                                  pins.adapter) if pins is not None else {})
    stack, run = ort_runner({n: p for n, p in paths.items()
                             if contract.graph(n).role not in ("feature_extractor", "step")})
    with stack:
        pinning = pins.pinning(paths[contract.model_graph.name], stack) if pins is not None else None
        report = parity.compare(run, references, windows, precision="fp32", batch_sizes=BATCH_SIZES, contract=contract,
                                pinning=pinning, floor=floor)
        report.conditioning = parity.conditioning(run, windows, contract.model_graph, contract)
    first = next(iter(windows))
    report.batch_invariance["torch"] = parity.torch_batch_invariance(model, windows[first], contract.model_graph)
    # outputs that round-off alone moves by more than the tier (sensitive weights) get FLOOR_MULTIPLE x their floor
    own = max(floor[first]["outputs"].values(), default=0.0) if floor else 0.0
    atol = max(parity.BATCH_INVARIANCE_ATOL, parity.FLOOR_MULTIPLE * own)
    for backend, value in report.batch_invariance.items():
        if value > atol:
            report.failures.append(f"{backend}: outputs change with batch composition by {value:.3g} (> {atol:.3g})")
    parity.check_spread(report)
    return report


def fp32_step_parity(paths: dict[str, Path], references: dict[str, parity.Reference], windows: dict[str, np.ndarray],
                     contract: ModelContract) -> dict[str, Any]:
    """The exported step graph fed the parity windows frame by frame vs the torch window model (step_graph.py)."""
    step_name = contract.graph_for("step").name
    body = contract.graph_for("body_model")
    graphs = {step_name: paths[step_name], **({body.name: paths[body.name]} if body is not None else {})}
    stack, run = ort_runner(graphs)
    with stack:
        return step_graph.step_parity(lambda feed: dict(run(step_name, feed)),
                                      (lambda f: run(body.name, f)) if body is not None else None,
                                      windows, references, contract, contract.goal_mm("fp32"))


def body_models(smpl_model: Path | None) -> tuple[ExportableSMPL, SMPLReference, str]:
    """The user's SMPL file, or the synthetic body model (labelled: it is not SMPL)."""
    if smpl_model is not None:
        data = load_body_model_data(smpl_model)
        info = f"body model: {Path(smpl_model).name} ({data['v_template'].shape[0]} vertices)"
    else:
        data = make_synthetic_smpl(seed=0)
        info = (f"body model: SYNTHETIC, NOT SMPL ({data['v_template'].shape[0]} vertices), generated by hmr-trt "
                "for tests and the demo; pass --smpl-model for real SMPL meshes")
    return ExportableSMPL(data), SMPLReference(data), info


def save_parity_reference(path: Path, windows: dict[str, np.ndarray], refs: dict[str, parity.Reference]) -> None:
    """The parity windows and the torch reference outputs, so torch-free machines can compare engines."""
    arrays = {}
    for name, w in windows.items():
        ref = refs[name]
        if isinstance(w, dict):  # several inputs: one array each, under its input name
            arrays.update({f"{name}/{k}": v for k, v in w.items()})
        else:
            arrays[f"{name}/features"] = w
        arrays.update({f"{name}/{k}": v for k, v in ref.outputs.items()})
        arrays[f"{name}/vertices"], arrays[f"{name}/joints3d"] = ref.vertices, ref.joints
    np.savez(path, **arrays)
