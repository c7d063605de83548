"""runtime/ and engines/ never import torch; runtime/ and engines/ run on Python 3.9 with numpy + OpenCV."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TORCH_FREE = ["hmr_trt.runtime", "hmr_trt.engines", "hmr_trt.calibration"]


def _modules(pkg_dir: str, pkg: str) -> list[str]:
    return [f"{pkg}.{p.stem}" for p in sorted((ROOT / pkg_dir).glob("*.py")) if p.stem not in ("__init__", "__main__")]


ALL = _modules("runtime", "hmr_trt.runtime") + _modules("engines", "hmr_trt.engines") + \
    _modules("calibration", "hmr_trt.calibration")


def test_runtime_engines_calibration_do_not_import_torch() -> None:
    code = "import sys\n" + "".join(f"import {m}\n" for m in ALL) + \
        "bad = [m for m in ('torch', 'hmr_trt.export') if m in sys.modules]\nprint(bad)\nsys.exit(1 if bad else 0)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.py39
def test_runtime_and_engines_on_python39() -> None:
    """A Python 3.9 venv with numpy and OpenCV only (made by `make`): import every module, run the ORT-free parts."""
    py39 = os.environ.get("HMR_TRT_PY39")
    if not py39 or not Path(py39).is_file():
        pytest.skip("no Python 3.9 interpreter (HMR_TRT_PY39 unset; `make pytest` sets it when python3.9 exists)")
    # The library, not its command-line entry points (those need typer and rich, which the offline
    # TensorRT bundle ships; a bare image runs the library).
    mods = [m for m in ALL if m.startswith(("hmr_trt.runtime", "hmr_trt.engines")) and not m.endswith(("cli", "_cli"))]
    sys.path.insert(0, str(ROOT / "tools"))
    from stage_package import stage

    env = dict(os.environ, PYTHONPATH=str(stage(ROOT / "build" / "py39", ("runtime", "engines"))))
    code = (
        "import sys\n" + "".join(f"import {m}\n" for m in mods)
        + "assert sys.version_info[:2] == (3, 9), sys.version\n"
        + "assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules\n"
        + "from hmr_trt.runtime.backends import IOSpec\nimport numpy as np\n"
        + "IOSpec('features', ('batch', 16, 2048), np.dtype('float32')).check(np.zeros((2, 16, 2048), np.float32))\n"
        + "print('ok')\n"
    )
    # run outside the repository: its root holds a bare hmr_trt/ that would shadow the staged package
    proc = subprocess.run([py39, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT / "build")
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout + proc.stderr
