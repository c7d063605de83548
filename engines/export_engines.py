"""TensorRT engines for an hmr-trt export directory (or one of its ONNX files): the library behind trt-build.

Which graphs are built, and at which precision, comes from the model contract the export's
``manifest.json`` records (``Manifest.model_contract()``), never from graph names:

- a graph with ``precision_passes`` (the model graph, e.g. coseg's temporal graph) is built at
  exactly the requested precision; the export must hold that ONNX;
- every other graph (body model, feature extractor: they stay FP32 whole) is built from the
  closest precision the export has (``int8``: int8, fp16, fp32; ``fp16``: fp16, fp32); a missing
  feature extractor is skipped (the runtime can read precomputed features), anything else is an error.

Batch profile: ``MIN:OPT:MAX`` counts what the model graph's leading axis counts (windows for the
``window`` family). Graphs that count frames scale OPT and MAX by the frames a window makes:
the body model by the frames a window emits (T for ``emit=all``, 1 for ``emit=middle``), the
feature extractor by the window length T. Engines come from the engine cache when their key matches.
A manifest written before the contract existed is refused with one line: re-export.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, List, Optional

from hmr_trt.contract import ModelContract
from hmr_trt.errors import ConfigError, EngineError, HmrTrtError
from hmr_trt.fileio import path_problem
from hmr_trt.manifest import Artifact, Manifest, TensorSpec, sha256_of, staged_output
from hmr_trt.profile import ShapeProfile
from hmr_trt.runtime.graph_loader import check_contract, graph_from_manifest
from hmr_trt.runtime.trt_compat import Target, check_precision, current_target

from .builder import DEFAULT_WORKSPACE_MIB, BuildFn, check_build_options, engine_from_onnx
from .cache import cached_engine
from .onnx_metadata import require_hmr_trt_graph
from .sidecar import EngineInfo, write_sidecar

Step = Callable[[str], ContextManager[Any]]
# Fallback order, for each requested precision, of the graphs that get no precision passes.
COMPANION_PRECISIONS = {"fp32": ("fp32",), "fp16": ("fp16", "fp32"), "int8": ("int8", "fp16", "fp32")}
OPTIONAL_ROLES = ("feature_extractor",)  # an export may lack these; the runtime then needs features


def _no_step(_label: str) -> ContextManager[Any]:
    return ExitStack()


@dataclass(frozen=True)
class BuildOptions:
    """How to build: builder limits, the engine cache, the target machine and the build function."""

    workspace_mib: int = DEFAULT_WORKSPACE_MIB
    opt_level: int = 3
    cache_dir: Optional[Path] = None
    use_cache: bool = True
    target: Optional[Target] = None  # None: this machine (needs TensorRT and a GPU)
    build_fn: Optional[BuildFn] = None  # None: builder.build_serialized (TensorRT)

    def resolved(self) -> BuildOptions:
        if self.target is not None:
            return self
        return BuildOptions(self.workspace_mib, self.opt_level, self.cache_dir, self.use_cache, current_target(),
                            self.build_fn)


# ---------------------------------------------------------------------------------------------
# planning (no TensorRT needed)


def read_export(export_dir: Path) -> Manifest:
    """The manifest of an export directory."""
    export_dir = Path(export_dir)
    problem = path_problem(export_dir, "dir")
    if problem:
        raise ConfigError(f"export folder {export_dir}: {problem}")
    return Manifest.read(export_dir)


def contract_of(manifest: Manifest, where: str = "manifest.json") -> ModelContract:
    """The export's model contract once it does not contradict itself; a manifest written before contracts
    existed is refused (re-export)."""
    if not manifest.contract:
        raise EngineError(f"{where} records no model contract (it was written by an older hmr-trt, before "
                          f"contracts): re-export the {manifest.model} model with trt-export")
    try:
        contract = manifest.model_contract()
    except HmrTrtError as exc:
        raise EngineError(f"{where}: {exc}; re-export with trt-export") from exc
    return check_contract(contract, where)


def select_artifacts(manifest: Manifest, precision: str) -> List[Artifact]:
    """The ONNX artifacts to build for ``precision``, one per contract graph (see the module docstring)."""
    check_precision(precision)
    contract = contract_of(manifest)
    chosen = []
    for graph in contract.graphs:
        have = sorted(a.precision for a in manifest.artifacts if a.name == graph.name and a.kind == "onnx")
        wanted = (precision,) if graph.precision_passes else COMPANION_PRECISIONS[precision]
        found = next((a for a in (manifest.find(graph.name, "onnx", p) for p in wanted) if a is not None), None)
        if found is not None:
            chosen.append(found)
        elif graph.precision_passes:
            raise EngineError(f"the export has no {precision} {graph.name} ONNX (it has: {', '.join(have) or 'none'}); "
                              f"make it with trt-export --precision {precision}")
        elif graph.role not in OPTIONAL_ROLES:
            raise EngineError(f"the export has no {graph.name} ONNX ({graph.role} of {contract.name}): "
                              "re-run trt-export")
    return chosen


def graph_profile(contract: ModelContract, name: str, profile: ShapeProfile) -> ShapeProfile:
    """The batch profile of graph ``name`` when the model graph's is ``profile`` (``ModelContract.rows_per_item``)."""
    scale = contract.rows_per_item(name)
    if scale == 1:
        return profile
    return ShapeProfile(profile.min, profile.opt * scale, profile.max * scale)


