"""INT8 (QDQ) pass on Conv nets: the tiny DecoMR (frame, vertices out) and instance-aware (scene, maps
and a body model) graphs. Q/DQ on Conv inputs with per-channel weights and zero points 0, recipe
exclusions float, float readers (residual Adds) rewired, {input name: array} calibration data,
stage-level layer groups, and the sweep through hmr_trt.mesh.meshes without a body graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from onnx import numpy_helper  # noqa: E402

from hmr_trt import registry  # noqa: E402
from hmr_trt.calibration.quantize import (  # noqa: E402
    CONV_GROUP_BUDGET,
    int8_onnx_from_fp32,
    int8_with_sweep,
    layer_groups,
    qdq_problems,
    recipe_exclusions,
    stage_scope,
)
from hmr_trt.errors import InputSpecError  # noqa: E402
from hmr_trt.runtime.backends import OnnxRuntimeBackend  # noqa: E402


@pytest.fixture(scope="module", params=["decomr", "instancehmr"])
def tiny(request, tmp_path_factory):
    """(name, contract, FP32 model graph path) of the model's tiny config."""
    from hmr_trt.export import onnx_export

    name = request.param
    adapter = registry.adapter(name)
    cfg = adapter.tiny_config()
    contract = adapter.contract_for(cfg)
    graph = contract.model_graph
    path = tmp_path_factory.mktemp(f"int8_{name}") / f"{graph.name}_fp32.onnx"
    onnx_export.onnx_from_module(adapter.exportable(adapter.reference(cfg), graph.name), graph,
                                 adapter.example_inputs(cfg, graph.name, 2), path)
    return name, contract, path


def _inputs(name: str, n: int, seed: int) -> np.ndarray:
    adapter = registry.adapter(name)
    cfg = adapter.tiny_config()
    return adapter.example_inputs(cfg, adapter.contract_for(cfg).model_graph.name, n, seed=seed)[0].numpy()


def test_convs_read_int8_inputs_and_per_channel_weights_with_zero_points_zero(tiny, tmp_path: Path) -> None:
    name, contract, src = tiny
    recipe = contract.recipe_for("int8")
    assert "Conv" in recipe.int8_ops
    fp32 = onnx.load(str(src))
    fixed = recipe_exclusions(fp32, recipe)
    info = int8_onnx_from_fp32(src, tmp_path / "int8.onnx", _inputs(name, 6, 1), tmp_path / "calib.json", fixed,
                               op_types=recipe.int8_ops)
    model = onnx.load(str(tmp_path / "int8.onnx"))
    assert not qdq_problems(model)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)

    producers = {o: n for n in model.graph.node for o in n.output}
    quantizable = [n for n in model.graph.node if n.op_type in recipe.int8_ops]
    excluded = [n for n in quantizable if n.name in fixed]
    expected = {n.name for n in quantizable if n.name not in fixed}
    assert excluded and sorted(info["quantized_nodes"]) == sorted(expected)
    assert sum(n.op_type == "Conv" for n in quantizable if n.name in expected) > 20
    for node in quantizable:
        data, weight = producers.get(node.input[0]), producers.get(node.input[1])
        if node.name in fixed:  # recipe exclusions read float tensors and float weights
            assert not any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear"
                           for i in node.input), node.name
            continue
        assert data.op_type == "DequantizeLinear" and producers[data.input[0]].op_type == "QuantizeLinear", node.name
        if node.op_type != "Conv":
            continue
        assert weight.op_type == "DequantizeLinear" and inits[weight.input[0]].dtype == np.int8, node.name
        scale = inits[weight.input[1]]
        axis = next((a.i for a in weight.attribute if a.name == "axis"), 1)
        assert axis == 0 and scale.shape == (inits[weight.input[0]].shape[0],), node.name  # per output channel
    # every activation DQ feeds exactly one quantized node: float readers (residual Adds, the
    # scatter, excluded heads) read the float tensor, and no two consumers share a pair
    for dq in (n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] not in inits):
        readers = [n for n in model.graph.node if dq.output[0] in n.input]
        assert len(readers) == 1 and readers[0].name in expected, (dq.name, [r.name for r in readers])
    # the stem Conv: its Q reads the very tensor the FP32 stem read (for DecoMR the graph input itself,
    # which stays float: ORT puts Q/DQ after an input, it does not change the input's type)
    stem = next(n for n in model.graph.node if n.op_type == "Conv")
    fp32_stem = next(n for n in fp32.graph.node if n.name == stem.name)
    assert producers[producers[stem.input[0]].input[0]].input[0] == fp32_stem.input[0]
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.FLOAT]
    if name == "decomr":
        assert fp32_stem.input[0] == model.graph.input[0].name == "images"
    # residual Adds read a tensor a quantized Conv reads too; they still read it in float
    shared = {i for n in fp32.graph.node if n.op_type == "Add" for i in n.input} & \
        {n.input[0] for n in fp32.graph.node if n.name in expected}
    assert shared
    assert {n.name: list(n.input) for n in model.graph.node if n.op_type == "Add"} == \
        {n.name: list(n.input) for n in fp32.graph.node if n.op_type == "Add"}

    x = _inputs(name, 2, 5)
    with OnnxRuntimeBackend(src) as ref, OnnxRuntimeBackend(tmp_path / "int8.onnx") as q:
        want, got = ref.infer({ref.inputs[0].name: x}), q.infer({q.inputs[0].name: x})
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}
    assert all(np.isfinite(v).all() for v in got.values())
    assert any(not np.allclose(got[k], want[k]) for k in want)  # INT8 does change the outputs


