"""ONNX Runtime's execution providers: the choice against the real library, real sessions on a tiny graph.

The provider list is what this onnxruntime reports and the sessions are real: on this CPU machine
(onnxruntime, no GPU) ``--backend onnxruntime`` must run on CPUExecutionProvider, and a GPU
provider asked for must fail with one line naming what is missing. The GPU side of the same code
runs in tests/gpu/test_ort_gpu.py. Tests that build a ``Machine`` by hand exercise the ordering
rules for machines this one is not (a GPU with or without TensorRT).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from hmr_trt.contract import GraphSpec, ModelContract  # noqa: E402
from hmr_trt.contract import TensorSpec as ContractTensor  # noqa: E402
from hmr_trt.errors import ConfigError  # noqa: E402
from hmr_trt.manifest import Artifact, Manifest, TensorSpec, sha256_of  # noqa: E402
from hmr_trt.runtime.backends import OnnxRuntimeBackend  # noqa: E402
from hmr_trt.runtime.backends_select import open_backends  # noqa: E402
from hmr_trt.runtime.ort_providers import (  # noqa: E402
    CPU_EP,
    CUDA_EP,
    TENSORRT_EP,
    CudaDriver,
    Machine,
    OrtGraph,
    ProviderError,
    choose_providers,
    cuda_driver,
    parse_providers,
    session_providers,
    tensorrt_ep_options,
)

# The TensorRT EP's option names as ONNX Runtime's TensorRT EP documents them (1.17+).
TRT_EP_OPTION_NAMES = {
    "device_id", "trt_engine_cache_enable", "trt_engine_cache_path", "trt_timing_cache_enable",
    "trt_timing_cache_path", "trt_fp16_enable", "trt_int8_enable", "trt_profile_min_shapes",
    "trt_profile_opt_shapes", "trt_profile_max_shapes",
}
GPU_HERE = Machine.probe().usable(CUDA_EP)[0]
H100 = CudaDriver(True, "CUDA 12.4 driver, NVIDIA H100 (sm_90)", "12.4", "NVIDIA H100", "sm_90")


def relu_onnx(path: Path, name: str = "x", out: str = "y", shape: tuple = ("batch", 4)) -> Path:
    """A one-node graph (Relu) with the given input shape (strings are dynamic axes)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info(out, TensorProto.FLOAT, list(shape))
    graph = helper.make_graph([helper.make_node("Relu", [name], [out])], "relu", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def graph_of(path: Path, precision: str = "fp32", batch: tuple = (1, 8, 64), shape: tuple = ("batch", 4)) -> OrtGraph:
    return OrtGraph(path, precision, sha256_of(path), {"x": shape}, {"y": shape}, batch)


# ------------------------------------------------------------------ the real library, this machine


def test_machine_reports_what_onnxruntime_reports() -> None:
    machine = Machine.probe()
    assert list(machine.available) == ort.get_available_providers()
    assert CPU_EP in machine.available


@pytest.mark.skipif(GPU_HERE, reason="this machine has a usable CUDA EP: tests/gpu/test_ort_gpu.py covers it")
def test_auto_runs_on_the_cpu_here_and_the_session_says_so(tmp_path: Path) -> None:
    machine = Machine.probe()
    providers = choose_providers(machine, "auto")
    assert providers == [CPU_EP]
    x = np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)
    with OnnxRuntimeBackend(relu_onnx(tmp_path / "m.onnx"), providers, graph=graph_of(tmp_path / "m.onnx"),
                            machine=machine) as backend:
        assert backend.ran_on == backend.session.get_providers() == [CPU_EP]
        np.testing.assert_array_equal(backend.infer({"x": x})["y"], np.maximum(x, 0))