def check_onnx(export_dir: Path, art: Artifact, manifest: Manifest) -> Path:
    """The artifact's ONNX path once it is an hmr-trt graph and the verified loader (runtime/graph_loader.py)
    finds it the file the manifest records, its inputs and outputs the contract's."""
    path = export_dir / art.path
    if path_problem(path) is None:
        require_hmr_trt_graph(path)
    return graph_from_manifest(export_dir, manifest, art, contract_of(manifest, str(export_dir / "manifest.json"))).path


def plan_build(source: Path, precision: str, workspace_mib: int, opt_level: int) -> None:
    """Every check that needs no TensorRT, so bad input is reported on any machine."""
    check_build_options(precision, workspace_mib, opt_level)
    problem = path_problem(source, "any")
    if problem:
        raise ConfigError(f"{source}: no such export directory or ONNX file" if problem == "not found" else
                          f"{source}: {problem} (give an export folder or one of its ONNX files)")
    if source.is_dir():
        manifest = read_export(source)
        for art in select_artifacts(manifest, precision):
            check_onnx(source, art, manifest)
    else:
        require_hmr_trt_graph(source)


# ---------------------------------------------------------------------------------------------
# building


def _engine_for(onnx: Path, engine_path: Path, precision: str, profile: ShapeProfile, opts: BuildOptions,
                source: str) -> Dict[str, Any]:
    """Build (or take from the cache) one engine at ``engine_path`` with its sidecar; returns info + hit."""
    common = dict(workspace_mib=opts.workspace_mib, opt_level=opts.opt_level, target=opts.target,
                  build_fn=opts.build_fn)
    if opts.use_cache:
        found = cached_engine(onnx, precision, profile, cache_dir=opts.cache_dir, source=source, **common)
        shutil.copyfile(found.path, engine_path)
        info = EngineInfo.from_dict({**found.info.to_dict(), "source": source})
        write_sidecar(engine_path, info)
        return {"info": info, "hit": found.hit}
    info = engine_from_onnx(onnx, engine_path, precision, profile, source=source, **common)
    return {"info": info, "hit": False}


def _engine_artifact(art: Artifact, precision: str, file_name: str, built: Dict[str, Any], onnx_rel: str,
                     profile: ShapeProfile) -> Artifact:
    info: EngineInfo = built["info"]
    extra = {"engine": info.to_dict(), "onnx": onnx_rel, "onnx_precision": art.precision,
             "profile": profile.to_dict(), "cache_hit": built["hit"]}
    return Artifact(art.name, file_name, "engine", precision, info.engine_sha256,
                    [TensorSpec(**vars(t)) for t in art.inputs], [TensorSpec(**vars(t)) for t in art.outputs],
                    extra=extra)


def _build_all(onnx_dir: Path, engine_dir: Path, manifest: Manifest, artifacts: List[Artifact], precision: str,
               profile: ShapeProfile, opts: BuildOptions, step: Step, final_dir: Path) -> List[Artifact]:
    contract = contract_of(manifest)
    added = []
    for art in artifacts:
        onnx = check_onnx(onnx_dir, art, manifest)
        g_profile = graph_profile(contract, art.name, profile)
        file_name = f"{art.name}_{precision}.engine"
        with step(f"building the {art.name} engine ({art.precision} ONNX, batch {g_profile})"):
            built = _engine_for(onnx, engine_dir / file_name, art.precision, g_profile, opts, str(onnx_dir))
        onnx_rel = os.path.relpath(onnx.absolute(), final_dir.absolute())
        added.append(_engine_artifact(art, precision, file_name, built, onnx_rel, g_profile))
    for art in added:
        manifest.add(art)
    return added


