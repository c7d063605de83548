"""PyTorch -> ONNX for the graphs a model contract lists, one ``GraphSpec`` (hmr_trt.contract) per graph.

Each graph has one dynamic leading axis (its ``batch_axis``); every other dimension is static and
declared from the contract's ``TensorSpec``s after export (the exporters name some of them, e.g.
``Reshapebetas_dim_1``), then checked against ONNX shape inference. The body model is a graph of its
own so that the runtime applies it to the emitted frames only, and so that precision passes keep it
FP32 whole.

Exporters: ``torchscript`` (default) writes opset 17, which TensorRT 8.6 parses (8.6's parser
stops at opset 17; the dynamo exporter cannot write below 18). ``dynamo`` writes opset 18 for
TensorRT 10+. Both are checked against torch by the parity tests.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch

from hmr_trt import __version__
from hmr_trt.contract import GraphSpec
from hmr_trt.errors import ConfigError, ExportError
from hmr_trt.manifest import TensorSpec

EXPORTERS = ("torchscript", "dynamo")
OPSET = {"torchscript": 17, "dynamo": 18}
METADATA_PREFIX = "hmr_trt."


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
            batch = torch.export.Dim(spec.batch_axis, min=1, max=max_batch)
            torch.onnx.export(
                module, example, str(path), dynamo=True, opset_version=OPSET[exporter],
                input_names=list(spec.input_names), output_names=list(spec.output_names),
                dynamic_shapes={n: {0: batch} for n in spec.input_names}, external_data=False,
            )


def _stamp(model: onnx.ModelProto, spec: GraphSpec, metadata: dict[str, Any]) -> onnx.ModelProto:
    """Record what the graph is, so the engine builder can refuse ONNX files that are not ours."""
    props = {f"{METADATA_PREFIX}graph": spec.name, f"{METADATA_PREFIX}version": __version__}
    props.update({f"{METADATA_PREFIX}{k}": v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "hmr-trt"
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


def declare_static_shapes(model: onnx.ModelProto, spec: GraphSpec) -> onnx.ModelProto:
    """Set every graph input/output shape from ``spec`` (axis 0: the batch axis name, others static), then
    check with strict ONNX shape inference that what the graph computes agrees. Returns the model."""
    declared = {t.name: t for t in spec.inputs + spec.outputs}
    values = list(model.graph.input) + list(model.graph.output)
    missing = sorted(set(declared) - {v.name for v in values})
    if missing:
        raise ExportError(f"the exported {spec.name} graph lacks {', '.join(missing)} named in the contract")
    for v in values:
        t = declared.get(v.name)
        if t is None:
            continue
        dims = v.type.tensor_type.shape.dim
        if len(dims) != len(t.shape):
            raise ExportError(f"{spec.name} graph: {v.name} has rank {len(dims)}, the contract says {list(t.shape)}")
        for i, (d, want) in enumerate(zip(dims, t.shape)):
            if i == 0:
                d.Clear()
                d.dim_param = spec.batch_axis
                continue
            if not isinstance(want, int):
                raise ExportError(f"{spec.name} graph: {v.name} axis {i} must be static in the contract, got {want!r}")
            if d.HasField("dim_value") and d.dim_value != want:
                raise ExportError(f"{spec.name} graph: {v.name} axis {i} is {d.dim_value}, the contract says {want}")
            d.Clear()
            d.dim_value = want
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:  # onnx raises InferenceError and friends
        raise ExportError(f"{spec.name} graph: shape inference disagrees with the contract's shapes: "
                          f"{str(exc).splitlines()[0]}") from exc
    for v in inferred.graph.output:  # what inference derived must match what was declared
        t = declared[v.name] if v.name in declared else None
        got = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]
        if t is not None and [g for g in got[1:]] != list(t.shape[1:]):
            raise ExportError(f"{spec.name} graph: output {v.name} infers as {got}, the contract says {list(t.shape)}")
    return model


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
    """Export ``module`` to ``path`` and stamp it; returns the graph's input and output specs.

    Graphs whose weights exceed protobuf's 2 GB (``external_data.THRESHOLD_BYTES``) are written as the graph
    plus one ``<name>.onnx.data`` beside it (hmr_trt/external_data.py); the exporter's own output (one file
    per tensor for such graphs) goes to a scratch folder beside ``path`` that is removed afterwards."""
    import shutil
    import tempfile

    from hmr_trt import external_data

    path = Path(path)
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.stem}-export-", dir=path.parent))
    try:
        raw = scratch / path.name
        try:
            _export(module, spec, example, raw, exporter, max_batch)
        except ConfigError:
            raise
        except Exception as exc:  # exporters raise many types; name the graph and the exporter
            raise ExportError(f"{exporter} export of the {spec.name} graph failed: {type(exc).__name__}: "
                              f"{exc}") from exc
        model = onnx.load(str(raw), load_external_data=False)  # the graph alone: shape inference stays small
        model = declare_static_shapes(_stamp(model, spec, metadata or {}), spec)
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(scratch))  # the exporter's per-tensor files, if it wrote any
        external_data.save(model, path, external_data.initializer_bytes(model) > external_data.THRESHOLD_BYTES)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return tensor_specs(model.graph.input), tensor_specs(model.graph.output)


def export_body_model(body: torch.nn.Module, path: str | Path, max_frames: int, exporter: str = "torchscript",
                      metadata: dict[str, Any] | None = None) -> tuple[list[TensorSpec], list[TensorSpec]]:
    spec = body_graph_for(body)
    example = (torch.eye(3).expand(3, int(spec.inputs[0].shape[1]), 3, 3).contiguous(), torch.zeros(3, body.num_betas))
    return onnx_from_module(body, spec, example, path, exporter=exporter, max_batch=max_frames, metadata=metadata)


def body_graph_for(body: torch.nn.Module) -> GraphSpec:
    """The body-model graph's contract with the vertex and joint counts of the body model actually used."""
    from hmr_trt.contract import smpl_body_graph

    from .smpl_io import NUM_JOINTS

    with torch.no_grad():
        _, joints = body(torch.eye(3).expand(1, NUM_JOINTS, 3, 3).contiguous(), torch.zeros(1, body.num_betas))
    return smpl_body_graph(vertices=body.num_vertices, joints=int(joints.shape[1]), betas=body.num_betas)


def export_backbone(backbone: torch.nn.Module, path: str | Path, max_images: int, exporter: str = "torchscript",
                    metadata: dict[str, Any] | None = None, spec: GraphSpec | None = None) -> tuple[list[TensorSpec], list[TensorSpec]]:
    from hmr_trt.contract import spin_backbone_graph

    spec = spec or spin_backbone_graph()
    crop = int(spec.inputs[0].shape[-1])
    example = (torch.randn(2, 3, crop, crop, generator=torch.Generator().manual_seed(0)),)
    return onnx_from_module(backbone, spec, example, path, exporter=exporter, max_batch=max_images,
                            metadata=metadata)