@pytest.mark.skipif(GPU_HERE, reason="CUDA EP usable here")
@pytest.mark.parametrize("asked", ["cuda", "CUDAExecutionProvider,CPUExecutionProvider", "tensorrt"])
def test_gpu_provider_asked_for_without_one_is_one_line_error(asked: str) -> None:
    with pytest.raises(ProviderError) as err:
        choose_providers(Machine.probe(), "auto", parse_providers(asked))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("--ort-providers: ")
    assert ("onnxruntime-gpu" in msg) if CUDA_EP not in ort.get_available_providers() else ("driver" in msg)


@pytest.mark.skipif(GPU_HERE, reason="CUDA EP usable here")
def test_device_cuda_without_a_gpu_names_what_is_missing() -> None:
    with pytest.raises(ProviderError, match=r"^--device cuda: CUDAExecutionProvider "):
        choose_providers(Machine.probe(), "cuda")


def test_onnxruntime_drops_an_unavailable_provider_silently_and_strict_catches_it(tmp_path: Path) -> None:
    """What ONNX Runtime itself does with a provider it lacks: a session on the CPU, no exception."""
    if GPU_HERE:
        pytest.skip("CUDA EP usable here: nothing is dropped")
    path = relu_onnx(tmp_path / "m.onnx")
    with OnnxRuntimeBackend(path, [CUDA_EP, CPU_EP]) as backend:  # not strict: reports the real providers
        assert backend.ran_on == [CPU_EP]
    for flags in ({"strict": True}, {"need_gpu": True}):
        with pytest.raises(ProviderError, match=r"did not start CUDAExecutionProvider for m\.onnx"):
            OnnxRuntimeBackend(path, [CUDA_EP, CPU_EP], **flags).activate()


def test_cuda_driver_probe_matches_this_machine() -> None:
    driver = cuda_driver()
    if driver.usable:
        assert driver.compute_capability.startswith("sm_") and driver.gpu_name
    else:
        assert driver.why and not driver.gpu_name


def test_session_accepts_the_provider_list_we_build(tmp_path: Path) -> None:
    path = relu_onnx(tmp_path / "m.onnx")
    providers = session_providers([CPU_EP], graph_of(path))
    assert providers == [CPU_EP]
    sess = ort.InferenceSession(str(path), providers=providers)
    assert sess.get_providers() == [CPU_EP]


# ------------------------------------------------------------------ ordering rules for other machines


def test_order_is_tensorrt_cuda_cpu_on_a_gpu_machine_with_tensorrt() -> None:
    m = Machine((TENSORRT_EP, CUDA_EP, CPU_EP), H100, "10.3.0")
    assert choose_providers(m, "auto") == [TENSORRT_EP, CUDA_EP, CPU_EP]
    assert choose_providers(m, "cuda") == [TENSORRT_EP, CUDA_EP, CPU_EP]
    assert choose_providers(m, "cpu") == [CPU_EP]
    assert choose_providers(m, "auto", [CUDA_EP, CPU_EP]) == [CUDA_EP, CPU_EP]


def test_tensorrt_ep_needs_libnvinfer_and_gpu_eps_need_a_driver() -> None:
    no_trt = Machine((TENSORRT_EP, CUDA_EP, CPU_EP), H100, None)
    assert choose_providers(no_trt, "auto") == [CUDA_EP, CPU_EP]
    with pytest.raises(ProviderError, match="libnvinfer"):
        choose_providers(no_trt, "auto", [TENSORRT_EP])
    no_driver = Machine((TENSORRT_EP, CUDA_EP, CPU_EP), CudaDriver(False, "no NVIDIA driver (libcuda.so.1 not found)"),
                        "10.3.0")
    assert choose_providers(no_driver, "auto") == [CPU_EP]
    with pytest.raises(ProviderError, match=r"needs a usable NVIDIA driver: no NVIDIA driver"):
        choose_providers(no_driver, "cuda")


