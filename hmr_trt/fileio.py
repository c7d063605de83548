"""Writing files so that a reader never sees half of one: a temp file beside the target, then os.replace.

Every writer in hmr-trt (track files, summaries, manifests, ONNX passes, engines, caches) goes
through ``atomic_write``: an error or Ctrl-C mid-write leaves the old file (or none) and no temp file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Type, Union

from .errors import HmrTrtError, OutputDirError

PathLike = Union[str, "os.PathLike[str]"]


def default_mode(directory: bool = False) -> int:
    """The mode a plain open()/mkdir() would give under the current umask (mkstemp/mkdtemp give 0600/0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], Any],
                 error: Type[HmrTrtError] = OutputDirError) -> Path:
    """Write ``path`` through ``write(file)``; an OSError becomes ``error`` naming the path."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise error(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise error(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomic(path: PathLike, data: Any, error: Type[HmrTrtError] = OutputDirError) -> Path:
    return atomic_write(path, lambda f: f.write(data), error)


def save_onnx_atomic(model: Any, path: PathLike) -> Path:
    """An onnx.ModelProto (under 2 GB, weights inline) written atomically."""
    return atomic_write(path, lambda f: f.write(model.SerializeToString()))
