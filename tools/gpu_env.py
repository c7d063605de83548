"""Set up the TensorRT Python of ``make test-gpu`` and stop in one line when this box cannot run it.

Run with the TensorRT Python itself (``TRT_PY``) and ``PYTHONPATH`` at the staged package
(tools/stage_package.py); stdlib only until step 1 has installed the rest. In order:

1. the GPU test environment (pytest, packaging, typer, rich, OpenCV < 5, edgefirst-tracker, numpy:
   the ``gpu-test`` extra, pinned by constraints-gpu.txt), installed with this Python's pip when
   something is missing (nothing is installed when all of it imports: the offline bundle's py39);
2. an NVIDIA driver and GPU (``libcuda.so.1``, read without cuda-python);
3. TensorRT and cuda-python: when ``import tensorrt`` fails, the extra for the driver's CUDA major
   (``trt-cu12`` for a CUDA 12 driver, ``trt-cu13`` for CUDA 13: Python 3.10+), or ``--extra``;
4. TensorRT + cuda-python see the GPU (a driver too old for the installed bindings is named:
   ``cudaErrorInsufficientDriver``);
5. the export Python (``--export-py``, ``EXPORT_PY``) has torch and onnx.

Exit 0 with one summary line, or exit 1 with one line naming what is missing and the fix (no
traceback; pip's own output goes to the log file). Usage:
  PYTHONPATH=build/stage TRT_PY tools/gpu_env.py [--export-py PY] [--extra auto|none|trt-cu12|trt-cu13]
      [--log build/gpu-env.log] [--no-install]
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints-gpu.txt"
# import name -> what provides it (the gpu-test extra plus the core dependencies)
TEST_MODULES = {"numpy": "numpy", "packaging": "packaging", "pytest": "pytest", "typer": "typer", "rich": "rich",
                "cv2": "opencv-python-headless", "edgefirst.tracker": "edgefirst-tracker"}
EXTRAS = ("auto", "none", "trt-cu12", "trt-cu13")
NVIDIA_INDEX = "https://pypi.nvidia.com"


class Stop(Exception):
    """One line for the user; exit 1."""


def missing_modules(names: Sequence[str]) -> List[str]:
    importlib.invalidate_caches()
    out = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            out.append(name)
    return out


def pip_install(what: str, extras: str, log: Path) -> None:
    """``pip install -c constraints-gpu.txt 'ROOT[extras]'`` into this Python; pip's output goes to ``log``."""
    own_env = sys.prefix != sys.base_prefix or os.environ.get("CONDA_PREFIX") == sys.prefix
    if not own_env:  # never pip into a system Python (a distribution's, a container's)
        raise Stop(f"make test-gpu: TRT_PY ({sys.executable}) lacks {what} and is not a virtual environment: "
                   "python3 -m venv .venv-trt && make test-gpu TRT_PY=.venv-trt/bin/python")
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        raise Stop(f"make test-gpu: {sys.executable} has no pip to install {what}: use a venv "
                   f"(python3 -m venv DIR; make test-gpu TRT_PY=DIR/bin/python) or install them yourself")
    print(f"installing {what} into {sys.executable} (pinned by {CONSTRAINTS.name}; log: {log})", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        # NVIDIA's TensorRT packages on PyPI are stubs that fetch the wheels from NVIDIA's index: name it to pip
        index = ["--extra-index-url", NVIDIA_INDEX] if extras.startswith("trt-") else []
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *index,
                               "-c", str(CONSTRAINTS), f"{ROOT}[{extras}]"], stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        errors = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.startswith("ERROR")]
        last = errors[-1] if errors else f"see {log}"
        offline = any(w in last for w in ("No matching distribution", "Could not find a version", "connection"))
        raise Stop(f"make test-gpu: pip could not install {what} into {sys.executable}: {last}"
                   + (" (no network? bring the wheels, as the offline bundle does)" if offline else ""))


def cuda_major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0


