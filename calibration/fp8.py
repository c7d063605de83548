"""FP8 (E4M3) Q/DQ graph of a model graph, from its INT8 Q/DQ graph: the precision Hopper's TensorRT reads
from explicit FP8 QuantizeLinear/DequantizeLinear pairs (TensorRT 10+ takes precision only from the graph).

``fp8_onnx_from_int8`` keeps every Q/DQ pair of the INT8 recipe's graph (``calibration/quantize.py``: the
same quantized MatMul/Gemm inputs, the same exclusions, the same calibrated activation ranges) and changes
its type: zero points become float8e4m3fn zeros; an activation's scale becomes amax / 448 (E4M3's largest
finite value) instead of amax / 127; each weight is quantized again from the FP32 graph's own weight, per
output channel, at amax / 448 (rounding to nearest, saturating). The graph moves to opset 19 (the first
with float8 Q/DQ; ``onnx.version_converter`` rewrites the rest, e.g. ReduceMean's axes) and IR 9.

On a CPU the graph is judged as it is: ONNX Runtime (probed on 1.31) has float8e4m3fn QuantizeLinear and
DequantizeLinear kernels, so activations are rounded to E4M3 and weights are E4M3 values, with FP32
arithmetic in between (a Hopper FP8 GEMM accumulates in FP32 too). TensorRT 8.6 reads no FP8 Q/DQ: such a
graph needs TensorRT 10 on a Hopper (or later) GPU.

torch-free: numpy, onnx (with its ml_dtypes) only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np

from hmr_trt.errors import ExportError
from hmr_trt.fileio import save_onnx_atomic

PathLike = Union[str, Path]
FP8_MAX = 448.0  # largest finite float8e4m3fn
INT8_MAX = 127.0  # the INT8 graph's symmetric range (calibration/quantize.py)
FP8_OPSET = 19
QUANTIZED_SUFFIX = "_quantized"  # ONNX Runtime's name of a quantized weight: <weight>_quantized


def to_fp8(values: np.ndarray) -> np.ndarray:
    """Round to float8e4m3fn (nearest even), saturating at +-448 (a cast alone gives NaN past the range)."""
    import ml_dtypes

    return np.clip(values, -FP8_MAX, FP8_MAX).astype(np.float32).astype(ml_dtypes.float8_e4m3fn)


def fp8_onnx_from_int8(int8_onnx: PathLike, fp32_onnx: PathLike, dst: PathLike) -> Dict[str, Any]:
    """Write the FP8 Q/DQ twin of ``int8_onnx`` to ``dst``; weights come from ``fp32_onnx`` (its external data
    read tensor by tensor). Returns counts of activation and weight Q/DQ pairs converted."""
    import onnx
    from onnx import numpy_helper, version_converter
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    int8_onnx, fp32_onnx = Path(int8_onnx), Path(fp32_onnx)
    model = onnx.load(str(int8_onnx))
    if not any(n.op_type == "DequantizeLinear" for n in model.graph.node):
        raise ExportError(f"{int8_onnx}: no DequantizeLinear node: not a Q/DQ graph")
    fp32_graph = onnx.load(str(fp32_onnx), load_external_data=False).graph
    originals = {t.name: t for t in fp32_graph.initializer}
    model = version_converter.convert_version(model, FP8_OPSET) if _opset(model) < FP8_OPSET else model
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}

    def replace(name: str, array: np.ndarray) -> None:
        tensor = numpy_helper.from_array(array, name)
        inits[name].CopyFrom(tensor)

    activation_scales, weight_scales, zero_points = set(), {}, set()
    for node in g.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) < 3 or node.input[2] not in inits:
            raise ExportError(f"{int8_onnx}: {node.name} has no constant zero point")
        zero_points.add(node.input[2])
        source = node.input[0]
        if node.op_type == "DequantizeLinear" and source in inits and source not in producers:
            weight_scales[source] = (node.input[1], _axis(node))  # an INT8 weight
        elif node.op_type == "QuantizeLinear":
            activation_scales.add(node.input[1])
    for name in sorted(activation_scales):
        scale = numpy_helper.to_array(inits[name]).astype(np.float32)
        replace(name, (scale * INT8_MAX / FP8_MAX).astype(np.float32))
    for qname, (scale_name, axis) in sorted(weight_scales.items()):
        base = qname[: -len(QUANTIZED_SUFFIX)] if qname.endswith(QUANTIZED_SUFFIX) else None
        original = originals.get(base) if base else None
        if original is None:
            raise ExportError(f"{int8_onnx}: the weight {qname} has no FP32 original in {fp32_onnx.name}")
        if uses_external_data(original):
            load_external_data_for_tensor(original, str(fp32_onnx.parent))
        weight = numpy_helper.to_array(original).astype(np.float32)
        int8_scale = numpy_helper.to_array(inits[scale_name])
        if int8_scale.size == 1:
            amax = np.abs(weight).max(keepdims=True).reshape(int8_scale.shape)
            scale = np.maximum(amax, np.finfo(np.float32).tiny) / FP8_MAX
            shaped = scale
        else:
            axis = axis % weight.ndim
            others = tuple(i for i in range(weight.ndim) if i != axis)
            amax = np.abs(weight).max(axis=others)
            scale = (np.maximum(amax, np.finfo(np.float32).tiny) / FP8_MAX).astype(np.float32)
            shaped = np.expand_dims(scale, others)
        replace(qname, to_fp8(weight / shaped))
        replace(scale_name, np.asarray(scale, dtype=np.float32))
    for name in sorted(zero_points):
        shape = numpy_helper.to_array(inits[name]).shape
        replace(name, to_fp8(np.zeros(shape, dtype=np.float32)))
    q_outputs = {n.output[0] for n in g.node if n.op_type == "QuantizeLinear"}
    for value in g.value_info:  # the INT8 graph's inferred types of the quantized tensors
        if value.name in q_outputs:
            value.type.tensor_type.elem_type = onnx.TensorProto.FLOAT8E4M3FN
    model.ir_version = max(model.ir_version, 9)
    for prop in list(model.metadata_props):
        if prop.key in ("hmr_trt.int8", "hmr_trt.precision"):
            model.metadata_props.remove(prop)
    info = {"activation_qdq_scales": len(activation_scales), "weights": len(weight_scales), "opset": FP8_OPSET}
    entry = model.metadata_props.add()
    entry.key, entry.value = "hmr_trt.precision", "fp8"
    entry = model.metadata_props.add()
    entry.key, entry.value = "hmr_trt.fp8", json.dumps({"from_int8": int8_onnx.name, **info})
    onnx.checker.check_model(model)
    save_onnx_atomic(model, dst)
    return info


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _axis(node: Any) -> int:
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
