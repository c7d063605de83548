"""PyTorch -> ONNX for the graphs hmr-trt deploys, one small spec per graph.

Three graphs, each with a dynamic leading axis:
- ``temporal``: features (B, T, 2048) -> pose_rotmat, betas, cam for all T frames;
- ``body_model``: pose_rotmat (N, 24, 3, 3), betas (N, 10) -> vertices, joints3d (N = frames);
- ``backbone``: images (N, 3, 224, 224) -> features (N, 2048).
The body model is a graph of its own so that the runtime applies it to the emitted frames only,
and so that precision passes keep it FP32 whole.

Exporters: ``torchscript`` (default) writes opset 17, which TensorRT 8.6 parses (8.6's parser
stops at opset 17; the dynamo exporter cannot write below 18). ``dynamo`` writes opset 18 for
TensorRT 10+. Both are checked against torch by the parity tests.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch

from hmr_trt import __version__
from hmr_trt.errors import ConfigError, ExportError
from hmr_trt.manifest import TensorSpec
from hmr_trt.profile import ShapeProfile

EXPORTERS = ("torchscript", "dynamo")
OPSET = {"torchscript": 17, "dynamo": 18}
METADATA_PREFIX = "hmr_trt."


@dataclass(frozen=True)
class GraphSpec:
    """Names and the dynamic axis of one exported graph (optimum-style per-graph config)."""

    name: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    batch_axis_name: str  # the name of the dynamic leading axis in the graph

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {n: {0: self.batch_axis_name} for n in self.input_names + self.output_names}


TEMPORAL = GraphSpec("temporal", ("features",), ("pose_rotmat", "betas", "cam"), "batch")
BODY_MODEL = GraphSpec("body_model", ("pose_rotmat", "betas"), ("vertices", "joints3d"), "frames")
BACKBONE = GraphSpec("backbone", ("images",), ("features",), "images")


def _export(
    module: torch.nn.Module,
    spec: GraphSpec,
    example: tuple[torch.Tensor, ...],
    path: Path,
    exporter: str,
    max_batch: int,
) -> None:
    if exporter not in EXPORTERS:
        raise ConfigError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter warns that GRUs exported at batch > 1 may misbehave at other
        # batch sizes; the parity tests run batches 1, 2 and 7 against torch to rule that out.
        warnings.filterwarnings("ignore", message=".*batch_size other than 1.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        if exporter == "torchscript":
            torch.onnx.export(
                module, example, str(path), dynamo=False, opset_version=OPSET[exporter],
                input_names=list(spec.input_names), output_names=list(spec.output_names),
                dynamic_axes=spec.dynamic_axes(), do_constant_folding=True,
            )
        else:
            batch = torch.export.Dim(spec.batch_axis_name, min=1, max=max_batch)
            torch.onnx.export(
                module, example, str(path), dynamo=True, opset_version=OPSET[exporter],
                input_names=list(spec.input_names), output_names=list(spec.output_names),
                dynamic_shapes={n: {0: batch} for n in spec.input_names}, external_data=False,
            )


def _stamp(path: Path, spec: GraphSpec, metadata: dict[str, Any]) -> onnx.ModelProto:
    """Record what the graph is, so the engine builder can refuse ONNX files that are not ours."""
    model = onnx.load(str(path))
    props = {f"{METADATA_PREFIX}graph": spec.name, f"{METADATA_PREFIX}version": __version__}
    props.update({f"{METADATA_PREFIX}{k}": v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "hmr-trt"
    onnx.save(model, str(path))
    return model


def graph_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """The ``hmr_trt.*`` metadata of a graph; empty when it is not an hmr-trt export."""
    return {p.key[len(METADATA_PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(METADATA_PREFIX)}


def tensor_specs(values: Any) -> list[TensorSpec]:
    specs = []
    for v in values:
        dims = [d.dim_param if d.dim_param else d.dim_value for d in v.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name
        specs.append(TensorSpec(v.name, dims, dtype))
    return specs


def onnx_from_module(
    module: torch.nn.Module,
    spec: GraphSpec,
    example: tuple[torch.Tensor, ...],
    path: str | Path,
    *,
    exporter: str = "torchscript",
    max_batch: int = 64,
    metadata: dict[str, Any] | None = None,
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Export ``module`` to ``path`` and stamp it; returns the graph's input and output specs."""
    path = Path(path)
    try:
        _export(module, spec, example, path, exporter, max_batch)
    except ConfigError:
        raise
    except Exception as exc:  # exporters raise many types; name the graph and the exporter
        raise ExportError(f"{exporter} export of the {spec.name} graph failed: {type(exc).__name__}: {exc}") from exc
    model = _stamp(path, spec, metadata or {})
    return tensor_specs(model.graph.input), tensor_specs(model.graph.output)


def export_temporal(model: torch.nn.Module, path: str | Path, profile: ShapeProfile, exporter: str = "torchscript",
                    metadata: dict[str, Any] | None = None) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The temporal network with its FDE in matrix form (no DFT, no complex tensors)."""
    cfg = model.cfg
    if cfg.fde_mode != "matrix":
        raise ConfigError("export the temporal model with fde_mode='matrix' (see export/fde.py)")
    batch = max(2, min(profile.opt, 4))  # a batch > 1 so no axis is specialised to 1
    example = (torch.randn(batch, cfg.window, cfg.feature_dim, generator=torch.Generator().manual_seed(0)),)
    meta = {"config": cfg.to_dict(), "profile": profile.to_dict(), **(metadata or {})}
    return onnx_from_module(model, TEMPORAL, example, path, exporter=exporter, max_batch=profile.max, metadata=meta)


def export_body_model(body: torch.nn.Module, path: str | Path, max_frames: int, exporter: str = "torchscript",
                      metadata: dict[str, Any] | None = None) -> tuple[list[TensorSpec], list[TensorSpec]]:
    from .smpl_io import NUM_JOINTS

    eye = torch.eye(3).expand(3, NUM_JOINTS, 3, 3).contiguous()
    example = (eye, torch.zeros(3, body.num_betas))
    return onnx_from_module(body, BODY_MODEL, example, path, exporter=exporter, max_batch=max_frames,
                            metadata=metadata)


def export_backbone(backbone: torch.nn.Module, path: str | Path, max_images: int, exporter: str = "torchscript",
                    metadata: dict[str, Any] | None = None) -> tuple[list[TensorSpec], list[TensorSpec]]:
    example = (torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)),)
    return onnx_from_module(backbone, BACKBONE, example, path, exporter=exporter, max_batch=max_images,
                            metadata=metadata)
