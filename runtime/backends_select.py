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

from hmr_trt.contract import ModelContract
from hmr_trt.errors import ConfigError, HmrTrtError
from hmr_trt.manifest import Manifest

from .backends import Backend, OnnxRuntimeBackend

BACKENDS = ("auto", "tensorrt", "onnxruntime")
FACES_NAME = "body_model_faces.npy"


def contract_of(manifest: Manifest) -> ModelContract:
    """The export's contract; exports written before the contract existed: the registered one of its model."""
    if manifest.contract:
        return manifest.model_contract()
    from hmr_trt import registry

    return registry.contract(manifest.model)


@dataclass
class Backends:
    temporal: Backend  # the contract's model graph (role "model")
    body: Optional[Backend]  # role "body_model"; None when the model outputs vertices
    backbone: Optional[Backend]  # role "feature_extractor"
    description: str
    faces: np.ndarray
    weights_note: str
    contract: Optional[ModelContract] = None

    @property
    def feature_dim(self) -> int:
        return int(self.temporal.inputs[0].shape[-1])

    def infer_backbone(self, images: np.ndarray) -> np.ndarray:
        if self.backbone is None:
            raise HmrTrtError("this export has no backbone graph; re-export with trt-export")
        return _chunked(self.backbone, {"images": images})["features"]

    def infer_body(self, pose_rotmat: np.ndarray, betas: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        from hmr_trt.mesh import meshes

        if self.body is None:
            raise HmrTrtError("this export has no body-model graph")
        return meshes(lambda feed: _chunked(self.body, feed), {"pose_rotmat": pose_rotmat, "betas": betas})


def _chunked(backend: Backend, feed: dict) -> dict:
    n = len(next(iter(feed.values())))
    step = backend.max_batch or n
    parts = [backend.infer({k: v[i:i + step] for k, v in feed.items()}) for i in range(0, n, step)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _tensorrt_choice(manifest: Manifest, export_dir: Path, precision: str,
                     model_graph: str = "temporal") -> Tuple[Optional[dict], str]:
    """({graph: engine path}, reason) when TensorRT can run this export's engines here, else (None, why not)."""
    engines = {a.name: a for a in manifest.artifacts if a.kind == "engine" and a.precision in (precision, "fp32")}
    if model_graph not in engines or engines[model_graph].precision != precision:
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
                  need_backbone: bool = True) -> Iterator[Backends]:
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    export_dir = Path(export_dir)
    manifest = Manifest.read(export_dir)
    contract = contract_of(manifest)
    model_graph = contract.model_graph.name
    body_graph = contract.graph_for("body_model")
    extractor = contract.graph_for("feature_extractor")
    faces_path = export_dir / FACES_NAME
    faces = np.load(faces_path) if faces_path.is_file() else np.zeros((0, 3), np.int64)
    weights_note = "; ".join(n for n in manifest.notes if "weights" in n or "body model" in n)
    engines, reason = (None, "--backend onnxruntime") if backend == "onnxruntime" else \
        _tensorrt_choice(manifest, export_dir, precision, model_graph)
    if backend == "tensorrt" and engines is None:
        raise HmrTrtError(f"--backend tensorrt: {reason}")
    description = f"tensorrt ({reason})" if engines else f"onnxruntime CPU ({reason})"
    engines = engines or {}

    def make(name: str) -> Backend:
        """The graph's engine when there is one, else its ONNX (the model graph at ``precision``) on ONNX Runtime."""
        if name in engines:
            from .trt_backend import TensorRTBackend

            return TensorRTBackend(engines[name])
        art = manifest.find(name, "onnx", precision if name == model_graph else "fp32") or \
            manifest.find(name, "onnx", "fp32")
        if art is None:
            raise HmrTrtError(f"{export_dir}/manifest.json lists no ONNX for the {name} graph")
        limit = manifest.profile.get("max") if name == model_graph else None
        return OnnxRuntimeBackend(export_dir / art.path, threads=threads, max_batch=limit)

    with contextlib.ExitStack() as stack:
        temporal = stack.enter_context(make(model_graph))
        body = stack.enter_context(make(body_graph.name)) if body_graph is not None else None
        backbone = stack.enter_context(make(extractor.name)) if need_backbone and extractor is not None else None
        yield Backends(temporal, body, backbone, description, faces, weights_note, contract)
