"""The FP16 recipe's FP32 keep-list reaches the real TensorRT builder (needs TensorRT and a GPU: a builder needs one).

An FP16 ONNX like the precision pass writes it (a float16 MatMul, then a Softmax the recipe keeps in
float32) is parsed by the installed TensorRT with hmr-trt's build settings; the layer precisions are
read back. On 8.6 (weakly typed, ``BuilderFlag.FP16``) the float32 layer must carry an FP32
precision constraint and output type, with ``OBEY_PRECISION_CONSTRAINTS`` set; on 10+ (strongly
typed) the parsed types are the engine's, so the kept layer's output is float32 by construction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hmr_trt.engines import builder
from hmr_trt.profile import ShapeProfile
from hmr_trt.runtime import trt_compat

pytestmark = pytest.mark.trt


def _fp16_graph_with_a_kept_softmax(path: Path) -> None:
    onnx = pytest.importorskip("onnx", reason="onnx writes the test graph")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 8)).astype(np.float16), "w")
    nodes = [helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16, name="/in/Cast"),
             helper.make_node("MatMul", ["x16", "w"], ["m16"], name="/block/MatMul"),
             helper.make_node("Cast", ["m16"], ["m32"], to=TensorProto.FLOAT, name="/block/Cast"),
             helper.make_node("Softmax", ["m32"], ["y"], axis=-1, name="/stage1/dem/Softmax")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_the_keep_list_reaches_the_builder(tmp_path: Path) -> None:
    ok, why = trt_compat.trt_available()
    if not ok:
        pytest.skip(f"needs TensorRT and a GPU (a TensorRT builder needs a CUDA device): {why}")
    trt = trt_compat.import_tensorrt()
    version = trt_compat.parse_version(trt.__version__)
    settings = trt_compat.build_settings(version, "fp16")
    path = tmp_path / "g.onnx"
    _fp16_graph_with_a_kept_softmax(path)
    logger = trt_compat.process_logger(trt)
    b = trt.Builder(logger)
    request = builder.BuildRequest(path, "fp16", ShapeProfile(1, 2, 4), 256, 3, None, settings)
    network, _parser = builder._parse(trt, logger, b, request)
    layers = {network.get_layer(i).name: network.get_layer(i) for i in range(network.num_layers)}
    softmax = next(layer for name, layer in layers.items() if "Softmax" in name)
    matmul = next(layer for name, layer in layers.items() if "MatMul" in name)
    assert softmax.get_output(0).dtype == trt.float32 and matmul.get_output(0).dtype == trt.float16
    if settings.strongly_typed:
        assert network.get_flag(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) or \
            trt_compat.strongly_typed_only(version)
        return
    pinned = trt_compat.pin_fp32_layers(trt, network)
    config = b.create_builder_config()
    trt_compat.apply_builder_settings(trt, config, settings)
    assert softmax.name in pinned and matmul.name not in pinned
    assert softmax.precision_is_set and softmax.precision == trt.float32
    assert softmax.output_type_is_set(0) and softmax.get_output_type(0) == trt.float32
    assert not matmul.precision_is_set
    assert config.get_flag(trt.BuilderFlag.FP16) and config.get_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    assert not config.get_flag(trt.BuilderFlag.TF32)
