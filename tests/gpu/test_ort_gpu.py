"""ONNX Runtime's CUDA and TensorRT execution providers on a GPU: parity with the CPU, CUDA graphs, engine cache.

Needs onnxruntime-gpu (the ``gpu`` extra) and an NVIDIA GPU with a usable driver; each test skips
with the reason otherwise (the TensorRT EP tests also need libnvinfer). Tiny graphs are built with
onnx.helper when onnx is importable; with ``HMR_TRT_EXPORT_DIR`` (what ``make test-gpu`` exports),
the exported temporal and body-model graphs run on the GPU providers and are compared with the
CPU provider in mm of mean vertex drift (the FP32 goal, hmr_trt.metrics.GOALS_MM).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from hmr_trt.manifest import sha256_of
from hmr_trt.runtime.backends import OnnxRuntimeBackend
from hmr_trt.runtime.ort_providers import CPU_EP, CUDA_EP, TENSORRT_EP, Machine, OrtGraph

pytestmark = [pytest.mark.gpu]

ort = pytest.importorskip("onnxruntime")
MACHINE = Machine.probe()


def _need(provider: str) -> None:
    ok, why = MACHINE.usable(provider)
    if not ok:
        pytest.skip(why)


def matmul_onnx(path: Path, batch: object = "batch") -> Path:
    """y = relu(x @ W) + 1 with a fixed seeded W (64 -> 32): enough arithmetic for kernels to differ from the CPU."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Add", ["r", "one"], ["y"])]
    graph = helper.make_graph(nodes, "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 32])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.ones(1, np.float32), "one")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _graph(path: Path, batch: object, profile: tuple = (1, 8, 64)) -> OrtGraph:
    return OrtGraph(path, "fp32", sha256_of(path), {"x": (batch, 64)}, {"y": (batch, 32)}, profile)


def _cpu(path: Path, x: np.ndarray) -> np.ndarray:
    with OnnxRuntimeBackend(path, [CPU_EP]) as cpu:
        return cpu.infer({"x": x})["y"]


def test_cuda_ep_runs_and_matches_the_cpu(tmp_path: Path) -> None:
    _need(CUDA_EP)
    path = matmul_onnx(tmp_path / "mm.onnx")
    x = np.random.default_rng(1).standard_normal((7, 64)).astype(np.float32)
    with OnnxRuntimeBackend(path, [CUDA_EP, CPU_EP], graph=_graph(path, "batch"), machine=MACHINE,
                            strict=True) as gpu:
        assert gpu.ran_on[0] == CUDA_EP and gpu._binding is None  # dynamic batch: no CUDA graph
        np.testing.assert_allclose(gpu.infer({"x": x})["y"], _cpu(path, x), atol=1e-3, rtol=1e-3)


def test_cuda_graph_replays_with_new_inputs(tmp_path: Path) -> None:
    _need(CUDA_EP)
    path = matmul_onnx(tmp_path / "mm_static.onnx", batch=4)
    with OnnxRuntimeBackend(path, [CUDA_EP, CPU_EP], graph=_graph(path, 4), machine=MACHINE, strict=True) as gpu:
        assert gpu._binding is not None, "static shapes on the CUDA EP alone should use a CUDA graph"
        for seed in (2, 3, 4):  # the first run captures, the next ones replay on the updated buffers
            x = np.random.default_rng(seed).standard_normal((4, 64)).astype(np.float32)
            np.testing.assert_allclose(gpu.infer({"x": x})["y"], _cpu(path, x), atol=1e-3, rtol=1e-3)


def test_tensorrt_ep_runs_matches_and_caches_its_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _need(TENSORRT_EP)
    monkeypatch.setenv("HMR_TRT_CACHE", str(tmp_path / "cache"))
    path = matmul_onnx(tmp_path / "mm.onnx")
    x = np.random.default_rng(5).standard_normal((7, 64)).astype(np.float32)
    providers = [TENSORRT_EP, CUDA_EP, CPU_EP]
    with OnnxRuntimeBackend(path, providers, graph=_graph(path, "batch"), machine=MACHINE, strict=True) as trt:
        assert trt.ran_on[0] == TENSORRT_EP
        np.testing.assert_allclose(trt.infer({"x": x})["y"], _cpu(path, x), atol=1e-3, rtol=1e-3)
    cached = sorted(p for p in (tmp_path / "cache" / "ort-trt").rglob("*") if p.is_file())
    assert any(p.suffix == ".engine" for p in cached), cached
    stamps = {p: p.stat().st_mtime_ns for p in cached if p.suffix == ".engine"}
    with OnnxRuntimeBackend(path, providers, graph=_graph(path, "batch"), machine=MACHINE, strict=True) as again:
        again.infer({"x": x})
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # reused, not rebuilt


@pytest.mark.parametrize("device", ["cuda"])
def test_export_on_gpu_providers_matches_the_cpu_in_mm(device: str) -> None:
    """The exported FP32 temporal + body-model graphs on the GPU providers vs the CPU provider."""
    _need(CUDA_EP)
    base = os.environ.get("HMR_TRT_EXPORT_DIR")
    if not base:
        pytest.skip("HMR_TRT_EXPORT_DIR unset (make test-gpu exports first)")
    from hmr_trt.metrics import GOALS_MM
    from hmr_trt.runtime.backends_select import open_backends

    export = Path(base) / "fp32" if (Path(base) / "fp32" / "manifest.json").is_file() else Path(base)
    meshes = {}
    for dev in ("cpu", device):
        with open_backends(export, "onnxruntime", "fp32", need_backbone=False, device=dev) as b:
            width, window = b.feature_dim, int(b.temporal.inputs[0].shape[1])
            feats = np.random.default_rng(6).standard_normal((3, window, width)).astype(np.float32)
            out = b.temporal.infer({b.temporal.inputs[0].name: feats})
            rot = out["pose_rotmat"].reshape(-1, *out["pose_rotmat"].shape[2:])
            verts, _ = b.infer_body(rot, out["betas"].reshape(-1, out["betas"].shape[-1]))
            meshes[dev] = (verts, b.providers, dict(getattr(b.temporal, "tf32", {})))
    drift_mm = 1000 * float(np.linalg.norm(meshes["cpu"][0] - meshes[device][0], axis=-1).mean())
    ran = meshes[device][1]["temporal"][0]
    assert ran in (TENSORRT_EP, CUDA_EP)
    tf32 = meshes[device][2]
    assert ran in tf32  # the verdict says how FP32 stayed FP32 there (or that the provider has no switch)
    assert drift_mm <= GOALS_MM["fp32"], (f"GPU providers {meshes[device][1]} drift {drift_mm:.4f} mm from the CPU "
                                          f"(FP32: {tf32[ran]})")