def test_bad_provider_options() -> None:
    assert parse_providers("TensorRT, cuda,CPU,cpu") == [TENSORRT_EP, CUDA_EP, CPU_EP]
    with pytest.raises(ConfigError, match="is not an execution provider"):
        parse_providers("gpu")
    with pytest.raises(ConfigError, match="--device must be one of"):
        choose_providers(Machine.probe(), "gpu")
    with pytest.raises(ConfigError, match="contradicts"):
        choose_providers(Machine((CUDA_EP, CPU_EP), H100, None), "cpu", [CUDA_EP])


# ------------------------------------------------------------------ provider options


def test_tensorrt_ep_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HMR_TRT_CACHE", str(tmp_path / "cache"))
    path = relu_onnx(tmp_path / "m.onnx", shape=("batch", 16, 4))
    machine = Machine((TENSORRT_EP, CUDA_EP, CPU_EP), H100, "10.3.0")
    graph = graph_of(path, "fp16", (1, 8, 64), ("batch", 16, 4))
    opts = tensorrt_ep_options(graph, machine, "1.31.1")
    assert set(opts) <= TRT_EP_OPTION_NAMES
    assert opts["trt_profile_min_shapes"] == "x:1x16x4" and opts["trt_profile_max_shapes"] == "x:64x16x4"
    assert opts["trt_profile_opt_shapes"] == "x:8x16x4"
    assert (opts["trt_fp16_enable"], opts["trt_int8_enable"]) == ("True", "False")  # the EP wants True/False
    assert Path(opts["trt_engine_cache_path"]).parent == tmp_path / "cache" / "ort-trt"
    assert "trt-10.3.0-sm_90" in opts["trt_timing_cache_path"]
    fp32 = tensorrt_ep_options(graph_of(path, "fp32", (1, 8, 64), ("batch", 16, 4)), machine, "1.31.1")
    int8 = tensorrt_ep_options(graph_of(path, "int8", (1, 8, 64), ("batch", 16, 4)), machine, "1.31.1")
    assert (fp32["trt_fp16_enable"], int8["trt_int8_enable"]) == ("False", "True")
    other_gpu = Machine(machine.available, CudaDriver(True, "", "12.4", "NVIDIA L4", "sm_89"), "10.3.0")
    keys = {o["trt_engine_cache_path"] for o in (opts, fp32, int8, tensorrt_ep_options(graph, other_gpu, "1.31.1"),
                                               tensorrt_ep_options(graph, machine, "1.32.0"))}
    assert len(keys) == 5  # precision, GPU and ONNX Runtime version each get their own engines
    dynamic = graph_of(path, "fp32", (1, 8, 64), ("batch", "time", 4))
    assert "trt_profile_min_shapes" not in tensorrt_ep_options(dynamic, machine, "1.31.1")


def test_cuda_graphs_only_for_static_shapes_on_the_cuda_ep_alone(tmp_path: Path) -> None:
    path = relu_onnx(tmp_path / "m.onnx")
    machine = Machine((TENSORRT_EP, CUDA_EP, CPU_EP), H100, "10.3.0")
    static, dynamic = graph_of(path, shape=(2, 4)), graph_of(path)
    assert session_providers([CUDA_EP, CPU_EP], static, machine)[0] == (
        CUDA_EP, {"device_id": "0", "use_tf32": "0", "enable_cuda_graph": "1"})
    assert session_providers([CUDA_EP, CPU_EP], dynamic, machine)[0][1]["enable_cuda_graph"] == "0"
    trt, cuda, cpu = session_providers([TENSORRT_EP, CUDA_EP, CPU_EP], static, machine, "1.31.1", tmp_path / "c")
    assert trt[0] == TENSORRT_EP and cuda[1]["enable_cuda_graph"] == "0" and cpu == CPU_EP
    assert Path(trt[1]["trt_engine_cache_path"]).is_dir() and Path(trt[1]["trt_timing_cache_path"]).is_dir()


# ------------------------------------------------------------------ backend selection and trt-run


