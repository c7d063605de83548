"""Writing files so that a reader never sees half of one: a temp file beside the target, then os.replace.

Every writer in hmr-trt (track files, summaries, manifests, ONNX passes, engines, caches) goes
through ``atomic_write``: an error or Ctrl-C mid-write leaves the old file (or none) and no temp file.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Optional, Type, Union

from .errors import HmrTrtError, OutputDirError

PathLike = Union[str, "os.PathLike[str]"]


def path_problem(path: PathLike, kind: str = "file") -> Optional[str]:
    """Why ``path`` is not an existing ``kind`` ("file": a regular file, "dir": a folder, "any": either), in
    words, or None when it is one. Never raises: a name too long for the file system, a part of the path
    that is a file, or a permission problem is a reason like "not found" (``Path.is_file()`` raises
    OSError for the first and last of these)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "not found"
    except NotADirectoryError:
        return "not found (a part of the path is a file, not a folder)"
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            longest = max(len(part) for part in Path(path).parts)
            return (f"name too long for the file system ({len(str(path))} characters, the longest part "
                    f"{longest}; most allow 255 per part)")
        return f"cannot be read ({exc.strerror or exc})"
    if kind == "dir" and not stat.S_ISDIR(st.st_mode):
        return "is not a folder"
    if kind == "file" and stat.S_ISDIR(st.st_mode):
        return "is a folder, not a file"
    if kind in ("file", "any") and not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return "is not a regular file (a device, pipe or socket)"
    return None


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
    """An onnx.ModelProto written atomically: weights inline, or, when they are more than one protobuf holds
    (``hmr_trt.external_data.THRESHOLD_BYTES``: an INT8 graph of the ViT-H with layers left float after the
    sweep), in one ``<graph>.data`` file beside it (``hmr_trt.external_data.save``: data first, graph last)."""
    from . import external_data

    if external_data.initializer_bytes(model) > external_data.THRESHOLD_BYTES:
        external_data.save(model, Path(path), True)
        return Path(path)
    return atomic_write(path, lambda f: f.write(model.SerializeToString()))
