"""``make test-gpu``'s set-up (tools/gpu_env.py), the pinned TensorRT extras and the driver checks, on any machine.

The one-line stop is run for real where this machine lacks a GPU; the extra picked per CUDA major
and the pins are checked against pyproject.toml and constraints-gpu.txt, and the facts about
onnxruntime-gpu 1.31.1 come from its wheel (tests/fixtures/onnxruntime_gpu_1.31.1.json).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from hmr_trt.runtime import trt_compat

ROOT = Path(__file__).resolve().parents[2]
FACTS = json.loads((ROOT / "tests/fixtures/onnxruntime_gpu_1.31.1.json").read_text())


def _gpu_env():
    spec = importlib.util.spec_from_file_location("gpu_env", ROOT / "tools/gpu_env.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _has_driver() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def test_gpu_env_without_a_driver_stops_in_one_line(tmp_path: Path) -> None:
    if _has_driver():
        pytest.skip("this machine has an NVIDIA driver: the one-line stop is for machines without one")
    proc = subprocess.run([sys.executable, str(ROOT / "tools/gpu_env.py"), "--no-install", "--log",
                           str(tmp_path / "log")], capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("make test-gpu needs an NVIDIA GPU and driver: no NVIDIA driver"), lines


@pytest.mark.parametrize("driver, python, extra", [("12.4", (3, 9), "trt-cu12"), ("12.8", (3, 11), "trt-cu12"),
                                                  ("13.0", (3, 10), "trt-cu13"), ("13.1", (3, 12), "trt-cu13")])
def test_the_extra_follows_the_drivers_cuda_major(driver: str, python: tuple, extra: str) -> None:
    assert _gpu_env().pick_extra(driver, python) == extra


def test_a_cuda_13_driver_with_python_39_and_an_old_driver_stop_with_the_fix() -> None:
    env = _gpu_env()
    with pytest.raises(env.Stop, match=r"Python 3\.10\+.*TRT_EXTRA=trt-cu12"):
        env.pick_extra("13.0", (3, 9))
    with pytest.raises(env.Stop, match=r"CUDA 11\.8.*CUDA 12 driver \(R525\+\)"):
        env.pick_extra("11.8", (3, 11))


def _extras() -> dict:
    text = (ROOT / "pyproject.toml").read_text()
    return {m.group(1): re.findall(r'"([^"]+)"', m.group(2))
            for m in re.finditer(r'^([a-z0-9-]+) = \[(.*)\]', text, re.M)}


def test_each_cuda_major_has_a_pinned_tensorrt_10_extra_with_a_matching_cuda_python() -> None:
    extras = _extras()
    for major in ("12", "13"):
        pins = dict(p.split("==") for p in extras[f"trt-cu{major}"])
        assert set(pins) == {f"tensorrt-cu{major}", "cuda-python", "cuda-bindings"}, pins
        assert pins[f"tensorrt-cu{major}"].startswith("10."), pins  # 10: libnvinfer.so.10, as the ORT TensorRT EP links
        assert pins["cuda-python"].split(".")[0] == pins["cuda-bindings"].split(".")[0] == major, pins
        assert trt_compat.EXTRA_FOR_CUDA[int(major)] == f"trt-cu{major}"
    assert "trt" not in extras  # the unbounded extra is gone


def test_constraints_gpu_pins_the_tensorrt_the_extras_and_the_ort_hint_name() -> None:
    from hmr_trt.runtime.ort_providers import TRT_FOR_ORT

    lines = (ROOT / "constraints-gpu.txt").read_text().splitlines()
    pins = dict(ln.split(";")[0].strip().split("==") for ln in lines if "==" in ln and "tensorrt" in ln)
    extras = _extras()
    for major in ("12", "13"):
        extra_pin = dict(p.split("==") for p in extras[f"trt-cu{major}"])[f"tensorrt-cu{major}"]
        for part in ("", "-bindings", "-libs"):
            assert pins[f"tensorrt-cu{major}{part}"] == extra_pin == TRT_FOR_ORT
    # onnxruntime-gpu 1.31.1's TensorRT EP links libnvinfer.so.<TensorRT major>
    needed = FACTS["needed"]["TensorrtExecutionProvider"]
    assert f"libnvinfer.so.{TRT_FOR_ORT.split('.')[0]}" in needed


def _cudart(count_error: int, driver: int, runtime: int, count: int = 1) -> SimpleNamespace:
    """cuda-python's runtime module as far as gpu_probe uses it (enum members carry .value and .name)."""
    names = {0: "cudaSuccess", 35: "cudaErrorInsufficientDriver", 100: "cudaErrorNoDevice"}
    err = SimpleNamespace(value=count_error, name=names[count_error])
    ok = SimpleNamespace(value=0, name="cudaSuccess")
    props = SimpleNamespace(name=b"NVIDIA H100\0", major=9, minor=0)
    return SimpleNamespace(cudaGetDeviceCount=lambda: (err, count), cudaDriverGetVersion=lambda: (ok, driver),
                           cudaRuntimeGetVersion=lambda: (ok, runtime),
                           cudaGetDeviceProperties=lambda _d: (ok, props))


