"""Verified engine loading, the one way an hmr-trt TensorRT engine is deserialized.

``engine_from_path(path)`` (Polygraphy's ``EngineFromPath``, with a check first): read the sidecar
``NAME.engine.json`` that trt-build writes beside every engine, refuse the engine when its TensorRT
version or compute capability is not this machine's or its sha256 is not the sidecar's (truncated,
corrupt, replaced), then deserialize it. The TensorRT backend, the benchmark and the GPU tests all
load through here; the engine builder writes what this module reads (``EngineInfo``).

Torch-free and engine-builder-free (the runtime must not import ``hmr_trt.engines``), Python 3.9;
``tensorrt`` is imported only when an engine is deserialized.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from hmr_trt.errors import EngineError, GraphError
from hmr_trt.fileio import path_problem
from hmr_trt.profile import ShapeProfile

from . import trt_compat
from .trt_compat import Target

PathLike = Union[str, Path]
SIDECAR_SUFFIX = ".json"


@dataclass
class EngineInfo:
    """What one engine is and what it is tied to; stored beside it as ``NAME.engine.json``."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "sm_90"
    precision: str  # of the ONNX it was built from: fp32 | fp16 | int8
    profile: Dict[str, int]  # min/opt/max of the dynamic leading axis
    onnx_sha256: str
    hmr_trt_version: str
    build_seconds: float
    graph: str = ""  # hmr_trt.graph of the ONNX (a graph name of the model contract)
    source: str = ""  # what to give trt-build to rebuild it (an export directory or an ONNX file)
    strongly_typed: bool = False
    engine_sha256: str = ""
    engine_bytes: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> EngineInfo:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def shape_profile(self) -> ShapeProfile:
        return ShapeProfile(**self.profile)


