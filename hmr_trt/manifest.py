"""``manifest.json``: what an export directory holds, how it was made and how well it matches.

Torch-free: the engine builder and the runtime read the same file. Writing goes through a
staging directory that is moved into place at the end, so an interrupted or failed command
never leaves a half-written output directory behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

from . import __version__
from .contract import ModelContract
from .errors import HmrTrtError, OutputDirError
from .fileio import atomic_write, default_mode, path_problem

MANIFEST_NAME = "manifest.json"


@dataclass
class TensorSpec:
    name: str
    shape: list  # ints, or strings for dynamic axes ("batch")
    dtype: str = "float32"


@dataclass
class Artifact:
    name: str  # "temporal", "body_model", "backbone"
    path: str  # relative to the manifest's directory
    kind: str  # "onnx" | "engine"
    precision: str  # "fp32" | "fp16" | "int8"
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parity: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Artifact:
        d = dict(d)
        d["inputs"] = [TensorSpec(**t) for t in d.get("inputs", [])]
        d["outputs"] = [TensorSpec(**t) for t in d.get("outputs", [])]
        return cls(**d)


@dataclass
class Manifest:
    model: str
    config: dict[str, Any]
    profile: dict[str, int]
    artifacts: list[Artifact] = field(default_factory=list)
    tools: dict[str, str] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    hmr_trt_version: str = __version__
    contract: dict[str, Any] = field(default_factory=dict)  # ModelContract.to_dict() of the exported model
    # precision -> PASS/MISS against the contract's goal, the worst case and the recipe (export/parity.py verdict())
    verdict: dict[str, Any] = field(default_factory=dict)

    def model_contract(self) -> ModelContract:
        """The exported model's contract (consumers read the model from here, never from literals)."""
        if not self.contract:
            raise HmrTrtError(f"this export of {self.model!r} records no model contract: re-export it with this hmr-trt")
        return ModelContract.from_dict(self.contract)

    def find(self, name: str, kind: str = "onnx", precision: str = "fp32") -> Artifact | None:
        for art in self.artifacts:
            if (art.name, art.kind, art.precision) == (name, kind, precision):
                return art
        return None

    def add(self, artifact: Artifact) -> None:
        """Add, replacing an entry with the same name, kind and precision."""
        self.artifacts = [
            a for a in self.artifacts if (a.name, a.kind, a.precision) != (artifact.name, artifact.kind, artifact.precision)
        ]
        self.artifacts.append(artifact)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, directory: str | Path) -> Path:
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        return atomic_write(Path(directory) / MANIFEST_NAME, lambda f: f.write(text.encode()))

    @classmethod
    def read(cls, directory: str | Path) -> Manifest:
        given = Path(directory)  # every message names the folder as the user gave it
        problem = path_problem(given, "any")
        if problem:
            raise HmrTrtError(f"export folder {given}: {problem}")
        path = given / MANIFEST_NAME if given.is_dir() else given
        if not path.is_file():
            raise HmrTrtError(f"no {MANIFEST_NAME} in {given}: is this an hmr-trt export folder?")
        try:
            d = json.loads(path.read_text())
            d["artifacts"] = [Artifact.from_dict(a) for a in d.get("artifacts", [])]
            return cls(**d)
        except (ValueError, TypeError, KeyError) as exc:
            raise HmrTrtError(f"{path} is not a valid hmr-trt manifest: {exc}") from exc


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def tool_versions(*names: str) -> dict[str, str]:
    """Installed versions of the named distributions (absent ones are skipped)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"hmr-trt": __version__}
    for name in names:
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


@contextlib.contextmanager
def staged_output(out: str | Path, *, replace_marker: str = MANIFEST_NAME) -> Iterator[Path]:
    """Yield a fresh staging directory beside ``out``; move it into place only on success.

    ``out`` may not exist, be empty, or hold an earlier hmr-trt output (it contains
    ``replace_marker``), which is replaced whole. Anything else is refused, so a user's
    unrelated files are never overwritten. On any error or Ctrl-C the staging directory is
    removed and ``out`` is left exactly as it was.
    """
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / replace_marker).exists():
        raise OutputDirError(f"--out {out} exists with other content; choose a new or empty directory")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
        os.chmod(stage, default_mode(directory=True))  # what --out would get from mkdir, not mkdtemp's 0700
    except OSError as exc:
        raise OutputDirError(f"cannot write to --out {out}: {exc.strerror or exc}") from exc
    try:
        yield stage
        try:
            _stage_into_place(stage, out)
        except OSError as exc:
            raise OutputDirError(f"cannot move the finished output into --out {out}: {exc.strerror or exc}") from exc
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def _stage_into_place(stage: Path, out: Path) -> None:
    """``stage`` becomes ``out``: one rename where the folder can be renamed; where it cannot (``out`` is a
    mount point, e.g. a container volume: EBUSY; or another file system) its entries are replaced instead. In
    both cases ``out`` was checked to be empty or an earlier output of the same kind."""
    if out.exists() and os.path.ismount(out):
        _replace_entries(stage, out)
        return
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        try:
            os.replace(out, old)
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.EXDEV, errno.EPERM, errno.EACCES):
                raise
            _replace_entries(stage, out)
            return
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _replace_entries(stage: Path, out: Path) -> None:
    """The earlier output's entries removed from ``out``, then the stage's moved in (across file systems too:
    the stage sits beside ``out``, which may be another mount)."""
    for child in out.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    for child in stage.iterdir():
        shutil.move(str(child), str(out / child.name))


RUN_FILE = ".hmr-trt-run.json"  # in a run's --out: the files that run wrote (what the next run may replace)


class OutputFolder:
    """A run's ``--out``: files written one by one under temporary names in the folder itself, renamed into place.

    Nothing is ever removed that hmr-trt did not write: the folder may be fresh, empty, a mount point
    or hold the user's own files. What an earlier run wrote is recognised only through ``RUN_FILE``
    (a list of its files, kept up to date as files are put in place); the new run may replace those,
    and at ``commit`` removes the ones it did not write again. A name that exists but is not listed
    there is refused (one line) instead of overwritten.

    ``publish``: ``"now"`` renames each file into place as soon as it is complete (live sources: what
    is final is kept whatever happens later); ``"end"`` keeps them under temporary names until
    ``commit`` (files: an error or Ctrl-C leaves ``--out`` as it was). ``abort`` removes the
    temporary files and, in ``"end"`` mode, nothing else.
    """

    def __init__(self, out: str | Path, publish: str = "end") -> None:
        if publish not in ("now", "end"):
            raise HmrTrtError(f"OutputFolder: publish must be 'now' or 'end', got {publish!r}")
        self.out = Path(out)
        self.publish = publish
        try:
            if self.out.exists() and not self.out.is_dir():
                raise OutputDirError(f"--out {out} exists and is not a directory")
            missing = [p for p in (self.out, *self.out.parents) if not p.exists()]
            self.out.mkdir(parents=True, exist_ok=True)
            self.created = missing  # folders this run made (removed again by abort when left empty)
        except OSError as exc:
            raise OutputDirError(f"cannot write to --out {out}: {exc.strerror or exc}") from exc
        self.earlier = self._read_run_file()  # names an earlier run wrote (and may be replaced)
        self.written: list[str] = []  # names this run has put in place, in order
        self._pending: dict[str, Path] = {}  # name -> temporary file ("end" mode)
        self._temps: set[Path] = set()

    # -- names -----------------------------------------------------------------------------------

    def _read_run_file(self) -> list[str]:
        path = self.out / RUN_FILE
        if not path.is_file():
            return []
        try:
            data = json.loads(path.read_text())
            files = [str(f) for f in data["files"]]
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise OutputDirError(f"--out {self.out}: {RUN_FILE} is not an hmr-trt run file ({exc}); move it "
                                 "away or choose another folder") from exc
        return [f for f in files if f and "/" not in f and f not in (".", "..")]

    def claim(self, name: str) -> Path:
        """The final path of ``name`` in --out, refused when a file of that name is not hmr-trt's."""
        if "/" in name or name in ("", ".", "..", RUN_FILE):
            raise HmrTrtError(f"OutputFolder: bad file name {name!r}")
        path = self.out / name
        if (path.exists() or path.is_symlink()) and name not in self.earlier and name not in self.written \
                and name not in self._pending:
            raise OutputDirError(f"--out {self.out} holds {name}, which no earlier hmr-trt run there wrote "
                                 f"(it is not in {RUN_FILE}); move it away or choose another folder")
        return path

    def check_free(self, names: Iterable[str]) -> None:
        """Refuse before any work when one of ``names`` would overwrite a file hmr-trt did not write."""
        for name in names:
            self.claim(name)

    # -- writing ---------------------------------------------------------------------------------

    def temp_path(self, name: str) -> Path:
        """A fresh temporary path beside ``name`` (hidden, removed by ``abort``)."""
        self.claim(name)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.out)
        os.close(fd)
        os.chmod(tmp, default_mode())
        self._temps.add(Path(tmp))
        return Path(tmp)

    def place(self, name: str, tmp: Path) -> Path:
        """A complete temporary file becomes ``name``: now, or at ``commit`` ("end" mode)."""
        if self.publish == "end":
            old = self._pending.get(name)
            if old is not None and old != tmp:
                old.unlink(missing_ok=True)
                self._temps.discard(old)
            self._pending[name] = tmp
            return self.out / name
        return self._rename(name, tmp)

    def write(self, name: str, write: Callable[[IO[bytes]], Any]) -> Path:
        """A whole file written through ``write(f)`` into a temporary name, then ``place``d."""
        tmp = self.temp_path(name)
        try:
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            self._drop(tmp)
            raise OutputDirError(f"cannot write {self.out / name}: {exc.strerror or exc}") from exc
        except BaseException:
            self._drop(tmp)
            raise
        return self.place(name, tmp)

    def record(self, path: str | Path) -> None:
        """A file this run wrote by other means (e.g. ``--render`` inside --out): listed in the run file."""
        p = Path(path).absolute()
        if p.parent == self.out.absolute() and p.name not in self.written:
            self.written.append(p.name)
            self._write_run_file()

    def _rename(self, name: str, tmp: Path) -> Path:
        if name not in self.written:
            self.written.append(name)
            self._write_run_file()  # listed before it exists: never a file of ours that the list forgets
        try:
            os.replace(tmp, self.out / name)
        except OSError as exc:
            self._drop(tmp)
            raise OutputDirError(f"cannot write {self.out / name}: {exc.strerror or exc}") from exc
        self._temps.discard(tmp)
        return self.out / name

    def _drop(self, tmp: Path) -> None:
        tmp.unlink(missing_ok=True)
        self._temps.discard(tmp)

    def _write_run_file(self) -> None:
        files = sorted(set(self.written) | {n for n in self.earlier if (self.out / n).exists()})
        text = json.dumps({"tool": "hmr-trt", "version": __version__, "files": files}, indent=1) + "\n"
        atomic_write(self.out / RUN_FILE, lambda f: f.write(text.encode()))

    # -- the end ---------------------------------------------------------------------------------

    def commit(self) -> None:
        """Put every pending file in place, remove the earlier run's files this run did not rewrite."""
        for name, tmp in list(self._pending.items()):
            self._rename(name, tmp)
            del self._pending[name]
        for name in self.earlier:
            if name not in self.written:
                with contextlib.suppress(OSError):
                    (self.out / name).unlink()
        self.earlier = []
        self._write_run_file()

    def abort(self) -> None:
        """Remove this run's temporary files (files already in place stay: they are complete)."""
        for tmp in list(self._temps):
            self._drop(tmp)
        self._pending.clear()
        for folder in self.created:  # innermost first; only folders this run made, only when empty
            with contextlib.suppress(OSError):
                folder.rmdir()
