"""Pick and open the backends for an export directory: TensorRT where a matching engine exists, else ONNX Runtime.

``--backend auto`` picks TensorRT when the manifest lists an engine of the requested precision
built for this GPU and TensorRT version, and ONNX Runtime otherwise, and says which and why.
ONNX Runtime runs on the execution providers runtime/ort_providers.py chooses (TensorRT EP, CUDA
EP, CPU; ``--device`` / ``--ort-providers`` override), and each graph reports what its session
really runs on.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from hmr_trt.errors import ConfigError, HmrTrtError
from hmr_trt.manifest import Manifest

from .backends import Backend, OnnxRuntimeBackend
from .ort_providers import TENSORRT_EP, Machine, OrtGraph, choose_providers, parse_providers, short

BACKENDS = ("auto", "tensorrt", "onnxruntime")
FACES_NAME = "body_model_faces.npy"


@dataclass
class Backends:
    temporal: Backend
    body: Backend
    backbone: Optional[Backend]
    description: str
    faces: np.ndarray
    weights_note: str
    providers: Dict[str, List[str]] = field(default_factory=dict)  # graph -> what really ran it

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
                  need_backbone: bool = True, device: str = "auto",
                  ort_providers: Optional[str] = None) -> Iterator[Backends]:
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    export_dir = Path(export_dir)
    manifest = Manifest.read(export_dir)
    faces_path = export_dir / FACES_NAME
    faces = np.load(faces_path) if faces_path.is_file() else np.zeros((0, 3), np.int64)
    weights_note = "; ".join(n for n in manifest.notes if "weights" in n or "body model" in n)
    # ort: --device / --ort-providers (ONNX Runtime's execution providers, runtime/ort_providers.py)
    if backend == "tensorrt" and (device == "cpu" or ort_providers):
        raise ConfigError("--backend tensorrt runs on the GPU through the TensorRT API: drop --device cpu / "
                          "--ort-providers, or use --backend onnxruntime")
    if backend == "onnxruntime":
        engines, reason = None, "--backend onnxruntime"
    elif device == "cpu" or ort_providers:
        engines, reason = None, "--device cpu" if device == "cpu" else "--ort-providers"
    else:
        engines, reason = _tensorrt_choice(manifest, export_dir, precision)
    if backend == "tensorrt" and engines is None:
        raise HmrTrtError(f"--backend tensorrt: {reason}")
    engines = engines or {}
    ort_choice: List[_OrtChoice] = []  # made when the first graph needs ONNX Runtime

    def on_ort() -> _OrtChoice:
        if not ort_choice:
            ort_choice.append(_OrtChoice.make(device, ort_providers))
        return ort_choice[0]

    def make(name: str) -> Backend:
        """The graph's engine when there is one, else its ONNX (temporal at ``precision``) on ONNX Runtime."""
        if name in engines:
            from .trt_backend import TensorRTBackend

            return TensorRTBackend(engines[name])
        art = manifest.find(name, "onnx", precision if name == "temporal" else "fp32") or \
            manifest.find(name, "onnx", "fp32")
        if art is None:
            raise HmrTrtError(f"{export_dir}/manifest.json lists no ONNX for the {name} graph")
        return on_ort().backend(manifest, export_dir, art, threads)

    with contextlib.ExitStack() as stack:
        temporal = stack.enter_context(make("temporal"))
        body = stack.enter_context(make("body_model"))
        backbone = stack.enter_context(make("backbone")) if need_backbone else None
        opened = {"temporal": temporal, "body_model": body, "backbone": backbone}
        providers = {g: list(getattr(b, "ran_on", [])) or ["TensorRT API"] for g, b in opened.items() if b}
        if engines:
            description = f"tensorrt ({reason})"
        else:
            description = f"onnxruntime {'/'.join(short(p) for p in providers['temporal'])} ({reason})"
        if any(isinstance(b, OnnxRuntimeBackend) for b in opened.values()):
            description += "; graphs ran on " + ", ".join(
                f"{g}: {'+'.join(short(p) for p in ps)}" for g, ps in providers.items())
        yield Backends(temporal, body, backbone, description, faces, weights_note, providers)


@dataclass
class _OrtChoice:
    """ONNX Runtime's providers for this run, and each graph's backend on them (TensorRT EP options per graph)."""

    machine: Machine
    providers: List[str]
    strict: bool  # --ort-providers: a GPU provider asked for that does not start is an error
    need_gpu: bool  # --device cuda: a session left without a GPU provider is an error

    @classmethod
    def make(cls, device: str, ort_providers: Optional[str]) -> _OrtChoice:
        requested = parse_providers(ort_providers)
        machine = Machine.probe()
        return cls(machine, choose_providers(machine, device, requested), bool(requested), device == "cuda")

    def backend(self, manifest: Manifest, export_dir: Path, art, threads: int) -> OnnxRuntimeBackend:  # noqa: ANN001
        window = int(manifest.config.get("window") or 1)
        p = manifest.profile
        batch = (p["min"], p["opt"], p["max"]) if art.name == "temporal" else \
            (p["min"], p["opt"] * window, p["max"] * window)  # frames, as trt-build's profile for these graphs
        graph = OrtGraph(export_dir / art.path, art.precision, art.sha256,
                         {t.name: tuple(t.shape) for t in art.inputs}, {t.name: tuple(t.shape) for t in art.outputs},
                         batch)
        # the TensorRT EP builds for the profile: larger batches go in chunks, as on the TensorRT API route
        limit = batch[2] if art.name == "temporal" or TENSORRT_EP in self.providers else None
        return OnnxRuntimeBackend(export_dir / art.path, self.providers, threads=threads, max_batch=limit,
                                  graph=graph, machine=self.machine, strict=self.strict, need_gpu=self.need_gpu)
