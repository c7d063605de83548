"""``python -m hmr_trt.engines.doctor``: the providers this onnxruntime reports and the route --backend auto takes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hmr_trt.engines.doctor import gpu_route, report
from hmr_trt.runtime.ort_providers import CPU_EP, CUDA_EP, Machine, choose_providers

ort = pytest.importorskip("onnxruntime")


def test_doctor_lists_every_provider_and_the_auto_route() -> None:
    proc = subprocess.run([sys.executable, "-m", "hmr_trt.engines.doctor"], capture_output=True, text=True)
    out = proc.stdout
    for provider in ort.get_available_providers():
        assert f"  {provider}: " in out, out
    assert f"ONNX Runtime {ort.__version__}" in out
    machine = Machine.probe()
    route = [ln for ln in out.splitlines() if ln.startswith("--backend auto: ")]
    assert len(route) == 1 and ", ".join(choose_providers(machine)) in route[0], out
    assert proc.returncode == (0 if gpu_route(machine) else 1), out + proc.stderr


def test_doctor_without_a_gpu_says_the_cpu_is_the_route() -> None:
    machine = Machine.probe()
    if machine.usable(CUDA_EP)[0]:
        pytest.skip("this machine has a usable CUDA EP")
    lines = report(machine)
    assert f"  {CPU_EP}: usable" in lines
    cuda = [ln for ln in lines if ln.startswith(f"  {CUDA_EP}: ")]
    assert cuda and "usable" not in cuda[0].split(": ", 1)[1][:6]  # not in this build, or why it cannot run
    assert lines[-1].startswith(f"--backend auto: ONNX Runtime on {CPU_EP}")


def test_doctor_without_onnxruntime_still_reports() -> None:
    lines = report(None, "onnxruntime is not installed in this Python")
    assert lines[1] == "ONNX Runtime: onnxruntime is not installed in this Python"
    assert lines[-1].startswith("--backend auto: ")
