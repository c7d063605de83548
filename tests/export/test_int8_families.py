"""trt-export --precision int8 for the frame (DecoMR) and scene (instancehmr) families, tiny configs, real
ONNX Runtime: calibrated on the sample video from CALIBRATION_START_FRAME on, Q/DQ Convs with zero points
0, the recipe's exclusions float, the sweep's report and the INT8 verdict in the manifest."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from onnx import numpy_helper  # noqa: E402

from hmr_trt import registry  # noqa: E402
from hmr_trt.calibration.images import CALIBRATION_IMAGES  # noqa: E402
from hmr_trt.calibration.quantize import CONV_GROUP_BUDGET, qdq_problems  # noqa: E402
from hmr_trt.export.pipeline import ExportOptions, run_export  # noqa: E402
from hmr_trt.manifest import Manifest  # noqa: E402
from hmr_trt.profile import ShapeProfile  # noqa: E402

MODELS = [pytest.param("decomr", marks=pytest.mark.slow), "instancehmr"]  # decomr: ~40 s (its torch reference)


def _export(name: str, out: Path, video: Path, monkeypatch, goal_mm: float | None = None) -> Manifest:
    """The tiny config exported at INT8; ``goal_mm``: the contract's INT8 goal replaced (a loose goal
    keeps every layer INT8: no sweep)."""
    adapter = registry.adapter(name)
    if goal_mm is not None:
        real = adapter.contract_for

        def contract_for(cfg, *args, **kwargs):  # noqa: ANN001, ANN202
            c = real(cfg, *args, **kwargs)
            return dataclasses.replace(c, goals_mm={**c.goals_mm, "int8": goal_mm})

        monkeypatch.setattr(adapter, "contract_for", contract_for)
    run_export(ExportOptions(out=out, model=name, precision="int8", config=adapter.tiny_config(), video=video,
                             profile=ShapeProfile(1, 4, 8), parity_windows=3, build_engines=False,
                             calib_cache=out.parent / "calib-cache"))
    return Manifest.read(out)


def _int8_graph(manifest: Manifest, out: Path) -> tuple[onnx.ModelProto, dict]:
    contract = manifest.model_contract()
    art = manifest.find(contract.model_graph.name, "onnx", "int8")
    assert art is not None and art.path == f"{manifest.model}_{contract.model_graph.name}_int8.onnx"
    return onnx.load(str(out / art.path)), art.extra["conversion"]


def _reads_int8(model: onnx.ModelProto, ops) -> set:  # noqa: ANN001
    producers = {o: n for n in model.graph.node for o in n.output}
    return {n.name for n in model.graph.node if n.op_type in ops and producers.get(n.input[0]) is not None
            and producers[n.input[0]].op_type == "DequantizeLinear"}


@pytest.mark.parametrize("name", MODELS)
def test_int8_export_writes_a_qdq_conv_graph_and_its_verdict(name, sample_video, tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    manifest = _export(name, out, sample_video, monkeypatch, goal_mm=1e6)
    contract = manifest.model_contract()
    recipe = contract.recipe_for("int8")
    model, conversion = _int8_graph(manifest, out)

    assert not qdq_problems(model)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    convs = {n.name for n in model.graph.node if n.op_type == "Conv"}
    excluded = set(conversion["recipe_excluded_nodes"])
    assert excluded & convs  # the recipe's heads are Convs ...
    assert _reads_int8(model, recipe.int8_ops) == {n.name for n in model.graph.node
                                                   if n.op_type in recipe.int8_ops} - excluded  # ... left float
    assert len(_reads_int8(model, ("Conv",))) > 20

    # no sweep under a loose goal; calibrated on the sample video's frames from CALIBRATION_START_FRAME on
    assert conversion["passed"] and conversion["sensitivity"] == [] and not conversion["excluded_nodes"]
    assert conversion["calibration_windows"] == CALIBRATION_IMAGES[contract.family]
    assert conversion["eval_windows"] == 3 and conversion["op_types"] == list(recipe.int8_ops)

    verdict = manifest.verdict["int8"]
    assert verdict["verdict"] == "PASS" and verdict["recipe"] == "int8" and verdict["goal_mm"] == 1e6
    assert set(verdict["drift_by_set"]) == {"random", "video"} and verdict["worst_case"].startswith("video")
    assert verdict["worst_mean_vertex_mm"] > 0  # INT8 moves the meshes: the parity did run the Q/DQ graph
    assert 0.5 < verdict["share"]["flops_int8"] <= 1 and verdict["share"]["weights_int8"] > 0.5
    assert manifest.verdict["fp32"]["verdict"] == "PASS"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["decomr", "instancehmr"])
def test_int8_sweep_on_the_contracts_goal(name, sample_video, tmp_path, monkeypatch) -> None:
    """The contract's INT8 goal: the sweep ranks at most CONV_GROUP_BUDGET layer groups; the verdict is a MISS
    when the sweep had to leave every layer float."""
    out = tmp_path / "out"
    manifest = _export(name, out, sample_video, monkeypatch)
    contract = manifest.model_contract()
    model, conversion = _int8_graph(manifest, out)
    assert not qdq_problems(model)
    assert conversion["before"]["vertices_mean_mm"] > contract.goal_mm("int8")  # the tiny nets need the sweep
    assert 0 < len(conversion["groups"]) <= CONV_GROUP_BUDGET == conversion["group_budget"]
    assert len(conversion["sensitivity"]) == len(conversion["groups"])
    assert set(conversion["excluded_groups"]) <= set(conversion["groups"])
    assert _reads_int8(model, contract.recipe_for("int8").int8_ops) == \
        {n.name for n in model.graph.node if n.op_type in contract.recipe_for("int8").int8_ops} \
        - set(conversion["recipe_excluded_nodes"]) - set(conversion["excluded_nodes"])
    assert len(_reads_int8(model, ("Conv", "Gemm", "MatMul"))) == conversion["int8_nodes"]
    verdict = manifest.verdict["int8"]
    swept = [f for f in verdict["failures"] if f.startswith("INT8 sweep:")]
    assert bool(swept) == (not conversion["passed"])
    if conversion["int8_nodes"] == 0:
        assert verdict["verdict"] == "MISS" and verdict["share"]["weights_int8"] == 0
    else:
        assert conversion["after"]["vertices_mean_mm"] <= contract.goal_mm("int8") and verdict["share"]["weights_int8"] > 0
    print(name, {k: conversion[k] for k in ("before", "after", "excluded_groups", "int8_nodes", "seconds")})
