"""The validator: onnx.checker, shape inference and the TensorRT op preflight name the offenders."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from hmr_trt.engines.preflight import trt_supported_ops, unsupported_nodes, validate_onnx
from hmr_trt.errors import ExportError


def _model(nodes, opset: int = 17, domain_imports=()):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8])
    graph = helper.make_graph(nodes, "g", [x], [y])
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domain_imports]
    return helper.make_model(graph, opset_imports=imports)


def test_supported_list_has_the_ops_we_use_and_not_dft() -> None:
    ops = trt_supported_ops()
    assert {"GRU", "MatMul", "Gemm", "Softmax", "Conv", "QuantizeLinear", "DequantizeLinear"} <= ops
    assert "DFT" not in ops and "STFT" not in ops


def test_dft_is_refused_with_the_node_name(tmp_path) -> None:
    model = _model([helper.make_node("DFT", ["x"], ["y"], name="fde/dft", axis=1)])
    assert any("fde/dft (DFT)" in p for p in unsupported_nodes(model))
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(ExportError, match=r"fde/dft \(DFT\)"):
        validate_onnx(tmp_path / "m.onnx")


def test_einsum_and_custom_domains_are_refused() -> None:
    model = _model([helper.make_node("Einsum", ["x", "x"], ["t"], name="e", equation="bij,bkj->bik"),
                    helper.make_node("Fancy", ["t"], ["y"], name="custom1", domain="com.acme")],
                   domain_imports=["com.acme"])
    problems = unsupported_nodes(model)
    assert any(p.startswith("e (Einsum)") for p in problems)
    assert any("custom1" in p and "com.acme" in p for p in problems)


def test_unsupported_op_inside_a_subgraph_is_found() -> None:
    inner = helper.make_graph([helper.make_node("Unique", ["x"], ["u"], name="inner_unique")], "b", [],
                              [helper.make_tensor_value_info("u", TensorProto.FLOAT, None)])
    cond = helper.make_node("If", ["c"], ["y"], name="if", then_branch=inner, else_branch=inner)
    assert any("inner_unique (Unique)" in p for p in unsupported_nodes(_model([cond])))


def test_checker_and_opset_failures_are_collected(tmp_path) -> None:
    # Relu with two inputs fails the checker; opset 18 is above TensorRT 8.6's bound
    model = _model([helper.make_node("Relu", ["x", "x"], ["y"], name="bad_relu")], opset=18)
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(ExportError) as info:
        validate_onnx(tmp_path / "m.onnx")
    assert "onnx.checker" in str(info.value) and "opset 18 > 17" in str(info.value)


def test_a_clean_graph_passes(tmp_path) -> None:
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="r")])
    onnx.save(model, tmp_path / "m.onnx")
    validate_onnx(tmp_path / "m.onnx")
