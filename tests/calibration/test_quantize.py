"""INT8 (QDQ) pass: zero points 0, Q/DQ on MatMul/Gemm only, calibration cache, sweep, mm parity."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from hmr_trt.calibration import quantize  # noqa: E402
from hmr_trt.calibration.quantize import (  # noqa: E402
    OP_TYPES,
    int8_drift,
    int8_onnx_from_fp32,
    int8_with_sweep,
    layer_groups,
    qdq_problems,
    reference_meshes,
)
from hmr_trt.errors import ExportError, InputSpecError  # noqa: E402
from hmr_trt.metrics import GOALS_MM  # noqa: E402
from hmr_trt.runtime.backends import OnnxRuntimeBackend  # noqa: E402


def _windows(n: int, seed: int, width: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 16, width)).astype(np.float32)


def _producers(model) -> dict:
    return {o: n for n in model.graph.node for o in n.output}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The TINY model's temporal graph: the full graph's structure at feature width 64."""
    pytest.importorskip("torch")
    from hmr_trt.export.models.coseg.config import TINY
    from hmr_trt.export.models.coseg.export import export_temporal
    from hmr_trt.export.models.coseg.model import build_model
    from hmr_trt.profile import ShapeProfile

    path = tmp_path_factory.mktemp("tiny_int8") / "temporal_fp32.onnx"
    export_temporal(build_model(TINY.with_(fde_mode="matrix")), path, ShapeProfile(1, 4, 8))
    return path


def test_qdq_on_every_matmul_gemm_none_on_gru_zero_points_zero(tiny: Path, tmp_path: Path) -> None:
    info = int8_onnx_from_fp32(tiny, tmp_path / "int8.onnx", _windows(6, 0), tmp_path / "calib.json")
    model = onnx.load(str(tmp_path / "int8.onnx"))
    assert not qdq_problems(model)
    producers = _producers(model)
    gemms = [n for n in model.graph.node if n.op_type in OP_TYPES]
    assert len(info["quantized_nodes"]) == len(gemms) > 20 and info["calibrated"]
    for node in gemms:  # activation (and weight) inputs come through DequantizeLinear
        assert producers[node.input[0]].op_type == "DequantizeLinear", node.name
    for node in model.graph.node:
        if node.op_type == "GRU":
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input)
    zero_points = [t for t in model.graph.initializer if t.name.endswith("_zero_point")]
    assert zero_points and all(onnx.numpy_helper.to_array(t).dtype == np.int8 for t in zero_points)
    with OnnxRuntimeBackend(tmp_path / "int8.onnx") as backend:
        assert backend.infer({"features": _windows(2, 1)})["pose_rotmat"].shape == (2, 16, 24, 3, 3)


def test_cache_reuse_skips_calibration_and_gives_the_same_model(tiny: Path, tmp_path: Path, monkeypatch) -> None:
    cache, windows = tmp_path / "calib.json", _windows(6, 0)
    first = int8_onnx_from_fp32(tiny, tmp_path / "a.onnx", windows, cache)
    assert first["calibrated"] and json.loads(cache.read_text())["key"]["windows_sha256"]

    ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")  # the module, not the function

    def no_calibration(*args, **kwargs):
        raise AssertionError("the calibrator ran although the cache matches")

    monkeypatch.setattr(ort_quantize, "create_calibrator", no_calibration)
    second = int8_onnx_from_fp32(tiny, tmp_path / "b.onnx", windows, cache)
    assert not second["calibrated"]
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    monkeypatch.undo()

    other = int8_onnx_from_fp32(tiny, tmp_path / "c.onnx", _windows(6, 7), cache)  # other windows: recalibrate
    assert other["calibrated"] and other["key"] != first["key"]
    assert json.loads(cache.read_text())["key"] == other["key"]
    cache.write_text("{not json")  # a damaged cache is recalibrated and replaced
    assert int8_onnx_from_fp32(tiny, tmp_path / "d.onnx", windows, cache)["calibrated"]


