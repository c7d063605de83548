"""Validate an exported ONNX graph before anyone builds an engine from it.

Three checks, every failure collected before one error is raised: ``onnx.checker`` (full
check), shape inference (strict), and a preflight of every node against the TensorRT ONNX
parser's supported-op list (``trt_supported_ops.txt``), naming the offending nodes. On top,
hmr-trt's own contract for exported graphs: no ``DFT``, no complex tensors, no ``Einsum``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from hmr_trt.errors import ExportError

if TYPE_CHECKING:
    import onnx

# TensorRT 8.6's parser reads opsets up to 17; 10.x and later read newer ones.
MAX_OPSET_TRT86 = 17
# Ops the project keeps out of its graphs even where a parser accepts them.
FORBIDDEN_OPS = {"DFT": "TensorRT cannot parse DFT (use the FDE matrix form)", "Einsum": "use MatMul"}
# Scatters with a reduction: onnx-tensorrt lowers ScatterND to IScatterLayer, which has no reduction
# (onnx/onnx-tensorrt#957); ScatterElements with a reduction goes to NVIDIA's ScatterElements plugin,
# which the parser uses from TensorRT 10.0 on (8.6 has neither). Write the sum as a one-hot MatMul.
REDUCING_SCATTERS = {"ScatterND": "no TensorRT version imports ScatterND with a reduction",
                     "ScatterElements": "needs TensorRT >= 10.0's ScatterElements plugin (8.6 cannot)"}


@lru_cache(maxsize=1)
def trt_supported_ops() -> frozenset[str]:
    text = (Path(__file__).parent / "trt_supported_ops.txt").read_text()
    return frozenset(line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip())


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node, including those of subgraphs (If/Loop/Scan bodies)."""
    import onnx

    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _nodes(g)


def unsupported_nodes(model: onnx.ModelProto) -> list[str]:
    """'node_name (OpType): reason' for every node TensorRT or the project's contract rejects."""
    supported = trt_supported_ops()
    problems = []
    for node in _nodes(model.graph):
        label = f"{node.name or '<unnamed>'} ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{label}: custom domain '{node.domain}' has no TensorRT importer")
        elif node.op_type in FORBIDDEN_OPS:
            problems.append(f"{label}: {FORBIDDEN_OPS[node.op_type]}")
        elif node.op_type not in supported:
            problems.append(f"{label}: not supported by the TensorRT ONNX parser")
        elif node.op_type in REDUCING_SCATTERS and _reduction(node) not in ("", "none"):
            problems.append(f"{label}: reduction={_reduction(node)!r} {REDUCING_SCATTERS[node.op_type]}; "
                            "use a one-hot MatMul instead")
    return problems


def _reduction(node: onnx.NodeProto) -> str:
    for attr in node.attribute:
        if attr.name == "reduction":
            return attr.s.decode()
    return ""


def complex_tensors(model: onnx.ModelProto) -> list[str]:
    import onnx

    complex_types = {onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128}
    values = list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info)
    names = [v.name for v in values if v.type.tensor_type.elem_type in complex_types]
    names += [t.name for t in model.graph.initializer if t.data_type in complex_types]
    return names


def opset_of(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def validate_onnx(path: str | Path, *, max_opset: int | None = MAX_OPSET_TRT86) -> onnx.ModelProto:
    """Run every check on the file at ``path``; raise one ExportError listing all failures.

    Returns the shape-inferred model. ``max_opset`` None skips the TensorRT 8.6 opset bound.
    """
    import onnx

    from hmr_trt import external_data

    path = Path(path)
    external_data.check(path)  # a data file missing, cut short or from another graph: one line naming it
    failures: list[str] = []
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        failures.append(f"onnx.checker: {str(exc).strip().splitlines()[0]}")
    model = onnx.load(str(path), load_external_data=False)
    try:
        model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except onnx.shape_inference.InferenceError as exc:
        failures.append(f"shape inference: {str(exc).strip().splitlines()[0]}")
    bad = unsupported_nodes(model)
    if bad:
        shown = "; ".join(bad[:10]) + (f"; ... and {len(bad) - 10} more" if len(bad) > 10 else "")
        failures.append(f"TensorRT op preflight, {len(bad)} node(s): {shown}")
    cplx = complex_tensors(model)
    if cplx:
        failures.append(f"complex tensors: {', '.join(cplx[:10])}")
    opset = opset_of(model)
    if max_opset is not None and opset > max_opset:
        failures.append(f"opset {opset} > {max_opset}: TensorRT 8.6 cannot parse it (export with opset <= 17)")
    if failures:
        raise ExportError(f"{path.name} failed validation: " + " | ".join(failures))
    return model
