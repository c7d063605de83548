"""Pick and open the backends for an export directory: TensorRT where a matching engine exists, else ONNX Runtime.

``--backend auto`` picks TensorRT when the manifest lists an engine of the requested precision
built for this GPU and TensorRT version, and ONNX Runtime otherwise, and says which and why.
ONNX Runtime runs on the execution providers runtime/ort_providers.py chooses (TensorRT EP, CUDA
EP, CPU; ``--device`` / ``--ort-providers`` override), and each graph reports what its session
really runs on. ``--backend triton`` sends every graph to a Triton server (runtime/triton_backend.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from hmr_trt.contract import ModelContract
from hmr_trt.errors import ConfigError, HmrTrtError
from hmr_trt.manifest import Manifest

from .backends import Backend, OnnxRuntimeBackend
from .graph_loader import check_contract, graph_from_manifest
from .ort_providers import TENSORRT_EP, Machine, OrtGraph, choose_providers, parse_providers, short

BACKENDS = ("auto", "tensorrt", "onnxruntime", "triton")
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
    providers: Dict[str, List[str]] = field(default_factory=dict)  # graph -> what really ran it
    step: Optional[Backend] = None  # role "step" of a causal recurrent model, opened with need_step (--emit last)

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
    """({graph: engine artifact}, reason) when TensorRT can run this export's engines here, else (None, why not)."""
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
    return dict(engines), "a matching engine exists"


@contextlib.contextmanager
def open_backends(export_dir: Path, backend: str = "auto", precision: str = "fp32", threads: int = 0,
                  need_backbone: bool = True, device: str = "auto", ort_providers: Optional[str] = None,
                  triton_url: Optional[str] = None, need_step: bool = False) -> Iterator[Backends]:
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    export_dir = Path(export_dir)
    manifest = Manifest.read(export_dir)
    # every graph opened below is first verified against the manifest and this contract (runtime/graph_loader.py)
    contract = check_contract(contract_of(manifest), str(export_dir / "manifest.json"))
    model_graph = contract.model_graph.name
    body_graph = contract.graph_for("body_model")
    extractor = contract.graph_for("feature_extractor")
    faces_path = export_dir / FACES_NAME
    faces = np.load(faces_path) if faces_path.is_file() else np.zeros((0, 3), np.int64)
    weights_note = "; ".join(n for n in manifest.notes if "weights" in n or "body model" in n)
    # --device / --ort-providers: ONNX Runtime's execution providers (runtime/ort_providers.py)
    if backend in ("tensorrt", "triton") and (device == "cpu" or ort_providers):
        raise ConfigError(f"--backend {backend} does not use ONNX Runtime's providers: drop --device cpu / "
                          "--ort-providers, or use --backend onnxruntime")
    if backend == "triton" and not triton_url:
        raise ConfigError("--backend triton needs --triton-url HOST:PORT")
    if backend in ("onnxruntime", "triton"):
        engines, reason = None, f"--backend {backend}"
    elif device == "cpu" or ort_providers:
        engines, reason = None, "--device cpu" if device == "cpu" else "--ort-providers"
    else:
        engines, reason = _tensorrt_choice(manifest, export_dir, precision, model_graph)
    if backend == "tensorrt" and engines is None:
        raise HmrTrtError(f"--backend tensorrt: {reason}")
    engines = engines or {}
    ort_choice: List[_OrtChoice] = []  # made when the first graph needs ONNX Runtime

    def on_ort() -> _OrtChoice:
        if not ort_choice:
            ort_choice.append(_OrtChoice.make(device, ort_providers))
        return ort_choice[0]

    def make(name: str) -> Backend:
        """The graph's engine when there is one, else its ONNX (the model graph at ``precision``) on ONNX Runtime,
        or the Triton model serving it."""
        if backend == "triton":
            from .triton_backend import TritonBackend

            return TritonBackend(str(triton_url), f"{contract.name}_{name}",
                                 expected_inputs=contract.graph(name).input_names)
        if name in engines:
            from .trt_backend import TensorRTBackend

            verified = graph_from_manifest(export_dir, manifest, engines[name], contract)
            return TensorRTBackend(verified.path, expect=verified)
        art = manifest.find(name, "onnx", precision if name == model_graph else "fp32") or \
            manifest.find(name, "onnx", "fp32")
        if art is None:
            raise HmrTrtError(f"{export_dir}/manifest.json lists no ONNX for the {name} graph")
        graph_from_manifest(export_dir, manifest, art, contract)
        return on_ort().backend(manifest, contract, export_dir, art, threads)

    with contextlib.ExitStack() as stack:
        temporal = stack.enter_context(make(model_graph))
        body = stack.enter_context(make(body_graph.name)) if body_graph is not None else None
        backbone = stack.enter_context(make(extractor.name)) if need_backbone and extractor is not None else None
        from .recurrent import recurrent_step_graph

        step_graph = recurrent_step_graph(contract) if need_step else None
        step = stack.enter_context(make(step_graph.name)) if step_graph is not None else None
        opened = {g: b for g, b in ((model_graph, temporal), ("body_model", body), ("backbone", backbone),
                                    ("step", step)) if b is not None}  # a model graph named "step" (WHAM) kept
        providers = {g: list(getattr(b, "ran_on", [])) or [b.name] for g, b in opened.items()}
        if backend == "triton":
            description = f"triton at {triton_url}"
        elif engines:
            description = f"tensorrt ({reason})"
        else:
            description = f"onnxruntime {'/'.join(short(p) for p in providers[model_graph])} ({reason})"
        if any(isinstance(b, OnnxRuntimeBackend) for b in opened.values()):
            description += "; graphs ran on " + ", ".join(
                f"{g}: {'+'.join(short(p) for p in ps)}" for g, ps in providers.items())
        yield Backends(temporal, body, backbone, description, faces, weights_note, contract, providers, step)


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

    def backend(self, manifest: Manifest, contract: ModelContract, export_dir: Path, art,  # noqa: ANN001
                threads: int) -> OnnxRuntimeBackend:
        p = manifest.profile
        role = contract.graph(art.name).role if art.name in {g.name for g in contract.graphs} else "model"
        # the body model and the feature extractor count frames (emitted / windowed), as trt-build's profiles do
        frames = contract.rows_per_item(art.name) if role != "model" else 1
        batch = (p["min"], p["opt"] * frames, p["max"] * frames)
        graph = OrtGraph(export_dir / art.path, art.precision, art.sha256,
                         {t.name: tuple(t.shape) for t in art.inputs}, {t.name: tuple(t.shape) for t in art.outputs},
                         batch)
        # the TensorRT EP builds for the profile: larger batches go in chunks, as on the TensorRT API route
        limit = batch[2] if role == "model" or TENSORRT_EP in self.providers else None
        return OnnxRuntimeBackend(export_dir / art.path, self.providers, threads=threads, max_batch=limit,
                                  graph=graph, machine=self.machine, strict=self.strict, need_gpu=self.need_gpu)
