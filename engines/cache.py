"""An on-disk cache of engines, keyed by everything an engine depends on.

Key: sha256 of (TensorRT version, GPU name, compute capability, precision, batch profile, ONNX
sha256, hmr-trt version). An engine is only valid for the TensorRT version and GPU that built
it, so a new driver/GPU/TensorRT or a re-exported graph gets a new key and a fresh build.
Entries are ``KEY.engine`` + ``KEY.engine.json`` (its EngineInfo) under ``~/.cache/hmr-trt/engines``
(``HMR_TRT_CACHE`` overrides), and per-TensorRT/GPU timing caches under ``timing/``. A cached
engine whose sha256 no longer matches its sidecar is dropped and rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Union

from hmr_trt import __version__
from hmr_trt.errors import EngineError
from hmr_trt.manifest import sha256_of
from hmr_trt.profile import ShapeProfile
from hmr_trt.runtime.graph_loader import file_sha256
from hmr_trt.runtime.trt_compat import Target, check_precision, current_target

from .builder import DEFAULT_WORKSPACE_MIB, BuildFn, engine_from_onnx
from .onnx_metadata import require_hmr_trt_graph
from .sidecar import EngineInfo, read_sidecar, sidecar_path

CACHE_ENV = "HMR_TRT_CACHE"
PathLike = Union[str, Path]


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hmr-trt" / "engines"


def cache_key(*, tensorrt_version: str, gpu_name: str, compute_capability: str, precision: str,
              profile: Union[ShapeProfile, Dict[str, int]], onnx_sha256: str,
              hmr_trt_version: str = __version__) -> str:
    """sha256 over the fields an engine depends on, in a canonical JSON form."""
    prof = profile.to_dict() if isinstance(profile, ShapeProfile) else dict(profile)
    fields = {
        "tensorrt_version": str(tensorrt_version).strip(), "gpu_name": gpu_name,
        "compute_capability": compute_capability, "precision": check_precision(precision),
        "profile": {k: int(prof[k]) for k in ("min", "opt", "max")}, "onnx_sha256": onnx_sha256,
        "hmr_trt_version": hmr_trt_version,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def key_for(target: Target, precision: str, profile: ShapeProfile, onnx_sha256: str) -> str:
    return cache_key(tensorrt_version=target.tensorrt_version, gpu_name=target.gpu_name,
                     compute_capability=target.compute_capability, precision=precision, profile=profile,
                     onnx_sha256=onnx_sha256)


@dataclass
class CachedEngine:
    path: Path
    info: EngineInfo
    hit: bool  # True when reused, False when built by this call


class EngineCache:
    """``KEY.engine`` + sidecar files under ``root``; ``lookup`` verifies the engine's sha256."""

    def __init__(self, root: Optional[PathLike] = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def engine_path(self, key: str) -> Path:
        return self.root / f"{key}.engine"

    def timing_cache_path(self, target: Target) -> Path:
        safe = "".join(c if c.isalnum() or c in ".-_" else "_" for c in target.tensorrt_version)
        return self.root / "timing" / f"trt-{safe}-{target.compute_capability}.cache"

    def lookup(self, key: str) -> Optional[CachedEngine]:
        path = self.engine_path(key)
        if not path.is_file() or not sidecar_path(path).is_file():
            return None
        try:
            info = read_sidecar(path)
        except EngineError:
            info = None
        if info is None or sha256_of(path) != info.engine_sha256:
            self.remove(key)  # truncated, corrupt or half-replaced: rebuild
            return None
        return CachedEngine(path, info, hit=True)

    def remove(self, key: str) -> None:
        for p in (self.engine_path(key), sidecar_path(self.engine_path(key))):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def cached_engine(
    onnx_path: PathLike,
    precision: str,
    profile: ShapeProfile,
    *,
    cache_dir: Optional[PathLike] = None,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    opt_level: int = 3,
    target: Optional[Target] = None,
    build_fn: Optional[BuildFn] = None,
    source: Optional[str] = None,
) -> CachedEngine:
    """The cached engine for these inputs, or a new one built with ``engine_from_onnx`` and stored."""
    onnx_path = Path(onnx_path)
    require_hmr_trt_graph(onnx_path)
    check_precision(precision)
    target = target or current_target()
    onnx_sha = file_sha256(onnx_path)  # hashed once per file and process (trt-build verified it already)
    cache = EngineCache(cache_dir)
    key = key_for(target, precision, profile, onnx_sha)
    found = cache.lookup(key)
    if found is not None:
        return found
    path = cache.engine_path(key)
    info = engine_from_onnx(onnx_path, path, precision, profile, workspace_mib, opt_level,
                            cache.timing_cache_path(target), target=target, build_fn=build_fn, source=source,
                            onnx_sha256=onnx_sha)
    return CachedEngine(path, info, hit=False)