def _note(manifest: Manifest, target: Target, precision: str, profile: ShapeProfile) -> None:
    contract = contract_of(manifest)
    profiles = ", ".join(f"{g.name} {graph_profile(contract, g.name, profile)} ({g.batch_axis})"
                         for g in contract.graphs)
    manifest.tools["tensorrt"] = target.tensorrt_version
    manifest.notes.append(f"engines ({precision}): TensorRT {target.tensorrt_version} on {target.gpu_name} "
                          f"({target.compute_capability}); batch profiles: {profiles}")


def add_engines_to_export(export_dir: Path, manifest: Manifest, precision: str,
                          profile: Optional[ShapeProfile] = None, *, options: Optional[BuildOptions] = None,
                          step: Optional[Step] = None) -> List[Artifact]:
    """Build engines beside the ONNX files of ``export_dir`` and add them to ``manifest`` (in place).

    For trt-export, inside its own staging directory, before it writes manifest.json; ``manifest``
    must already record the model contract.
    """
    export_dir = Path(export_dir)
    profile = profile or ShapeProfile(**manifest.profile)
    artifacts = select_artifacts(manifest, precision)
    opts = (options or BuildOptions()).resolved()
    added = _build_all(export_dir, export_dir, manifest, artifacts, precision, profile, opts, step or _no_step,
                       export_dir)
    _note(manifest, opts.target, precision, profile)
    return added


def build_engines_for_export(export_dir: Path, precision: str, profile: Optional[ShapeProfile], out_dir: Path, *,
                             options: Optional[BuildOptions] = None, step: Optional[Step] = None) -> Manifest:
    """Engines for an export directory written to ``out_dir`` (replaced only on success); its manifest.

    ``out_dir`` receives the engines, their sidecars and a ``manifest.json``: the export's, with
    ONNX paths pointing back at the export and one ``engine`` artifact per graph (its EngineInfo
    under ``extra["engine"]``).
    """
    export_dir, out_dir = Path(export_dir).absolute(), Path(out_dir).absolute()
    if out_dir == export_dir:
        raise ConfigError("--out must be a new directory, not the export directory itself")
    manifest = read_export(export_dir)
    profile = profile or ShapeProfile(**manifest.profile)
    artifacts = select_artifacts(manifest, precision)
    for art in artifacts:
        check_onnx(export_dir, art, manifest)
    opts = (options or BuildOptions()).resolved()
    exported = list(manifest.artifacts)
    with staged_output(out_dir) as stage:
        _build_all(export_dir, stage, manifest, artifacts, precision, profile, opts, step or _no_step, out_dir)
        for art in exported:  # the export's files stay where they are; point at them from --out
            if any(a is art for a in manifest.artifacts):
                art.path = os.path.relpath(export_dir / art.path, out_dir)
        _note(manifest, opts.target, precision, profile)
        manifest.profile = profile.to_dict()  # what the engines here were built for (model-graph items)
        manifest.notes.append(f"ONNX paths are relative to this directory; the export is {export_dir}")
        manifest.write(stage)
    return manifest


def build_engine_for_onnx(onnx_path: Path, precision: str, profile: Optional[ShapeProfile], out_dir: Path, *,
                          options: Optional[BuildOptions] = None, step: Optional[Step] = None) -> Manifest:
    """One engine from one hmr-trt ONNX file, written with a one-artifact manifest to ``out_dir``."""
    onnx_path, out_dir = Path(onnx_path).absolute(), Path(out_dir).absolute()
    meta = require_hmr_trt_graph(onnx_path)
    profile = profile or _metadata_profile(meta)
    opts = (options or BuildOptions()).resolved()
    try:
        config = json.loads(meta.get("config", "{}"))
    except ValueError:
        config = {}
    manifest = Manifest(model=meta.get("model", meta["graph"]), config=config, profile=profile.to_dict())
    graph = meta["graph"]
    onnx_art = Artifact(graph, os.path.relpath(onnx_path, out_dir), "onnx", precision, sha256_of(onnx_path), [], [])
    manifest.add(onnx_art)
    with staged_output(out_dir) as stage:
        file_name = f"{graph}_{precision}.engine"
        with (step or _no_step)(f"building the {graph} engine ({precision}, batch {profile})"):
            built = _engine_for(onnx_path, stage / file_name, precision, profile, opts, str(onnx_path))
        manifest.add(_engine_artifact(onnx_art, precision, file_name, built, onnx_art.path, profile))
        manifest.tools["tensorrt"] = opts.target.tensorrt_version
        manifest.write(stage)
    return manifest


def _metadata_profile(meta: Dict[str, str]) -> ShapeProfile:
    try:
        return ShapeProfile(**json.loads(meta["profile"]))
    except (KeyError, ValueError, TypeError):
        return ShapeProfile()