def test_a_driver_too_old_for_the_bindings_is_named_not_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    # cuda-python 13 (CUDA 13.0 runtime) on a CUDA 12.4 driver: cudaGetDeviceCount says cudaErrorInsufficientDriver
    monkeypatch.setattr(trt_compat, "import_cudart", lambda: _cudart(35, 12040, 13000))
    gpu, why = trt_compat.gpu_probe()
    assert gpu is None
    assert "cudaErrorInsufficientDriver" in why and "CUDA 12.4" in why and "CUDA 13.0" in why, why
    assert "'.[trt-cu12]'" in why and "no NVIDIA GPU" not in why, why
    monkeypatch.setattr(trt_compat, "import_cudart", lambda: _cudart(100, 12040, 12040))
    assert "cudaErrorNoDevice" in trt_compat.gpu_probe()[1]
    monkeypatch.setattr(trt_compat, "import_cudart", lambda: _cudart(35, 0, 12090))
    assert trt_compat.gpu_probe()[1].startswith("no NVIDIA driver")
    monkeypatch.setattr(trt_compat, "import_cudart", lambda: _cudart(0, 12040, 12040))
    assert trt_compat.gpu_probe() == ({"name": "NVIDIA H100", "compute_capability": "sm_90", "driver": "12.4"}, "")


def test_ci_gpu_job_sets_up_its_pythons_and_benchmarks_the_engines_it_built() -> None:
    yaml = pytest.importorskip("yaml")
    job = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())["jobs"]["gpu"]
    steps = job["steps"]
    setups = [s for s in steps if str(s.get("uses", "")).startswith("actions/setup-python")]
    assert {s.get("id") for s in setups} == {"export-python", "trt-python"}
    runs = " ".join(s.get("run", "") for s in steps)
    for sid in ("export-python", "trt-python"):  # each Python the job uses is one it set up
        assert f"steps.{sid}.outputs.python-path" in runs
    assert "make test-gpu TRT_PY=.venv-trt/bin/python EXPORT_PY=.venv/bin/python" in runs
    order = [s.get("run", "") for s in steps]
    gpu_test = next(i for i, r in enumerate(order) if "make test-gpu" in r)
    bench = next(i for i, r in enumerate(order) if "make bench-gpu" in r)
    assert bench > gpu_test  # benchmarks the engines of the exports test-gpu made
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\nbench-gpu:"):makefile.index("# --- benchmarks ---")]
    for precision in ("fp32", "fp16", "int8"):
        assert f"$(GPU_OUT)/engines-{precision}" in recipe
    assert "--gpu" in recipe and "tools/engine_sets.py" in recipe


def test_python_promises() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^requires-python = ">=3\.9"$', text, re.M)  # the runtime core: tests/runtime/test_imports.py
    extras = _extras()
    assert any(p.startswith("cuda-python==12.") for p in extras["trt-cu12"])  # 12.x has cp39 wheels
    gpu_env = _gpu_env()
    with pytest.raises(gpu_env.Stop):  # cuda-python 13 has no 3.9 wheels: refused before pip tries
        gpu_env.pick_extra("13.0", (3, 9))


def test_a_system_python_that_lacks_the_test_environment_is_not_pip_installed_into(tmp_path: Path) -> None:
    """/usr/bin/python3 (not a venv) lacks pytest and friends: one line that says to make a venv, nothing installed."""
    system = Path("/usr/bin/python3")
    if not system.is_file():
        pytest.skip("no /usr/bin/python3")
    probe = subprocess.run([str(system), "-c", "import sys; print(sys.prefix != sys.base_prefix)\ntry:\n import pytest, typer, rich, cv2\n print('all')\nexcept ImportError:\n print('missing')"],
                           capture_output=True, text=True)
    if "missing" not in probe.stdout:
        pytest.skip("/usr/bin/python3 already has the GPU test environment")
    proc = subprocess.run([str(system), str(ROOT / "tools/gpu_env.py"), "--log", str(tmp_path / "log")],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "not a virtual environment" in proc.stderr, proc.stderr
    assert not (tmp_path / "log").exists()  # pip never ran