def test_nonzero_zero_points_are_refused_and_nothing_is_half_written(tiny: Path, tmp_path: Path,
                                                                      monkeypatch) -> None:
    monkeypatch.setitem(quantize.EXTRA_OPTIONS, "ActivationSymmetric", False)
    with pytest.raises(ExportError, match="zero point .* TensorRT needs int8 0"):
        int8_onnx_from_fp32(tiny, tmp_path / "int8.onnx", _windows(6, 0) + 3.0, tmp_path / "calib.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.json"]  # ranges are fine; no model, no temp
    with pytest.raises(InputSpecError, match=r"non-empty \(W, T, C\) array, got \(0, 16, 64\)"):
        int8_onnx_from_fp32(tiny, tmp_path / "int8.onnx", _windows(0, 0), tmp_path / "calib.json")


def test_layer_groups_share_weights(tiny: Path) -> None:
    groups = layer_groups(onnx.load(str(tiny)))
    assert groups["/regressor/fc1"] == ["/regressor/fc1/Gemm", "/regressor/fc1_1/Gemm", "/regressor/fc1_2/Gemm"]
    assert groups["/stage1/dem/MatMul"] == ["/stage1/dem/MatMul"]  # attention: activation x activation
    assert sum(len(v) for v in groups.values()) == 31


def test_sweep_leaves_the_most_sensitive_groups_in_float(tiny: Path, full_export, tmp_path: Path) -> None:
    """On TINY with an unreachable goal the sweep excludes groups in sensitivity order, re-measuring each time."""
    out, _ = full_export
    body = out / "body_model_fp32.onnx"
    dst, report = int8_with_sweep(tiny, tmp_path / "int8.onnx", _windows(6, 0), _windows(4, 1), body,
                                  tmp_path / "calib.json", goal_mm=0.0, max_groups=2)
    assert len(report["excluded_groups"]) == 2 and report["sensitivity"]
    assert report["excluded_groups"] == [r["group"] for r in report["sensitivity"][:2]]
    assert report["after"]["vertices_mean_mm"] < report["before"]["vertices_mean_mm"]
    assert not report["passed"] and report["int8_nodes"] == 31 - len(report["excluded_nodes"])
    assert set(report["excluded_nodes"]).isdisjoint(int8_onnx_from_fp32(
        tiny, tmp_path / "again.onnx", _windows(6, 0), tmp_path / "calib.json", report["excluded_nodes"])
        ["quantized_nodes"])


# --- the full model on real video ----------------------------------------------------------------

@pytest.fixture(scope="module")
def video_windows(full_export, sample_video) -> tuple[np.ndarray, np.ndarray]:
    """Calibration windows (frames 0-127) and different evaluation windows (frames 400-495)."""
    from hmr_trt.calibration.windows import windows_from_videos

    out, _ = full_export
    backbone = out / "backbone_fp32.onnx"
    calibration = windows_from_videos(sample_video, backbone, window=16, max_windows=8)
    cached = out.parent / "eval_windows_400.npy"  # shared with tests/engines/test_precision.py
    if not cached.exists():
        np.save(cached, windows_from_videos(sample_video, backbone, window=16, max_windows=6, start_frame=400))
    return calibration, np.load(cached)


# What int8_with_sweep keeps in INT8 on the seeded model (test_int8_sweep_meets_the_goal_on_real_video
# re-derives it in ~5 minutes; on the shaped seeded weights of export/seeded.py: 0.379 mm, 10 nodes): the
# DEM's projections, its two attention MatMuls and lifts, and the camera head.
SWEPT_INT8_GROUPS = ("/stage1/dem/query", "/stage1/dem/key", "/stage1/dem/value", "/stage1/dem/MatMul",
                     "/stage1/dem/MatMul_1", "/stage1/dem/lift1", "/stage1/dem/lift2", "/regressor/deccam")


