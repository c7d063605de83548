"""Verified graphs: the one way a run, trt-build and trt-triton take a graph file from an export folder.

An export folder is trusted as far as its ``manifest.json``, and no further. ``graph_from_manifest``
returns an artifact's file only once

1. the file is there (named as the manifest lists it, under the folder as the user gave it);
2. it is the file the export wrote: an ONNX file's sha256 is the manifest's (hashed once per file and
   process, ``file_sha256``); an engine's sha256 is compared with the manifest's by
   ``engine_loader.engine_from_path`` as it reads the bytes (``VerifiedGraph.sha256``), so a large
   engine is hashed once, and its sidecar must say it was built from this export's ONNX of that graph;
3. its inputs and outputs (names, dtypes, shapes: read from the ONNX protobuf, no onnx package) are
   those of the model contract's graph. An engine's are compared once TensorRT has deserialized it
   (``io_problems``, called by ``TensorRTBackend``); before that, those the manifest records for it and
   those of the ONNX it was built from (read, not hashed: the sidecar's onnx_sha256 ties the two).

``contract_from_manifest`` first refuses a contract that contradicts itself (``window`` 8 while its
model graph takes 16 frames). Every refusal is one ``GraphError`` line naming the file that differs.
The runtime's backends (runtime/backends_select.py), the engine builder (engines/export_engines.py)
and the Triton repository writer (engines/triton_repo.py) all go through here.

Torch-free and engine-builder-free, Python 3.9.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from hmr_trt.contract import GraphSpec, ModelContract
from hmr_trt.errors import GraphError, HmrTrtError
from hmr_trt.fileio import path_problem
from hmr_trt.manifest import MANIFEST_NAME, Artifact, Manifest, sha256_of

from .onnx_wire import OnnxTensor, read_onnx_info

PathLike = Union[str, Path]
Dim = Union[int, str, None]
RERUN = "re-run trt-export (and trt-build for engines)"


@dataclass(frozen=True)
class VerifiedGraph:
    path: Path  # the file, under the export folder as the user gave it
    artifact: Artifact
    spec: GraphSpec  # the contract's graph the file was checked against
    sha256: str  # the manifest's; engine_from_path compares an engine's bytes with it


# ---------------------------------------------------------------------------------------------
# sha256, once per file and process


_SHA256: Dict[Tuple[str, int, int, int, int], str] = {}
RACY_NS = 2_000_000_000  # files modified less than this before hashing are hashed again next time


def file_sha256(path: PathLike) -> str:
    """sha256 of a file, remembered by (real path, size, mtime, ctime, inode): a process that opens one export
    many times (several videos, a Ray actor) hashes each file once; a changed file is hashed again (``cp -p``
    can carry an mtime over, not a ctime). 594 MiB (full coseg) hash in about 1.5 s on a 2-core CPU, a fifth
    to a third of ONNX Runtime's session creation for that file."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key in _SHA256:
        return _SHA256[key]
    started = time.time_ns()
    digest = sha256_of(path)
    # As git does with its index: a file modified within the file system's timestamp granularity of the
    # hashing could change again without changing its mtime, so it is not remembered.
    if st.st_mtime_ns < started - RACY_NS:
        _SHA256[key] = digest
    return digest


# ---------------------------------------------------------------------------------------------
# the contract: consistent with itself, then the files with it


def _shape(shape: Optional[Sequence[Dim]]) -> str:
    if shape is None:
        return "(no shape)"
    return "(" + ", ".join(str(d) if d not in ("", None) else "?" for d in shape) + ")"