def pick_extra(driver_version: str, python: Sequence[int]) -> str:
    """The trt extra for a driver that runs CUDA ``driver_version`` ("12.4"), on this Python."""
    major = cuda_major(driver_version)
    if major >= 13:
        if tuple(python[:2]) < (3, 10):
            raise Stop(f"make test-gpu: the driver runs CUDA {driver_version}, whose TensorRT extra (trt-cu13: "
                       f"cuda-python 13) needs Python 3.10+, and TRT_PY is Python {python[0]}.{python[1]}: "
                       "use TRT_PY=python3.10 or newer, or TRT_EXTRA=trt-cu12 (CUDA 12 builds run on newer drivers)")
        return "trt-cu13"
    if major == 12:
        return "trt-cu12"
    raise Stop(f"make test-gpu: the NVIDIA driver runs CUDA {driver_version or 'unknown'}; TensorRT 10 needs a "
               "CUDA 12 driver (R525+) or newer: upgrade the driver")


def setup(export_py: Optional[str], extra: str, log: Path, install: bool = True) -> str:
    """Steps 1-5 of the module docstring; returns the summary line or raises Stop."""
    if sys.version_info < (3, 9):  # noqa: UP036 (TRT_PY is any python3 on the box)
        raise Stop(f"make test-gpu: TRT_PY is Python {sys.version.split()[0]}; hmr-trt's runtime needs 3.9+")
    missing = missing_modules(list(TEST_MODULES))
    if missing and install:
        pip_install("the GPU test environment (" + ", ".join(TEST_MODULES[m] for m in missing) + ")", "gpu-test", log)
        missing = missing_modules(list(TEST_MODULES))
    if missing:
        raise Stop(f"make test-gpu: {sys.executable} lacks " + ", ".join(TEST_MODULES[m] for m in missing) +
                   ": pip install -c constraints-gpu.txt '.[gpu-test]'")

    from hmr_trt.runtime.ort_providers import cuda_driver

    driver = cuda_driver()
    if not driver.usable:
        raise Stop(f"make test-gpu needs an NVIDIA GPU and driver: {driver.why}")

    from hmr_trt.errors import EngineError
    from hmr_trt.runtime import trt_compat

    if missing_modules(["tensorrt"]) or not _has_cudart():
        if extra == "none" or not install:
            raise Stop(f"make test-gpu: TensorRT or cuda-python is missing in {sys.executable}: "
                       f"{trt_compat.INSTALL_HINT}")
        chosen = pick_extra(driver.version, sys.version_info) if extra == "auto" else extra
        pip_install(f"TensorRT and cuda-python for the CUDA {driver.version} driver ({chosen})", chosen, log)
    try:
        target = trt_compat.current_target()
    except EngineError as exc:
        raise Stop(f"make test-gpu: {exc}") from None
    if export_py:
        proc = subprocess.run([export_py, "-c", "import torch, onnx"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise Stop(f"make test-gpu: the export Python (EXPORT_PY={export_py}) cannot import torch and onnx: "
                       "run `make install` (CPU torch: the export runs on the CPU) or set EXPORT_PY to a Python "
                       "with the export extra")
    return (f"GPU environment: TensorRT {target.tensorrt_version} on {target.gpu_name} ({target.compute_capability}), "
            f"{driver.why}; TRT_PY {sys.executable} (Python {sys.version.split()[0]})")


def _has_cudart() -> bool:
    return not missing_modules(["cuda.bindings.runtime"]) or not missing_modules(["cuda.cudart"])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export-py", default="")
    parser.add_argument("--extra", default="auto", choices=EXTRAS)
    parser.add_argument("--log", type=Path, default=ROOT / "build" / "gpu-env.log")
    parser.add_argument("--no-install", action="store_true", help="check only; install nothing")
    args = parser.parse_args(argv)
    try:
        print(setup(args.export_py or None, args.extra, args.log, install=not args.no_install), flush=True)
    except Stop as exc:
        print(str(exc), file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("make test-gpu: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
