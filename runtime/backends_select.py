"""Pick and open the backends for an export directory: TensorRT where a matching engine exists, else ONNX Runtime.

``--backend auto`` picks TensorRT when the manifest lists an engine of the requested precision
built for this GPU and TensorRT version, and ONNX Runtime otherwise, and says which and why.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Tuple

import numpy as np

from hmr_trt.errors import ConfigError, HmrTrtError
from hmr_trt.manifest import Manifest

from .backends import Backend, OnnxRuntimeBackend

BACKENDS = ("auto", "tensorrt", "onnxruntime", "triton")
FACES_NAME = "body_model_faces.npy"


@dataclass
class Backends:
    temporal: Backend
    body: Backend
    backbone: Optional[Backend]
    description: str
    faces: np.ndarray
    weights_note: str

    @property
    def feature_dim(self) -> int:
        return int(self.temporal.inputs[0].shape[-1])

    def infer_backbone(self, images: np.ndarray) -> np.ndarray:
        if self.backbone is None:
            raise HmrTrtError("this export has no backbone graph; re-export with trt-export")
        return _chunked(self.backbone, {"images": images})["features"]

    def infer_body(self, pose_rotmat: np.ndarray, betas: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        out = _chunked(self.body, {"pose_rotmat": np.ascontiguousarray(pose_rotmat, np.float32),
                                   "betas": np.ascontiguousarray(betas, np.float32)})
        return out["vertices"], out["joints3d"]


def _chunked(backend: Backend, feed: dict) -> dict:
    n = len(next(iter(feed.values())))
    step = backend.max_batch or n
    parts = [backend.infer({k: v[i:i + step] for k, v in feed.items()}) for i in range(0, n, step)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _tensorrt_choice(manifest: Manifest, export_dir: Path, precision: str) -> Tuple[Optional[dict], str]:
    """({graph: engine path}, reason) when TensorRT can run this export's engines here, else (None, why not)."""
    engines = {a.name: a for a in manifest.artifacts if a.kind == "engine" and a.precision in (precision, "fp32")}
    if "temporal" not in engines or engines["temporal"].precision != precision:
        return None, f"no {precision} TensorRT engine in {export_dir} (build one with trt-build)"
    try:
        from .trt_backend import engine_runs_here
    except ImportError as exc:  # pragma: no cover - the module ships with the runtime
        return None, f"TensorRT backend unavailable: {exc}"
    for art in engines.values():
        ok, why = engine_runs_here(art.extra)
        if not ok:
            return None, why
    return {name: export_dir / a.path for name, a in engines.items()}, "a matching engine exists"


@contextlib.contextmanager
def open_backends(export_dir: Path, backend: str = "auto", precision: str = "fp32", threads: int = 0,
                  need_backbone: bool = True, triton_url: Optional[str] = None) -> Iterator[Backends]:
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    export_dir = Path(export_dir)
    manifest = Manifest.read(export_dir)
    faces_path = export_dir / FACES_NAME
    faces = np.load(faces_path) if faces_path.is_file() else np.zeros((0, 3), np.int64)
    weights_note = "; ".join(n for n in manifest.notes if "weights" in n or "body model" in n)
    if backend == "triton" and not triton_url:
        raise ConfigError("--backend triton needs --triton-url HOST:PORT")
    engines, reason = (None, f"--backend {backend}") if backend in ("onnxruntime", "triton") else \
        _tensorrt_choice(manifest, export_dir, precision)
    if backend == "tensorrt" and engines is None:
        raise HmrTrtError(f"--backend tensorrt: {reason}")
    description = f"tensorrt ({reason})" if engines else f"onnxruntime CPU ({reason})"
    if backend == "triton":
        description = f"triton at {triton_url}"
    engines = engines or {}

    def make(name: str) -> Backend:
        """The graph's engine when there is one, else its ONNX (temporal at ``precision``) on ONNX Runtime."""
        if backend == "triton":
            from .triton_backend import TritonBackend

            art = manifest.find(name, "onnx", "fp32")
            expected = tuple(t.name for t in art.inputs) if art is not None else None
            return TritonBackend(str(triton_url), f"{manifest.model}_{name}", expected_inputs=expected)
        if name in engines:
            from .trt_backend import TensorRTBackend

            return TensorRTBackend(engines[name])
        art = manifest.find(name, "onnx", precision if name == "temporal" else "fp32") or \
            manifest.find(name, "onnx", "fp32")
        if art is None:
            raise HmrTrtError(f"{export_dir}/manifest.json lists no ONNX for the {name} graph")
        limit = manifest.profile.get("max") if name == "temporal" else None
        return OnnxRuntimeBackend(export_dir / art.path, threads=threads, max_batch=limit)

    with contextlib.ExitStack() as stack:
        temporal = stack.enter_context(make("temporal"))
        body = stack.enter_context(make("body_model"))
        backbone = stack.enter_context(make("backbone")) if need_backbone else None
        yield Backends(temporal, body, backbone, description, faces, weights_note)
