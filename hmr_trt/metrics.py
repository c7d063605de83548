"""Parity maths in the task's unit, millimetres (numpy only). The mesh path itself lives in
``hmr_trt.mesh``; this module keeps the goals and re-exports it for existing callers."""

from __future__ import annotations

from typing import Callable, Dict

import numpy as np

from .contract import DEFAULT_GOALS_MM
from .mesh import drift_mm, mesh_drift, meshes, motion_spread_mm, outputs_drift

__all__ = ["GOALS_MM", "Runner", "drift_mm", "mesh_drift", "meshes", "motion_spread_mm", "outputs_drift"]

# Written-down default goals (mean vertex drift, mm) per precision; a contract may set its own.
GOALS_MM = dict(DEFAULT_GOALS_MM)

# runner(graph name, feed) -> outputs (export/parity.py's Runner)
Runner = Callable[[str, Dict[str, np.ndarray]], Dict[str, np.ndarray]]
