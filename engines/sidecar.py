"""The engine sidecar ``NAME.engine.json`` and atomic engine files.

``EngineInfo`` and reading a sidecar live in the runtime (``hmr_trt.runtime.engine_loader``), which
verifies engines before it loads them and must not import the engine builder; this module adds the
writing side: the engine and its sidecar written atomically (temporary file + ``os.replace``), so
an error or Ctrl-C never leaves a half-written engine, and never an engine without its sidecar.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Union

from hmr_trt.errors import EngineError
from hmr_trt.fileio import write_bytes_atomic
from hmr_trt.runtime.engine_loader import EngineInfo, read_sidecar, sidecar_path

__all__ = ["EngineInfo", "atomic_write", "read_sidecar", "sidecar_path", "write_engine", "write_sidecar"]

PathLike = Union[str, Path]


def atomic_write(path: PathLike, data: Any) -> None:
    """Bytes-like ``data`` written atomically (hmr_trt.fileio); failures are EngineErrors."""
    write_bytes_atomic(path, data, EngineError)


def write_sidecar(engine_path: PathLike, info: EngineInfo) -> Path:
    path = sidecar_path(engine_path)
    atomic_write(path, (json.dumps(info.to_dict(), indent=2) + "\n").encode())
    return path


def write_engine(engine_path: PathLike, data: Any, info: EngineInfo) -> None:
    """The engine, then its sidecar; if the sidecar cannot be written the engine is removed again."""
    atomic_write(engine_path, data)
    try:
        write_sidecar(engine_path, info)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(engine_path).unlink()
        raise
