"""FP8 (E4M3) Q/DQ graphs from the INT8 recipe's graph: types, scales, weights re-quantized from FP32, opset 19,
run by ONNX Runtime's float8 Q/DQ kernels on the CPU (the project's ORT backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
ml_dtypes = pytest.importorskip("ml_dtypes")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from hmr_trt.calibration.fp8 import FP8_MAX, fp8_onnx_from_int8, to_fp8  # noqa: E402
from hmr_trt.calibration.quantize import int8_onnx_from_fp32  # noqa: E402
from hmr_trt.errors import ExportError  # noqa: E402
from hmr_trt.runtime.backends import OnnxRuntimeBackend  # noqa: E402


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> tuple:
    """A LayerNorm-like ReduceMean (axes as an attribute: opset 17) -> MatMul -> Relu -> MatMul graph, its INT8
    Q/DQ graph (calibrated on its own inputs) and the FP8 twin."""
    tmp = tmp_path_factory.mktemp("fp8")
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((32, 24)) * np.linspace(0.1, 3, 24)).astype(np.float32)  # channels of other ranges
    w2 = rng.standard_normal((24, 8)).astype(np.float32)
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], name="/norm/ReduceMean", axes=[-1], keepdims=1),
             helper.make_node("Sub", ["x", "mean"], ["centred"], name="/norm/Sub"),
             helper.make_node("MatMul", ["centred", "w1"], ["h"], name="/fc1/MatMul"),
             helper.make_node("Relu", ["h"], ["r"], name="/act/Relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="/fc2/MatMul")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    fp32 = tmp / "fp32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(fp32))
    data = rng.standard_normal((64, 32)).astype(np.float32)
    int8, fp8 = tmp / "int8.onnx", tmp / "fp8.onnx"
    int8_onnx_from_fp32(fp32, int8, data, tmp / "cache.json")
    info = fp8_onnx_from_int8(int8, fp32, fp8)
    return fp32, int8, fp8, info, {"w1": w1, "w2": w2}, data


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    with OnnxRuntimeBackend(path) as backend:
        return backend.infer({"x": x})["y"]


def test_every_qdq_is_float8_at_opset_19(graphs):
    _, int8, fp8, info, _, _ = graphs
    model = onnx.load(str(fp8))
    onnx.checker.check_model(model, full_check=True)
    assert next(o.version for o in model.opset_import if o.domain == "") == 19 and model.ir_version >= 9
    inits = {t.name: t for t in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) == sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in onnx.load(str(int8)).graph.node)
    for node in qdq:
        zp = inits[node.input[2]]
        assert zp.data_type == TensorProto.FLOAT8E4M3FN and not numpy_helper.to_array(zp).astype(np.float32).any()
    assert info["weights"] == 2 and info["activation_qdq_scales"] == 2
    assert {t.data_type for t in model.graph.initializer if t.name.endswith("_quantized")} == {TensorProto.FLOAT8E4M3FN}
    assert not any(t.data_type == TensorProto.INT8 for t in model.graph.initializer)
    means = [n for n in model.graph.node if n.op_type == "ReduceMean"]  # opset 18 moved axes to an input
    assert len(means[0].input) == 2 and not [a for a in means[0].attribute if a.name == "axes"]


def test_weights_are_the_fp32_weights_in_e4m3_per_channel_and_activation_scales_rescaled(graphs):
    _, int8, fp8, _, weights, _ = graphs
    q8 = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(int8)).graph.initializer}
    f8 = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(fp8)).graph.initializer}
    for name, w in weights.items():
        scale = f8[f"{name}_scale"]
        np.testing.assert_allclose(scale, np.abs(w).max(axis=0) / FP8_MAX, rtol=1e-6)  # per output channel
        values = f8[f"{name}_quantized"].astype(np.float32)
        assert np.abs(values).max(axis=0) == pytest.approx(np.full(w.shape[1], FP8_MAX))  # amax lands on 448
        np.testing.assert_array_equal(values, to_fp8(w / scale).astype(np.float32))
        np.testing.assert_allclose(values * scale, w, rtol=2 ** -4, atol=np.abs(w).max() * 2 ** -9)
    activation = [k for k in q8 if k.endswith("_scale") and q8[k].size == 1]
    assert activation
    for k in activation:
        assert f8[k] == pytest.approx(q8[k] * 127 / 448, rel=1e-6)


def test_onnx_runtime_runs_it_on_the_cpu_with_e4m3_rounding(graphs):
    fp32, int8, fp8, _, _, data = graphs
    x = data[:8]
    ref, q8, f8 = _run(fp32, x), _run(int8, x), _run(fp8, x)
    scale = np.abs(ref).max()
    assert 0 < np.abs(f8 - ref).max() < 0.1 * scale  # rounded (E4M3: 3 mantissa bits), not broken
    assert np.abs(f8 - q8).max() > 0  # not the INT8 graph


def test_a_weight_without_its_fp32_original_is_refused(graphs, tmp_path):
    fp32, int8, _, _, _, _ = graphs
    model = onnx.load(str(fp32))
    for t in model.graph.initializer:
        t.name = f"other_{t.name}"
    for n in model.graph.node:
        n.input[:] = [f"other_{i}" if i in ("w1", "w2") else i for i in n.input]
    other = tmp_path / "other.onnx"
    onnx.save(model, str(other))
    with pytest.raises(ExportError, match="has no FP32 original in other.onnx"):
        fp8_onnx_from_int8(int8, other, tmp_path / "fp8.onnx")
    assert not (tmp_path / "fp8.onnx").exists()


def test_reduced_precision_share_counts_fp8(graphs):
    from hmr_trt.engines.precision import reduced_precision_share

    _, int8, fp8, _, _, _ = graphs
    q8, f8 = reduced_precision_share(int8), reduced_precision_share(fp8)
    assert q8["weights_int8"] == pytest.approx(1.0) and q8["flops_int8"] == pytest.approx(1.0)
    assert q8["weights_fp8"] == 0 and q8["flops_fp8"] == 0
    assert f8["weights_fp8"] == pytest.approx(1.0) and f8["flops_fp8"] == pytest.approx(1.0)
    assert f8["weights_int8"] == 0 and f8["flops_int8"] == 0