@pytest.fixture()
def tiny_export(tmp_path: Path) -> Path:
    """An export directory whose three graphs are one Relu each (enough to open the backends)."""
    out = tmp_path / "export"
    out.mkdir()
    shapes = {"temporal": ("features", ("batch", 16, 4)), "body_model": ("betas", ("batch", 10)),
              "backbone": ("images", ("batch", 4))}
    arts = []
    for graph, (name, shape) in shapes.items():
        path = relu_onnx(out / f"{graph}.onnx", name, f"{name}_out", shape)
        arts.append(Artifact(graph, path.name, "onnx", "fp32", sha256_of(path),
                             [TensorSpec(name, list(shape))], [TensorSpec(f"{name}_out", list(shape))]))
    roles = {"temporal": "model", "body_model": "body_model", "backbone": "feature_extractor"}
    contract = ModelContract("tiny", "window", "Relu graphs", tuple(
        GraphSpec(g, roles[g], (ContractTensor(n, s),), (ContractTensor(f"{n}_out", s),)) for g, (n, s) in shapes.items()),
        window=16, feature_dim=4)
    Manifest(model="tiny", config={"window": 16}, profile={"min": 1, "opt": 2, "max": 4}, artifacts=arts,
             contract=contract.to_dict()).write(out)
    return out


@pytest.mark.skipif(GPU_HERE, reason="CUDA EP usable here")
def test_open_backends_reports_the_providers_each_graph_ran_on(tiny_export: Path) -> None:
    for backend in ("onnxruntime", "auto"):
        with open_backends(tiny_export, backend) as b:
            assert b.providers == {g: [CPU_EP] for g in ("temporal", "body_model", "backbone")}
            assert b.description.startswith("onnxruntime CPU (") and "temporal: CPU" in b.description
            assert b.temporal.max_batch == 4 and b.body.max_batch is None
    with pytest.raises(ProviderError, match="^--device cuda: "):
        with open_backends(tiny_export, "onnxruntime", device="cuda"):
            pass
    with pytest.raises(ConfigError, match="--backend tensorrt does not use ONNX Runtime's providers"):
        with open_backends(tiny_export, "tensorrt", device="cpu"):
            pass


@pytest.mark.skipif(GPU_HERE, reason="CUDA EP usable here")
@pytest.mark.parametrize("args, expect", [(["--device", "cuda"], "--device cuda: CUDAExecutionProvider"),
                                          (["--ort-providers", "CUDAExecutionProvider"], "--ort-providers: "),
                                          (["--ort-providers", "gpu"], "is not an execution provider")])
def test_trt_run_bad_provider_is_one_line_exit_1_nothing_written(tiny_export: Path, tmp_path: Path, args: list,
                                                                 expect: str) -> None:
    feats = tmp_path / "f.npz"
    np.savez(feats, features=np.zeros((20, 4), np.float32))
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "hmr_trt.runtime", "--features", str(feats), "--export",
                           str(tiny_export), "--out", str(out), "--backend", "onnxruntime", *args],
                          capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and expect in lines[0], proc.stderr
    assert not out.exists()



@pytest.mark.skipif(GPU_HERE, reason="CUDA EP usable here")
def test_trt_run_backend_onnxruntime_on_a_real_export_reports_the_cpu_provider(full_export, tmp_path: Path) -> None:
    export_dir, _ = full_export
    temporal = Manifest.read(export_dir).find("temporal", "onnx", "fp32")
    feats = tmp_path / "f.npz"
    np.savez(feats, features=np.random.default_rng(0).standard_normal((20, temporal.inputs[0].shape[-1]))
             .astype(np.float32))
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "hmr_trt.runtime", "--features", str(feats), "--export",
                           str(export_dir), "--out", str(out), "--backend", "onnxruntime", "--quiet"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["providers"] == {"temporal": [CPU_EP], "body_model": [CPU_EP]}
    assert summary["backend"].startswith("onnxruntime CPU (--backend onnxruntime)")
    assert "graphs ran on temporal: CPU, body_model: CPU" in " ".join(proc.stderr.split())
