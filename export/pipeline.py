"""The export job behind ``trt-export``: build the reference, export, validate, measure parity, write.

Everything is written into a staging directory that replaces ``--out`` only at the end, so a
failure (bad checkpoint, parity over the goal, Ctrl-C) leaves nothing half-written.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from hmr_trt.engines.preflight import MAX_OPSET_TRT86, validate_onnx
from hmr_trt.errors import ConfigError, InputSpecError, ParityError
from hmr_trt.manifest import Artifact, Manifest, sha256_of, staged_output, tool_versions
from hmr_trt.profile import ShapeProfile
from hmr_trt.runtime.backends import OnnxRuntimeBackend

from . import onnx_export, parity
from .backbone import ResNet50Backbone, backbone_from_checkpoint
from .body_model import ExportableSMPL, SMPLReference
from .config import CosegConfig
from .model import build_model
from .smpl_io import load_body_model_data
from .synthetic_smpl import make_synthetic_smpl

MODELS = ("coseg",)
PRECISIONS = ("fp32", "fp16", "int8")
CALIBRATION_START_FRAME = 400  # calibration frames of the sample video do not overlap the parity windows
FACES_NAME = "body_model_faces.npy"  # runtime/backends_select.py reads it under this name
PARITY_REFERENCE_NAME = "parity_reference.npz"  # torch outputs for the parity windows (GPU tests, no torch there)
BATCH_SIZES = (1, 2, 7)


@dataclass
class ExportOptions:
    out: Path
    model: str = "coseg"
    precision: str = "fp32"
    window: int = 16
    profile: ShapeProfile = field(default_factory=ShapeProfile)
    checkpoint: Path | None = None
    backbone_checkpoint: Path | None = None
    smpl_model: Path | None = None
    mean_params: Path | None = None
    video: Path | None = None  # real frames for the parity windows
    exporter: str = "torchscript"
    parity_windows: int = 7
    config: CosegConfig | None = None  # overrides window (tests use small configs)
    with_backbone: bool = True
    calib: Path | None = None  # INT8 calibration: a video, a folder of videos, or .npz feature files
    calib_cache: Path | None = None  # default: ~/.cache/hmr-trt/calibration (survives re-exports)
    accept_drift: bool = False  # keep FP16/INT8 artifacts whose parity misses the goal (recorded as failing)
    build_engines: bool = True  # when TensorRT and a GPU are present


Step = Callable[[str], Any]  # a context-manager factory that shows one step of progress


@dataclass
class ExportResult:
    manifest: Manifest
    reports: list[parity.ParityReport]
    seconds: dict[str, float]


def check_feature_windows(windows: np.ndarray, cfg: CosegConfig, what: str) -> None:
    if windows.ndim != 3:
        raise InputSpecError(f"{what}: expected windows (B, T, C), got shape {windows.shape}")
    if windows.shape[1] != cfg.window:
        raise InputSpecError(f"{what}: window length {windows.shape[1]}, the model expects T = {cfg.window}")
    if windows.shape[2] != cfg.feature_dim:
        raise InputSpecError(f"{what}: feature width {windows.shape[2]}, the model expects {cfg.feature_dim}")


def _validate_options(opts: ExportOptions) -> CosegConfig:
    if opts.model not in MODELS:
        raise ConfigError(f"unknown --model {opts.model!r}; available: {', '.join(MODELS)}")
    cfg = (opts.config or CosegConfig(window=opts.window)).with_(fde_mode="fft")
    for batch in BATCH_SIZES:
        if not opts.profile.contains(batch) and batch <= opts.profile.max:
            raise ConfigError(f"parity batch {batch} is below the profile's min {opts.profile.min}")
    if opts.precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {opts.precision!r}")
    if opts.calib is not None:
        check_calibration_source(Path(opts.calib), cfg)
    for label, path in (("--checkpoint", opts.checkpoint), ("--smpl-model", opts.smpl_model),
                        ("--backbone-checkpoint", opts.backbone_checkpoint), ("--mean-params", opts.mean_params),
                        ("--video", opts.video)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{label} {path}: file not found")
    return cfg


def run_export(opts: ExportOptions, step: Step | None = None) -> ExportResult:
    """Export the temporal, body-model and backbone graphs to ``opts.out``; returns the manifest."""
    step = step or (lambda _label: ExitStack())
    seconds: dict[str, float] = {}
    cfg = _validate_options(opts)
    t0 = time.perf_counter()

    with step("building the torch reference"):
        reference = build_model(cfg, opts.checkpoint, opts.mean_params)  # FFT form of FDE
        exportable = build_model(cfg.with_(fde_mode="matrix"), None, opts.mean_params)
        exportable.load_state_dict(reference.state_dict())
        body, body_ref, body_info = body_models(opts.smpl_model)
        backbone = None
        if opts.with_backbone or opts.video is not None:
            backbone = (backbone_from_checkpoint(opts.backbone_checkpoint) if opts.backbone_checkpoint
                        else ResNet50Backbone.from_seed(0))
    seconds["reference"] = time.perf_counter() - t0

    with staged_output(opts.out) as stage:
        manifest = Manifest(model=opts.model, config=cfg.to_dict(), profile=opts.profile.to_dict(),
                            tools=tool_versions("torch", "onnx", "onnxruntime", "onnxscript", "smplx"))
        manifest.notes.append(body_info)
        if opts.checkpoint is None:
            manifest.notes.append("temporal weights: seeded defaults (untrained); meshes are not poses")
        meta = {"model": opts.model, "exporter": opts.exporter}

        t = time.perf_counter()
        with step(f"exporting the temporal graph ({opts.exporter})"):
            temporal_path = stage / f"{opts.model}_temporal_fp32.onnx"
            ins, outs = onnx_export.export_temporal(exportable, temporal_path, opts.profile, opts.exporter, meta)
        with step("exporting the body-model graph"):
            body_path = stage / "body_model_fp32.onnx"
            b_ins, b_outs = onnx_export.export_body_model(body, body_path, opts.profile.max * cfg.window,
                                                          opts.exporter, {**meta, "body_model": body_info})
        graphs = [("temporal", temporal_path, ins, outs), ("body_model", body_path, b_ins, b_outs)]
        if opts.with_backbone:
            with step("exporting the backbone graph"):
                bb_path = stage / "backbone_fp32.onnx"
                bb_ins, bb_outs = onnx_export.export_backbone(backbone, bb_path, opts.profile.max * cfg.window,
                                                              opts.exporter, meta)
            graphs.append(("backbone", bb_path, bb_ins, bb_outs))
        seconds["export"] = time.perf_counter() - t

        t = time.perf_counter()
        max_opset = MAX_OPSET_TRT86 if opts.exporter == "torchscript" else None
        with step("validating (onnx.checker, shape inference, TensorRT op preflight)"):
            for _name, path, *_ in graphs:
                validate_onnx(path, max_opset=max_opset)
        seconds["validate"] = time.perf_counter() - t

        t = time.perf_counter()
        with step("measuring parity against torch (ONNX Runtime, CPU)"):
            windows = parity.parity_windows(cfg, str(opts.video) if opts.video else None, opts.parity_windows,
                                            backbone=backbone)
            for name, w in windows.items():
                check_feature_windows(w, cfg, f"{name} parity windows")
            references = {k: parity.reference_outputs(reference, body_ref, w) for k, w in windows.items()}
            report = fp32_parity(temporal_path, body_path, references, windows, reference)
        seconds["parity"] = time.perf_counter() - t

        np.save(stage / FACES_NAME, np.asarray(body.faces, dtype=np.int64))  # for rendering meshes
        save_parity_reference(stage / PARITY_REFERENCE_NAME, windows, references)
        for name, path, g_ins, g_outs in graphs:
            extra = {"faces": FACES_NAME} if name == "body_model" else {}
            manifest.add(Artifact(name, path.name, "onnx", "fp32", sha256_of(path), g_ins, g_outs,
                                  parity=report.to_dict() if name == "temporal" else None, extra=extra))
        manifest.parity = {"fp32": report.to_dict()}
        reports = [report]
        if not report.passed:
            raise _parity_error("FP32 parity failed: " + "; ".join(report.failures), reports)
        if opts.precision != "fp32":
            t = time.perf_counter()
            reduced = reduced_precision(opts, cfg, stage, temporal_path, body_path, graphs, references, windows,
                                        manifest, step)
            reports.append(reduced)
            seconds[opts.precision] = time.perf_counter() - t
            if not reduced.passed and not opts.accept_drift:
                raise _parity_error(
                    f"{opts.precision.upper()} parity misses its goal of {reduced.goal_mean_vertex_mm} mm mean vertex "
                    f"drift: {_worst_per_set(reduced)}. Nothing was written; rerun with --accept-drift to keep the artifacts (manifest.json "
                    "records them as failing)", reports)
        if opts.build_engines:
            build_or_explain_engines(opts, stage, manifest, step)
        seconds["total"] = time.perf_counter() - t0
        manifest.notes.append(f"export seconds: {seconds}")
        manifest.write(stage)
    return ExportResult(manifest, reports, seconds)


def _worst_per_set(report: parity.ParityReport) -> str:
    worst: dict[str, float] = {}
    for row in report.rows:
        worst[row["set"]] = max(worst.get(row["set"], 0.0), row["vertices_mean_mm"])
    return ", ".join(f"{name} windows {mm:.3g} mm" for name, mm in worst.items())


def _parity_error(message: str, reports: list[parity.ParityReport]) -> ParityError:
    err = ParityError(message)
    err.reports = reports  # the CLI prints the table before the one-line error
    return err


def reduced_precision(opts: ExportOptions, cfg: CosegConfig, stage: Path, temporal_path: Path, body_path: Path,
                      graphs: list, references: dict, windows: dict, manifest: Manifest,
                      step: Step) -> parity.ParityReport:
    """The FP16 or INT8 temporal ONNX beside the FP32 one, with its parity in mm (ONNX Runtime, CPU)."""
    import tempfile

    from hmr_trt.engines.precision import emulation_onnx_from_fp16, fp16_onnx_from_fp32
    from hmr_trt.engines.preflight import MAX_OPSET_TRT86 as _max_opset

    path = stage / f"{opts.model}_temporal_{opts.precision}.onnx"
    max_opset = _max_opset if opts.exporter == "torchscript" else None
    with tempfile.TemporaryDirectory() as tmp:
        if opts.precision == "fp16":
            with step("FP16: mixed-precision ONNX (FP32 islands per engines/precision.py)"):
                info = fp16_onnx_from_fp32(temporal_path, path)
                validate_onnx(path, max_opset=max_opset)
            # ONNX Runtime's CPU provider computes FP16 ops in FP32: parity runs a stand-in that
            # rounds every FP16 tensor, as TensorRT's FP16 storage does (engines/precision.py)
            candidate = Path(tmp) / "fp16_emulated.onnx"
            emulation_onnx_from_fp16(path, candidate)
            label = "FP16 parity (ONNX Runtime CPU, FP16 rounding emulated)"
        else:
            cal = calibration_windows(opts, cfg, graphs)
            with step(f"INT8: calibration on {len(cal)} windows, Q/DQ, per-layer sensitivity sweep"):
                from hmr_trt.calibration.quantize import int8_with_sweep

                cache = (opts.calib_cache or Path.home() / ".cache" / "hmr-trt" / "calibration") / \
                    f"{opts.model}_{sha256_of(temporal_path)[:16]}.json"
                _, info = int8_with_sweep(temporal_path, path, cal, windows[next(reversed(windows))], body_path, cache)
                validate_onnx(path, max_opset=max_opset)
            candidate = path
            label = "INT8 parity (ONNX Runtime CPU)"
        with step(label):
            stack, run = ort_runner({"temporal": candidate, "body_model": body_path})
            with stack:
                report = parity.compare(run, references, windows, precision=opts.precision, batch_sizes=BATCH_SIZES,
                                        judged={"video"} if "video" in windows else None)
    from .onnx_export import tensor_specs

    model = onnx_load(path)
    manifest.add(Artifact("temporal", path.name, "onnx", opts.precision, sha256_of(path),
                          tensor_specs(model.graph.input), tensor_specs(model.graph.output),
                          parity=report.to_dict(), extra={"conversion": _jsonable(info)}))
    manifest.parity[opts.precision] = report.to_dict()
    return report


def calibration_windows(opts: ExportOptions, cfg: CosegConfig, graphs: list) -> np.ndarray:
    """--calib (videos through the exported backbone, or .npz feature files), else the sample video."""
    from hmr_trt.calibration.windows import windows_from_features_npz, windows_from_videos

    backbone = next((p for name, p, *_ in graphs if name == "backbone"), None)
    source = Path(opts.calib) if opts.calib else opts.video
    if source is None:
        raise ConfigError("--precision int8 needs calibration data: --calib VIDEO_OR_FOLDER_OR_NPZ (or --video)")
    npz = source.suffix == ".npz" or (source.is_dir() and any(source.glob("*.npz")))
    if npz:
        return windows_from_features_npz(source, cfg.window, feature_dim=cfg.feature_dim)
    if backbone is None:
        raise ConfigError("calibration from videos needs the backbone graph")
    start = CALIBRATION_START_FRAME if opts.calib is None else 0
    return windows_from_videos(source, backbone, cfg.window, max_windows=8, start_frame=start)


def check_calibration_source(source: Path, cfg: CosegConfig) -> None:
    """Fail before any export work on calibration data that cannot be used (missing, empty, wrong width)."""
    from hmr_trt.calibration.windows import VIDEO_SUFFIXES, windows_from_features_npz

    if not source.exists():
        raise ConfigError(f"--calib {source}: not found")
    files = [source] if source.is_file() else sorted(p for p in source.iterdir() if p.is_file())
    usable = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES + (".npz",)]
    if not usable:
        raise InputSpecError(f"--calib {source}: no videos or .npz feature files in it")
    if any(p.suffix == ".npz" for p in usable):
        windows_from_features_npz(source, cfg.window, feature_dim=cfg.feature_dim)  # raises on a wrong width


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


def fp32_parity(temporal: Path, body: Path, references: dict[str, parity.Reference],
                windows: dict[str, np.ndarray], model: torch.nn.Module) -> parity.ParityReport:
    stack, run = ort_runner({"temporal": temporal, "body_model": body})
    with stack:
        report = parity.compare(run, references, windows, precision="fp32", batch_sizes=BATCH_SIZES)
    report.batch_invariance["torch"] = parity.torch_batch_invariance(model, windows[next(iter(windows))])
    for backend, value in report.batch_invariance.items():
        if value > parity.BATCH_INVARIANCE_ATOL:
            report.failures.append(f"{backend}: outputs change with batch composition by {value:.3g}")
    parity.check_spread(report)
    return report


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
        arrays[f"{name}/features"] = w
        arrays.update({f"{name}/{k}": v for k, v in ref.outputs.items()})
        arrays[f"{name}/vertices"], arrays[f"{name}/joints3d"] = ref.vertices, ref.joints
    np.savez(path, **arrays)