def contract_problems(contract: ModelContract) -> List[str]:
    """Where a contract's numbers contradict its model graph (window, feature width, emitted frames, image sizes)."""
    problems: List[str] = []
    model = contract.model_graph
    first = model.inputs[0] if model.inputs else None

    def axis(spec: Sequence[Dim], i: int) -> Dim:
        return spec[i] if -len(spec) <= i < len(spec) else None

    if contract.family == "window" and first is not None:
        if axis(first.shape, 1) != contract.window:
            problems.append(f"window is {contract.window} but its {model.name} graph takes {first.name} "
                            f"{_shape(first.shape)}")
        if axis(first.shape, -1) != contract.feature_dim:
            problems.append(f"feature_dim is {contract.feature_dim} but its {model.name} graph takes {first.name} "
                            f"{_shape(first.shape)}")
        frames = len(contract.emit_positions())
        for out in model.outputs:
            if axis(out.shape, 1) != frames:
                problems.append(f"emit {contract.emit!r} of window {contract.window} gives {frames} frame(s) per "
                                f"window but its {model.name} graph's {out.name} is {_shape(out.shape)}")
    crop = (contract.crop_size,) * 2
    if contract.body_model == "keypoints":  # top-down keypoint crops keep their aspect (ViTPose: 256 x 192)
        crop = (contract.crop_size, int(round(contract.crop_size * contract.crop_aspect)))
    if contract.family == "frame" and first is not None and tuple(first.shape[-2:]) != crop:
        problems.append(f"crop_size is {contract.crop_size} but its {model.name} graph takes {first.name} "
                        f"{_shape(first.shape)}")
    if contract.family == "scene" and first is not None and tuple(first.shape[1:3]) != (contract.image_size,) * 2:
        problems.append(f"image_size is {contract.image_size} but its {model.name} graph takes {first.name} "
                        f"{_shape(first.shape)}")
    return problems


def check_contract(contract: ModelContract, where: str) -> ModelContract:
    """``contract`` once it does not contradict itself; one GraphError line otherwise."""
    problems = contract_problems(contract)
    if problems:
        raise GraphError(f"the {contract.name} contract in {where} contradicts itself: {'; '.join(problems)}: "
                         f"the manifest was edited or damaged; {RERUN}")
    return contract


def contract_from_manifest(manifest: Manifest, where: str = MANIFEST_NAME) -> ModelContract:
    """The export's contract once it is consistent (a manifest without one: HmrTrtError, re-export)."""
    return check_contract(manifest.model_contract(), where)


def _dim_matches(found: Dim, expected: Dim) -> bool:
    if isinstance(expected, int):
        return not isinstance(found, int) or found == expected  # an unnamed/symbolic axis cannot contradict
    return not isinstance(found, int) or found < 0  # a dynamic axis must not be fixed in the file


def io_problems(inputs: Iterable[Tuple[str, str, Optional[Sequence[Dim]]]],
                outputs: Iterable[Tuple[str, str, Optional[Sequence[Dim]]]], spec: GraphSpec) -> List[str]:
    """Differences between a graph's (name, dtype, shape) inputs/outputs and the contract's ``spec``;
    dtype "?" or a shape None is not compared."""
    problems: List[str] = []
    for kind, found, expected in (("input", list(inputs), spec.inputs), ("output", list(outputs), spec.outputs)):
        have = {name: (dtype, shape) for name, dtype, shape in found}
        want = {t.name: t for t in expected}
        missing, extra = [n for n in want if n not in have], [n for n in have if n not in want]
        if missing or extra:
            problems.append(f"{kind}s {sorted(have)}, the contract says {sorted(want)}")
        for name in (n for n in want if n in have):
            dtype, shape = have[name]
            t = want[name]
            same_dtype = dtype in ("?", t.dtype)
            same_shape = shape is None or (len(shape) == len(t.shape) and
                                           all(_dim_matches(f, e) for f, e in zip(shape, t.shape)))
            if not (same_dtype and same_shape):
                problems.append(f"{kind} {name} is {dtype} {_shape(shape)}, the contract says {t.dtype} {_shape(t.shape)}")
    return problems


def _tensors(tensors: Iterable[OnnxTensor]) -> List[Tuple[str, str, Optional[Sequence[Dim]]]]:
    return [(t.name, t.dtype, t.shape) for t in tensors]


# ---------------------------------------------------------------------------------------------
# the files


def _spec_for(contract: ModelContract, art: Artifact, manifest_path: Path) -> GraphSpec:
    try:
        return contract.graph(art.name)
    except HmrTrtError as exc:
        raise GraphError(f"{manifest_path} lists a {art.name} graph ({art.path}) that its {contract.name} contract "
                         f"does not have: {RERUN}") from exc