def test_int8_full_model_on_real_video(full_export, video_windows, tmp_path: Path) -> None:
    out, _ = full_export
    src, body = out / "coseg_temporal_fp32.onnx", out / "body_model_fp32.onnx"
    calibration, evaluation = video_windows
    reference = reference_meshes(src, body, evaluation)
    info = int8_onnx_from_fp32(src, tmp_path / "all.onnx", calibration, tmp_path / "calib.json")
    model = onnx.load(str(tmp_path / "all.onnx"))
    assert not qdq_problems(model) and len(info["quantized_nodes"]) == 31
    before = int8_drift(tmp_path / "all.onnx", body, evaluation, reference)

    groups = layer_groups(model)
    excluded = [n for name, nodes in layer_groups(onnx.load(str(src))).items() if name not in SWEPT_INT8_GROUPS
                for n in nodes]
    swept = int8_onnx_from_fp32(src, tmp_path / "swept.onnx", calibration, tmp_path / "calib.json", excluded)
    assert not swept["calibrated"] and len(swept["quantized_nodes"]) == 10  # ranges from the cache
    after = int8_drift(tmp_path / "swept.onnx", body, evaluation, reference)
    print(f"INT8 vs FP32 on {len(evaluation)} video windows (calibrated on {len(calibration)}): "
          f"all MatMul/Gemm {before}; after the sweep {after}")
    assert groups and before["spread_mm"] > 50
    assert before["vertices_mean_mm"] > GOALS_MM["int8"]  # every MatMul/Gemm in INT8 misses the goal ...
    assert after["vertices_mean_mm"] <= GOALS_MM["int8"], after  # ... the swept graph meets it


@pytest.mark.slow
def test_int8_sweep_meets_the_goal_on_real_video(full_export, video_windows, tmp_path: Path) -> None:
    """The sweep on the full model (about 5 minutes on 2 cores): goal met with some layers still INT8."""
    out, _ = full_export
    calibration, evaluation = video_windows
    _, report = int8_with_sweep(out / "coseg_temporal_fp32.onnx", tmp_path / "int8.onnx", calibration, evaluation,
                                out / "body_model_fp32.onnx", tmp_path / "calib.json")
    print(json.dumps({k: v for k, v in report.items() if k != "sensitivity"}, indent=1))
    assert report["before"]["vertices_mean_mm"] > report["after"]["vertices_mean_mm"]
    assert report["passed"], report.get("note")
    assert not qdq_problems(onnx.load(str(tmp_path / "int8.onnx")))


def test_a_deep_matmul_net_is_swept_in_stage_groups() -> None:
    """A graph with more MatMul layers than MATMUL_GROUP_LIMIT (a ViT-H has 192) is swept in CONV_GROUP_BUDGET
    groups of neighbouring layers; a small one keeps one group per layer; Convs always go by stages."""
    from onnx import TensorProto, helper, numpy_helper

    from hmr_trt.calibration.quantize import CONV_GROUP_BUDGET, MATMUL_GROUP_LIMIT, sweep_group_budget

    def chain(n: int):
        nodes, inits, x = [], [], "x"
        for i in range(n):
            inits.append(numpy_helper.from_array(np.eye(4, dtype=np.float32), f"blocks.{i}.w"))
            nodes.append(helper.make_node("MatMul", [x, f"blocks.{i}.w"], [f"h{i}"], name=f"/blocks.{i}/fc/MatMul"))
            x = f"h{i}"
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                                  [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 4])], inits)
        return helper.make_model(graph)

    deep, small = chain(MATMUL_GROUP_LIMIT + 1), chain(8)
    assert sweep_group_budget(deep, ("MatMul", "Gemm")) == CONV_GROUP_BUDGET
    groups = layer_groups(deep, ("MatMul", "Gemm"), budget=CONV_GROUP_BUDGET)
    assert len(groups) == CONV_GROUP_BUDGET and sum(map(len, groups.values())) == MATMUL_GROUP_LIMIT + 1
    assert sweep_group_budget(small, ("MatMul", "Gemm")) is None
    assert sweep_group_budget(deep, ("MatMul", "Gemm"), exclude=[f"/blocks.{i}/fc/MatMul" for i in range(10)]) is None
    assert sweep_group_budget(small, ("MatMul", "Conv")) == CONV_GROUP_BUDGET
