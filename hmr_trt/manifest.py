"""``manifest.json``: what an export directory holds, how it was made and how well it matches.

Torch-free: the engine builder and the runtime read the same file. Writing goes through a
staging directory that is moved into place at the end, so an interrupted or failed command
never leaves a half-written output directory behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

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
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(stage, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