def _verify_onnx(path: Path, art: Artifact, spec: GraphSpec, manifest: Manifest, manifest_path: Path,
                 hash_file: bool = True) -> None:
    info = read_onnx_info(path)
    if hash_file and not art.sha256:
        raise GraphError(f"{manifest_path} records no sha256 for {path.name} (trt-export always does): the manifest "
                         f"was edited; {RERUN}")
    if hash_file and file_sha256(path) != art.sha256:
        model, graph = info.metadata.get("hmr_trt.model"), info.metadata.get("hmr_trt.graph")
        what = ""
        if model and graph and (model, graph) != (manifest.model, art.name):
            what = f" (it is {model}'s {graph} graph, not {manifest.model}'s {art.name})"
        raise GraphError(f"{path} is not the file {manifest_path} records for the {art.name} graph{what}: its "
                         f"sha256 differs, so it was replaced or modified after the export; {RERUN}")
    problems = io_problems(_tensors(info.inputs), _tensors(info.outputs), spec)
    if problems:
        raise GraphError(f"{path} contradicts the {manifest.model} contract in {manifest_path} ({art.name} graph): "
                         f"{'; '.join(problems)}; {RERUN}")


def _verify_engine(path: Path, art: Artifact, spec: GraphSpec, manifest: Manifest, root: Path,
                   manifest_path: Path) -> None:
    from .engine_loader import read_sidecar

    problems = io_problems([(t.name, t.dtype, t.shape) for t in art.inputs],
                           [(t.name, t.dtype, t.shape) for t in art.outputs], spec)
    if problems:
        raise GraphError(f"{manifest_path} records the {art.name} engine {art.path} with inputs and outputs that "
                         f"contradict its {manifest.model} contract: {'; '.join(problems)}; {RERUN}")
    info = read_sidecar(path)
    if info.graph and info.graph != art.name:
        raise GraphError(f"{path} was built from a {info.graph} graph, but {manifest_path} lists it as the "
                         f"{art.name} engine: {RERUN}")
    onnx_rel = art.extra.get("onnx")
    onnx_art = next((a for a in manifest.artifacts if a.kind == "onnx" and a.name == art.name
                     and a.precision == art.extra.get("onnx_precision", a.precision)
                     and (onnx_rel is None or Path(a.path) == Path(onnx_rel))), None)
    if onnx_art is not None and onnx_art.sha256 and info.onnx_sha256 and info.onnx_sha256 != onnx_art.sha256:
        raise GraphError(f"{path} was built from another ONNX than the {art.name} graph {manifest_path} records "
                         f"(its sidecar's onnx_sha256 differs): the engine was replaced; {RERUN}")
    if onnx_art is not None and path_problem(root / onnx_art.path) is None:  # not hashed: the engine is what runs
        _verify_onnx(root / onnx_art.path, onnx_art, spec, manifest, manifest_path, hash_file=False)


def graph_from_manifest(export_dir: PathLike, manifest: Manifest, art: Artifact,
                        contract: Optional[ModelContract] = None, hash_engine: bool = False) -> VerifiedGraph:
    """``art``'s file under ``export_dir`` once it is the file the manifest records and matches the contract
    (see the module docstring); ``contract``: the manifest's, already checked (default: read and checked here).
    ``hash_engine``: compare an engine's sha256 here too (consumers that copy engines instead of loading them)."""
    root = Path(export_dir)
    manifest_path = root / MANIFEST_NAME
    contract = contract if contract is not None else contract_from_manifest(manifest, str(manifest_path))
    spec = _spec_for(contract, art, manifest_path)
    path = root / art.path
    problem = path_problem(path)
    if problem:
        raise GraphError(f"{path} ({art.name} graph listed in {manifest_path}): {problem}; {RERUN}")
    if art.kind == "engine":
        _verify_engine(path, art, spec, manifest, root, manifest_path)
        if hash_engine and art.sha256 and file_sha256(path) != art.sha256:
            raise GraphError(f"{path} is not the engine {manifest_path} records for the {art.name} graph (its sha256 "
                             f"differs): it was replaced or modified after trt-build; {RERUN}")
    else:
        _verify_onnx(path, art, spec, manifest, manifest_path)
    return VerifiedGraph(path, art, spec, art.sha256)
