"""Lay hmr_trt out as an installed package under DEST (stdlib only, no pip).

For interpreters where the project cannot be pip-installed: the offline TensorRT bundle's
Python 3.9 and a GPU image's own Python. Use with PYTHONPATH=DEST.
Usage: python tools/stage_package.py DEST [SUBPACKAGE ...]   (default: all subpackages)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("export", "engines", "runtime", "calibration")


def stage(dest: Path, subpackages: tuple[str, ...] = SUBPACKAGES) -> Path:
    target = dest / "hmr_trt"
    shutil.rmtree(target, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "hmr_trt", target, ignore=ignore)
    for sub in subpackages:
        shutil.copytree(ROOT / sub, target / sub, ignore=ignore)
    return dest


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(stage(Path(sys.argv[1]), tuple(sys.argv[2:]) or SUBPACKAGES))
