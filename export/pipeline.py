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
from .body_model import ExportableSMPL, SMPLReference, body_model_from_file
from .config import CosegConfig
from .model import build_model
from .smpl_io import load_body_model_data
from .synthetic_smpl import make_synthetic_smpl

MODELS = ("coseg",)
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
        seconds["total"] = time.perf_counter() - t0
        manifest.notes.append(f"export seconds: {seconds}")
        manifest.write(stage)
        if not report.passed:
            raise ParityError("FP32 parity failed: " + "; ".join(report.failures))
    return ExportResult(manifest, [report], seconds)


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
        body, body_ref = body_model_from_file(smpl_model)
        data = load_body_model_data(smpl_model)
        return body, body_ref, f"body model: {Path(smpl_model).name} ({data['v_template'].shape[0]} vertices)"
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
