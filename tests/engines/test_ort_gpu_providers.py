"""ONNX Runtime's GPU providers judged the way ONNX Runtime itself judges them, and FP32 kept FP32 on them.

Real pieces only: the installed onnxruntime (its API, its own libraries' DT_NEEDED lists, a real
session), the dynamic loader, and the facts read from the onnxruntime-gpu 1.31.1 wheel
(tests/fixtures/onnxruntime_gpu_1.31.1.json: its provider libraries' NEEDED lists by ``readelf -d``,
its provider option names by ``strings``). What needs a GPU runs in tests/gpu/test_ort_gpu.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from hmr_trt.runtime import ort_providers as op
from hmr_trt.runtime.ort_providers import (
    CPU_EP,
    CUDA_EP,
    TENSORRT_EP,
    CudaDriver,
    Machine,
    OrtGraph,
)

ort = pytest.importorskip("onnxruntime")
FACTS = json.loads((Path(__file__).resolve().parents[1] / "fixtures/onnxruntime_gpu_1.31.1.json").read_text())
H100_CUDA12 = CudaDriver(True, "CUDA 12.4 driver, NVIDIA H100 (sm_90)", "12.4", "NVIDIA H100", "sm_90")
H100_CUDA13 = CudaDriver(True, "CUDA 13.0 driver, NVIDIA H100 (sm_90)", "13.0", "NVIDIA H100", "sm_90")


def test_needed_libraries_reads_what_readelf_reads() -> None:
    lib = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_shared.so"
    if shutil.which("readelf") is None:
        pytest.skip("no readelf to compare with")
    out = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    import re

    assert op.needed_libraries(lib) == re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)
    assert op.needed_libraries(lib)  # libstdc++ and libc at least


def test_the_loader_names_the_first_missing_library_of_the_tensorrt_ep() -> None:
    needed = FACTS["needed"][TENSORRT_EP]
    missing = op.missing_library(needed)
    try:
        import ctypes

        ctypes.CDLL("libnvinfer.so.10")
        pytest.skip("this machine has libnvinfer.so.10")
    except OSError:
        pass
    assert missing is not None and missing in needed and missing not in ("libc.so.6", "libm.so.6"), missing
    assert op.missing_library(["libc.so.6", "libm.so.6"]) is None


@pytest.mark.parametrize("library, words", [
    ("libnvinfer.so.10", ["tensorrt-cu13-libs==10.16.1.11", "LD_LIBRARY_PATH"]),
    ("libnvonnxparser.so.10", ["tensorrt-cu13-libs==10.16.1.11"]),
    ("libcudnn.so.9", ["onnxruntime-gpu[cudnn]", "cu13"]),
    ("libcublas.so.13", ["CUDA 13", "nvidia-cublas"]),
    ("libcudart.so.13", ["onnxruntime-gpu[cuda]"]),
])
def test_install_hints_name_what_provides_each_library_the_1_31_1_providers_need(library: str, words: list) -> None:
    assert library in FACTS["needed"][TENSORRT_EP] + FACTS["needed"][CUDA_EP]
    hint = op.library_hint(library, FACTS["cuda_version"])
    for word in words:
        assert word in hint, hint
    assert "cu12" not in hint  # 1.31.1 is a CUDA 13 build: CUDA 12 libraries would not do


def test_a_real_session_keeps_the_cpu_and_drops_a_provider_this_build_cannot_run() -> None:
    assert op.provider_kept(ort, CPU_EP) is True
    if CUDA_EP in ort.get_available_providers():
        pytest.skip("an onnxruntime-gpu build: whether it keeps the CUDA EP depends on the machine")
    assert op.provider_kept(ort, CUDA_EP) is False
    assert "no provider library" in op.provider_check(ort, CUDA_EP)


def test_machine_checks_decide_and_a_driver_older_than_the_build_is_named() -> None:
    gpu_eps = (TENSORRT_EP, CUDA_EP, CPU_EP)
    old = Machine(gpu_eps, H100_CUDA12, "10.16.1", FACTS["cuda_version"])
    ok, why = old.usable(CUDA_EP)
    assert not ok and "CUDA 13.0" in why and "CUDA 12.4" in why and "R580" in why, why
    checked = Machine(gpu_eps, H100_CUDA13, "10.16.1", "13.0",
                      ((CUDA_EP, ""), (TENSORRT_EP, "TensorrtExecutionProvider needs libcudnn.so.9 ...")))
    assert checked.usable(CUDA_EP) == (True, "")
    assert checked.usable(TENSORRT_EP)[0] is False
    assert op.choose_providers(checked) == [CUDA_EP, CPU_EP]
    # a hand-built Machine without checks still needs libnvinfer for the TensorRT EP
    assert not Machine(gpu_eps, H100_CUDA13, None, "13.0").usable(TENSORRT_EP)[0]


def test_probe_on_this_machine_reports_the_build_cuda_version() -> None:
    machine = Machine.probe()
    assert machine.ort_cuda == op.ort_cuda_version(ort)
    if CUDA_EP not in ort.get_available_providers():
        assert machine.ort_cuda == "" and machine.checks == ()


def _graph(tmp_path: Path, precision: str = "fp32") -> OrtGraph:
    return OrtGraph(tmp_path / "m.onnx", precision, "0" * 64, {"x": ("batch", 4)}, {"y": ("batch", 4)}, (1, 2, 4))


def test_every_option_hmr_trt_passes_is_a_real_1_31_1_provider_option(tmp_path: Path) -> None:
    machine = Machine((TENSORRT_EP, CUDA_EP, CPU_EP), H100_CUDA13, "10.16.1", "13.0")
    for precision in ("fp32", "fp16", "int8"):
        trt = op.tensorrt_ep_options(_graph(tmp_path, precision), machine, "1.31.1", tmp_path / "c")
        assert set(trt) <= set(FACTS["provider_options"][TENSORRT_EP]), set(trt) - set(FACTS["provider_options"][TENSORRT_EP])
        cuda = op.cuda_ep_options(_graph(tmp_path, precision))
        assert set(cuda) <= set(FACTS["provider_options"][CUDA_EP]), set(cuda) - set(FACTS["provider_options"][CUDA_EP])


def test_fp32_stays_fp32_on_the_cuda_ep_and_the_tensorrt_ep_says_it_has_no_switch(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    machine = Machine((TENSORRT_EP, CUDA_EP, CPU_EP), H100_CUDA13, "10.16.1", "13.0")
    fp32 = _graph(tmp_path)
    assert op.cuda_ep_options(fp32)["use_tf32"] == "0"  # the CUDA EP's default is 1
    trt = op.tensorrt_ep_options(fp32, machine, "1.31.1", tmp_path / "c")
    assert trt["trt_fp16_enable"] == "False" and trt["trt_int8_enable"] == "False"
    assert not FACTS["tf32_in_tensorrt_ep"]  # the 1.31.1 TensorRT EP library has no TF32 option at all
    monkeypatch.delenv(op.TF32_ENV, raising=False)
    assert "no option" in op.tf32_state(TENSORRT_EP) and "is not set" in op.tf32_state(TENSORRT_EP)
    monkeypatch.setenv(op.TF32_ENV, "0")
    assert f"{op.TF32_ENV}=0 is set" in op.tf32_state(TENSORRT_EP)
    assert op.tf32_state(CUDA_EP) == "TF32 off (CUDA EP use_tf32=0)"