def test_calibration_data_by_input_name_and_its_cache(tiny, tmp_path: Path) -> None:
    name, contract, src = tiny
    input_name = contract.model_graph.input_names[0]
    ops = contract.recipe_for("int8").int8_ops
    data = {input_name: _inputs(name, 4, 2)}
    first = int8_onnx_from_fp32(src, tmp_path / "a.onnx", data, tmp_path / "calib.json", op_types=ops)
    again = int8_onnx_from_fp32(src, tmp_path / "b.onnx", dict(data), tmp_path / "calib.json", op_types=ops)
    assert first["calibrated"] and not again["calibrated"] and first["key"] == again["key"]
    assert first["windows"] == 4 and first["key"]["op_types"] == list(ops)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    array = int8_onnx_from_fp32(src, tmp_path / "c.onnx", data[input_name], tmp_path / "calib.json", op_types=ops)
    assert array["calibrated"] and array["quantized_nodes"] == first["quantized_nodes"]
    with pytest.raises(InputSpecError, match=r"calibration data names \['features'\]; the graph's inputs are"):
        int8_onnx_from_fp32(src, tmp_path / "d.onnx", {"features": data[input_name]}, tmp_path / "calib.json")
    with pytest.raises(InputSpecError, match=rf"'{input_name}' must be a non-empty array of rank 4, got \(0, "):
        int8_onnx_from_fp32(src, tmp_path / "d.onnx", data[input_name][:0], tmp_path / "calib.json")
    assert not (tmp_path / "d.onnx").exists()


def test_stage_scope() -> None:
    assert stage_scope("/CNet/resnet/layer2/layer2.1/conv1") == "/CNet/resnet/layer2"
    assert stage_scope("/backbone/layer1/layer1.0/downsample/downsample.0") == "/backbone/layer1"
    assert stage_scope("/final_layers.1/final_layers.1.0/final_layers.1.0.0") == "/final_layers.1"
    assert stage_scope("/LNet/hg/down_layers.0/down_layers.0.0/conv1") == "/LNet/hg/down_layers.0"
    assert stage_scope("/backbone/conv1") == "/backbone/conv1"
    assert stage_scope("/centerid_resblock1/conv2") == "/centerid_resblock1/conv2"


def test_conv_layers_group_into_stages_within_the_budget(tiny) -> None:
    name, contract, src = tiny
    recipe = contract.recipe_for("int8")
    model = onnx.load(str(src))
    fixed = recipe_exclusions(model, recipe)
    quantizable = [n.name for n in model.graph.node if n.op_type in recipe.int8_ops and n.name not in fixed]
    fine = layer_groups(model, recipe.int8_ops, exclude=fixed)
    assert len(fine) == len(quantizable)  # each Conv has its own weight
    for budget in (CONV_GROUP_BUDGET, 5):
        groups = layer_groups(model, recipe.int8_ops, exclude=fixed, budget=budget)
        members = [n for nodes in groups.values() for n in nodes]
        assert len(groups) == budget and sorted(members) == sorted(quantizable)  # each node once, none excluded
        assert not set(members) & set(fixed)
    groups = layer_groups(model, recipe.int8_ops, exclude=fixed, budget=CONV_GROUP_BUDGET)
    stage = "/backbone/layer2" if name == "instancehmr" else "/CNet/resnet/layer2"
    owner = [g for g, nodes in groups.items() if any(n.startswith(stage + "/") for n in nodes)]
    assert len(owner) == 1  # a ResNet stage is never split
    for group, nodes in groups.items():  # named by its first stage (and its last, when merged)
        assert group.split(" .. ")[0] == stage_scope(nodes[0].rsplit("/", 1)[0])
        assert group.split(" .. ")[-1] == stage_scope(nodes[-1].rsplit("/", 1)[0])


@pytest.mark.parametrize("tiny", ["decomr"], indirect=True)  # the scene model's: tests/export/test_int8_families.py
def test_sweep_measures_vertices_without_a_body_graph(tiny, tmp_path: Path) -> None:
    """DecoMR outputs vertices (body model "none"): the sweep needs no body graph; the excluded group is
    the one whose float copy drifted least, and the final graph drifts as that variant did."""
    name, contract, src = tiny
    assert contract.body_model == "none"
    recipe = contract.recipe_for("int8")
    dst, report = int8_with_sweep(src, tmp_path / "int8.onnx", _inputs(name, 6, 1), _inputs(name, 3, 2), None,
                                  tmp_path / "calib.json", goal_mm=0.0, max_groups=1, recipe=recipe,
                                  contract=contract, group_budget=6)
    assert report["op_types"] == list(recipe.int8_ops) and len(report["groups"]) == 6
    assert report["before"]["vertices_mean_mm"] > 0 and len(report["sensitivity"]) == 6
    assert report["excluded_groups"] == [report["sensitivity"][0]["group"]] and not report["passed"]
    assert report["after"]["vertices_mean_mm"] == pytest.approx(report["sensitivity"][0]["vertices_mean_mm"],
                                                                rel=1e-3)
    model = onnx.load(str(dst))
    producers = {o: n for n in model.graph.node for o in n.output}
    reads_int8 = {n.name for n in model.graph.node if n.op_type in recipe.int8_ops
                  and producers.get(n.input[0]) is not None and producers[n.input[0]].op_type == "DequantizeLinear"}
    assert report["excluded_nodes"] and not reads_int8 & set(report["excluded_nodes"] + report["recipe_excluded_nodes"])
    assert len(reads_int8) == report["int8_nodes"] > 0
    assert set(report["seconds"]) == {"reference", "calibration", "before", "sensitivity", "search", "final"}