def sidecar_path(engine_path: PathLike) -> Path:
    path = Path(engine_path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def read_sidecar(engine_path: PathLike) -> EngineInfo:
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise EngineError(f"{engine_path} has no sidecar {path.name}: it was not written by trt-build "
                          "(or was moved without it); rebuild it with trt-build")
    try:
        return EngineInfo.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise EngineError(f"{path} is not a valid engine sidecar ({exc}); rebuild the engine with trt-build") from exc


# ---------------------------------------------------------------------------------------------
# does an engine fit this machine (the one compatibility check)


def rebuild_hint(info: EngineInfo) -> str:
    profile = info.profile or {}
    return (f"trt-build {info.source or 'EXPORT_DIR'} --precision {info.precision} "
            f"--batch {profile.get('min')}:{profile.get('opt')}:{profile.get('max')}")


def mismatch(info: EngineInfo, target: Target) -> Optional[str]:
    """Why an engine cannot run on ``target`` (TensorRT version or compute capability), or None."""
    try:
        same_trt = trt_compat.parse_version(info.tensorrt_version) == trt_compat.parse_version(target.tensorrt_version)
    except EngineError:
        same_trt = False
    if same_trt and info.compute_capability == target.compute_capability:
        return None
    return (f"engine built for TensorRT {info.tensorrt_version} on {info.compute_capability}; this machine has "
            f"{target.tensorrt_version} on {target.compute_capability}: rebuild with {rebuild_hint(info)}")


def engine_runs_here(extra: Dict[str, Any], target: Optional[Target] = None) -> Tuple[bool, str]:
    """Whether an engine artifact (its manifest ``extra["engine"]``) can run here, and why not.

    Needs TensorRT and a GPU (unless ``target`` is given), and the TensorRT version and compute
    capability the engine was built for. Loading (``engine_from_path``) also checks the sha256.
    """
    if target is None:
        ok, why = trt_compat.trt_available()
        if not ok:
            return False, why
        target = trt_compat.current_target()
    raw = extra.get("engine") or {}
    info = EngineInfo.from_dict({"tensorrt_version": "?", "gpu_name": "", "compute_capability": "?",
                                 "precision": "fp32", "profile": {}, "onnx_sha256": "", "hmr_trt_version": "",
                                 "build_seconds": 0.0, **raw})
    problem = mismatch(info, target)
    if problem:
        return False, problem
    return True, f"engine built for TensorRT {info.tensorrt_version} on {info.compute_capability}, as this machine"


def verify_engine(path: PathLike, info: Optional[EngineInfo] = None, target: Optional[Target] = None,
                  manifest_sha256: str = "") -> Tuple[bytes, EngineInfo]:
    """The engine's bytes once its sidecar matches this machine and its sha256 (and, given, the sha256 the
    export's manifest records: ``graph_loader.VerifiedGraph.sha256``); EngineError otherwise."""
    path = Path(path)
    problem = path_problem(path)
    if problem:
        raise EngineError(f"engine file not found: {path}" if problem == "not found" else f"engine file {path}: {problem}")
    info = info or read_sidecar(path)
    target = target or trt_compat.current_target()
    problem = mismatch(info, target)
    if problem:
        raise EngineError(f"{path.name}: {problem}")
    if info.gpu_name and info.gpu_name != target.gpu_name:
        warnings.warn(f"{path.name} was built on {info.gpu_name}, this GPU is {target.gpu_name} (same "
                      f"{target.compute_capability}): it runs, but may be slower than a rebuilt engine", stacklevel=2)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()  # once, for the sidecar and the manifest
    if info.engine_sha256 and digest != info.engine_sha256:
        raise EngineError(f"{path} is truncated or corrupt ({len(data)} bytes; its sha256 does not match the "
                          f"sidecar's, {info.engine_bytes} bytes): rebuild with {rebuild_hint(info)}")
    if manifest_sha256 and digest != manifest_sha256:
        raise GraphError(f"{path} is not the engine its manifest.json records (its sha256 differs): it was replaced "
                         f"after trt-build, sidecar and all; rebuild with {rebuild_hint(info)}")
    return data, info


# ---------------------------------------------------------------------------------------------
# deserializing


def collecting_logger(trt: Any) -> Any:
    """The process's one TensorRT logger (``trt_compat.process_logger``): keeps error messages for exception texts."""
    return trt_compat.process_logger(trt)


# (tensorrt module, runtime, logger): the runtime must outlive its engines, so one is kept per process
# (replaced only when another tensorrt module is imported, as tests with a simulated one do).
_RUNTIME: List[Tuple[Any, Any, Any]] = []


def _runtime(trt: Any) -> Tuple[Any, Any]:
    if not _RUNTIME or _RUNTIME[0][0] is not trt:
        logger = collecting_logger(trt)
        _RUNTIME[:] = [(trt, trt.Runtime(logger), logger)]
    return _RUNTIME[0][1], _RUNTIME[0][2]


def engine_from_bytes(data: Any, what: str = "the serialized engine", hint: str = "trt-build") -> Any:
    """Deserialize engine bytes (unchecked: ``engine_from_path`` checks first); a ``tensorrt.ICudaEngine``."""
    trt = trt_compat.import_tensorrt()
    runtime, logger = _runtime(trt)
    del logger.errors[:]
    try:
        engine = runtime.deserialize_cuda_engine(data)
    except (RuntimeError, TypeError) as exc:
        engine = None
        logger.errors.append(str(exc))
    if engine is None:
        detail = " | ".join(logger.errors[-3:]) or "no message from TensorRT"
        raise EngineError(f"TensorRT {trt.__version__} cannot deserialize {what} ({detail}): it is truncated or "
                          f"corrupt, or was built by another TensorRT version or for another GPU; rebuild with {hint}")
    return engine


def engine_from_path(path: PathLike, info: Optional[EngineInfo] = None, target: Optional[Target] = None,
                     manifest_sha256: str = "") -> Any:
    """The engine at ``path`` once ``verify_engine`` passes (sidecar, TensorRT version, GPU, sha256)."""
    data, info = verify_engine(path, info, target, manifest_sha256)
    return engine_from_bytes(data, str(path), rebuild_hint(info))
