"""``trt-build``: TensorRT engines from an hmr-trt export directory (or one of its ONNX files).

For an export directory it reads ``manifest.json`` and builds, at ``--precision``: the temporal
graph at exactly that precision, and the body model and backbone at the closest precision the
export has (``int8``: int8, fp16, fp32; ``fp16``: fp16, fp32). ``--out`` receives the engines, their
sidecars and a ``manifest.json``: the export's, with ONNX paths pointing back at the export and one
``engine`` artifact per graph (its EngineInfo under ``extra["engine"]``). Engines come from the
engine cache when their key matches. Without TensorRT or a GPU it stops with one line that says
what to install and where to run.

Batch profile: ``--batch MIN:OPT:MAX`` counts windows (default: the export's). The body model and
the backbone count frames, so an export directory builds them for ``MIN:OPT*T:MAX*T`` (T = window).
"""

from __future__ import annotations

import os
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, List, Optional

import typer
from typing_extensions import Annotated

from hmr_trt.cli_common import Precision, run_cli
from hmr_trt.errors import ConfigError, EngineError
from hmr_trt.manifest import Artifact, Manifest, TensorSpec, sha256_of, staged_output
from hmr_trt.profile import ShapeProfile
from hmr_trt.runtime.trt_compat import Target, check_precision, current_target, trt_available

from .builder import (
    DEFAULT_WORKSPACE_MIB,
    BuildFn,
    EngineInfo,
    engine_from_onnx,
    require_hmr_trt_graph,
    write_sidecar,
)
from .cache import cached_engine

__all__ = ["add_engines_to_export", "build_engine_for_onnx", "build_engines_for_export", "select_artifacts",
           "trt_available"]

Step = Callable[[str], ContextManager[Any]]
# Fallback order of the body model's and the backbone's precision for each requested precision.
COMPANION_PRECISIONS = {"fp32": ("fp32",), "fp16": ("fp16", "fp32"), "int8": ("int8", "fp16", "fp32")}
FRAME_GRAPHS = ("body_model", "backbone")  # leading axis counts frames, not windows



# ---------------------------------------------------------------------------------------------
# planning (no TensorRT needed)


def select_artifacts(manifest: Manifest, precision: str) -> List[Artifact]:
    """The ONNX artifacts to build for ``precision``: temporal exactly, body model / backbone closest."""
    check_precision(precision)
    temporal = manifest.find("temporal", "onnx", precision)
    if temporal is None:
        have = sorted(a.precision for a in manifest.artifacts if a.name == "temporal" and a.kind == "onnx")
        raise EngineError(f"the export has no {precision} temporal ONNX (it has: {', '.join(have) or 'none'}); "
                          f"make it with trt-export --precision {precision}")
    chosen = [temporal]
    for name in FRAME_GRAPHS:
        found = [manifest.find(name, "onnx", p) for p in COMPANION_PRECISIONS[precision]]
        found = [a for a in found if a is not None]
        if found:
            chosen.append(found[0])
        elif name == "body_model":
            raise EngineError("the export has no body_model ONNX: re-run trt-export")
    return chosen


def graph_profile(name: str, profile: ShapeProfile, window: int) -> ShapeProfile:
    """The temporal graph's leading axis counts windows; the body model's and backbone's count frames."""
    if name in FRAME_GRAPHS:
        return ShapeProfile(profile.min, profile.opt * window, profile.max * window)
    return profile


def _check_onnx(export_dir: Path, art: Artifact) -> Path:
    path = export_dir / art.path
    if not path.is_file():
        raise EngineError(f"{art.path} listed in {export_dir}/manifest.json is missing")
    require_hmr_trt_graph(path)
    if art.sha256 and sha256_of(path) != art.sha256:
        raise EngineError(f"{path} changed since the export (sha256 differs from manifest.json): re-run trt-export")
    return path


def _window(manifest: Manifest) -> int:
    window = manifest.config.get("window")
    if not isinstance(window, int) or window < 1:
        raise EngineError("manifest.json has no config.window: is this an hmr-trt export directory?")
    return window


def _read_export(export_dir: Path) -> Manifest:
    if not export_dir.is_dir():
        raise ConfigError(f"{export_dir}: no such export directory")
    return Manifest.read(export_dir)


# ---------------------------------------------------------------------------------------------
# building


def _engine_for(onnx: Path, engine_path: Path, precision: str, profile: ShapeProfile, opts: Dict[str, Any],
                source: str) -> Dict[str, Any]:
    """Build (or take from the cache) one engine at ``engine_path`` with its sidecar; returns info + hit."""
    common = dict(workspace_mib=opts["workspace_mib"], opt_level=opts["opt_level"], target=opts["target"],
                  build_fn=opts["build_fn"])
    if opts["use_cache"]:
        found = cached_engine(onnx, precision, profile, cache_dir=opts["cache_dir"], source=source, **common)
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
               profile: ShapeProfile, opts: Dict[str, Any], step: Step, final_dir: Path) -> List[Artifact]:
    window = _window(manifest)
    added = []
    for art in artifacts:
        onnx = _check_onnx(onnx_dir, art)
        g_profile = graph_profile(art.name, profile, window)
        file_name = f"{art.name}_{precision}.engine"
        with step(f"building the {art.name} engine ({art.precision} ONNX, batch {g_profile})"):
            built = _engine_for(onnx, engine_dir / file_name, art.precision, g_profile, opts, str(onnx_dir))
        onnx_rel = os.path.relpath(onnx.absolute(), final_dir.absolute())
        added.append(_engine_artifact(art, precision, file_name, built, onnx_rel, g_profile))
    for art in added:
        manifest.add(art)
    return added


def _options(workspace_mib: int, opt_level: int, cache_dir: Optional[Path], use_cache: bool,
             target: Optional[Target], build_fn: Optional[BuildFn]) -> Dict[str, Any]:
    return {"workspace_mib": workspace_mib, "opt_level": opt_level, "cache_dir": cache_dir, "use_cache": use_cache,
            "target": target or current_target(), "build_fn": build_fn}


def _note(manifest: Manifest, target: Target, precision: str, profile: ShapeProfile, window: int) -> None:
    manifest.tools["tensorrt"] = target.tensorrt_version
    manifest.notes.append(f"engines ({precision}): TensorRT {target.tensorrt_version} on {target.gpu_name} "
                          f"({target.compute_capability}); temporal batch {profile}, body_model/backbone frames "
                          f"{graph_profile('body_model', profile, window)}")


def add_engines_to_export(
    export_dir: Path,
    manifest: Manifest,
    precision: str,
    profile: Optional[ShapeProfile] = None,
    *,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    opt_level: int = 3,
    cache_dir: Optional[Path] = None,
    use_cache: bool = True,
    target: Optional[Target] = None,
    build_fn: Optional[BuildFn] = None,
    step: Optional[Step] = None,
) -> List[Artifact]:
    """Build engines beside the ONNX files of ``export_dir`` and add them to ``manifest`` (in place).

    For trt-export, inside its own staging directory, before it writes manifest.json.
    """
    export_dir = Path(export_dir)
    profile = profile or ShapeProfile(**manifest.profile)
    artifacts = select_artifacts(manifest, precision)
    opts = _options(workspace_mib, opt_level, cache_dir, use_cache, target, build_fn)
    added = _build_all(export_dir, export_dir, manifest, artifacts, precision, profile, opts,
                       step or (lambda _label: ExitStack()), export_dir)
    _note(manifest, opts["target"], precision, profile, _window(manifest))
    return added


def build_engines_for_export(
    export_dir: Path,
    precision: str,
    profile: Optional[ShapeProfile],
    out_dir: Path,
    *,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    opt_level: int = 3,
    cache_dir: Optional[Path] = None,
    use_cache: bool = True,
    target: Optional[Target] = None,
    build_fn: Optional[BuildFn] = None,
    step: Optional[Step] = None,
) -> Manifest:
    """Engines for an export directory written to ``out_dir`` (replaced only on success); its manifest."""
    export_dir, out_dir = Path(export_dir).absolute(), Path(out_dir).absolute()
    if out_dir == export_dir:
        raise ConfigError("--out must be a new directory, not the export directory itself")
    manifest = _read_export(export_dir)
    profile = profile or ShapeProfile(**manifest.profile)
    artifacts = select_artifacts(manifest, precision)
    for art in artifacts:
        _check_onnx(export_dir, art)
    opts = _options(workspace_mib, opt_level, cache_dir, use_cache, target, build_fn)
    exported = list(manifest.artifacts)
    with staged_output(out_dir) as stage:
        _build_all(export_dir, stage, manifest, artifacts, precision, profile, opts,
                   step or (lambda _label: ExitStack()), out_dir)
        for art in exported:  # the export's files stay where they are; point at them from --out
            if any(a is art for a in manifest.artifacts):
                art.path = os.path.relpath(export_dir / art.path, out_dir)
        _note(manifest, opts["target"], precision, profile, _window(manifest))
        manifest.profile = profile.to_dict()  # what the engines here were built for (windows)
        manifest.notes.append(f"ONNX paths are relative to this directory; the export is {export_dir}")
        manifest.write(stage)
    return manifest


def build_engine_for_onnx(
    onnx_path: Path,
    precision: str,
    profile: Optional[ShapeProfile],
    out_dir: Path,
    *,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    opt_level: int = 3,
    cache_dir: Optional[Path] = None,
    use_cache: bool = True,
    target: Optional[Target] = None,
    build_fn: Optional[BuildFn] = None,
    step: Optional[Step] = None,
) -> Manifest:
    """One engine from one hmr-trt ONNX file, written with a one-artifact manifest to ``out_dir``."""
    import json

    onnx_path, out_dir = Path(onnx_path).absolute(), Path(out_dir).absolute()
    meta = require_hmr_trt_graph(onnx_path)
    profile = profile or _metadata_profile(meta)
    opts = _options(workspace_mib, opt_level, cache_dir, use_cache, target, build_fn)
    step = step or (lambda _label: ExitStack())
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
        with step(f"building the {graph} engine ({precision}, batch {profile})"):
            built = _engine_for(onnx_path, stage / file_name, precision, profile, opts, str(onnx_path))
        manifest.add(_engine_artifact(onnx_art, precision, file_name, built, onnx_art.path, profile))
        manifest.tools["tensorrt"] = opts["target"].tensorrt_version
        manifest.write(stage)
    return manifest


def _metadata_profile(meta: Dict[str, str]) -> ShapeProfile:
    import json

    try:
        return ShapeProfile(**json.loads(meta["profile"]))
    except (KeyError, ValueError, TypeError):
        return ShapeProfile()


# ---------------------------------------------------------------------------------------------
# the command


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def build(
    source: Annotated[Path, typer.Argument(help="An hmr-trt export directory (manifest.json) or one of its ONNX files.")],
    precision: Annotated[Precision, typer.Option(help="fp32, fp16 or int8 (fp16/int8 need those ONNX files).")],
    out: Annotated[Path, typer.Option("--out", help="Output directory (created; replaced only on success).")],
    batch: Annotated[Optional[str], typer.Option(help="Batch profile MIN:OPT:MAX in windows (default: the export's).")] = None,
    workspace_mib: Annotated[int, typer.Option(help="Builder workspace limit in MiB.")] = DEFAULT_WORKSPACE_MIB,
    opt_level: Annotated[int, typer.Option(help="TensorRT builder optimization level 0..5.")] = 3,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Engine cache (default ~/.cache/hmr-trt/engines; "
                                                      "env HMR_TRT_CACHE).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Always build; do not read or fill the cache.")] = False,
) -> None:
    """Build TensorRT engines for an hmr-trt export and write them with a manifest to --out."""

    def job() -> None:
        from hmr_trt.cli_common import step

        profile = ShapeProfile.parse(batch) if batch is not None else None
        kwargs = dict(workspace_mib=workspace_mib, opt_level=opt_level, cache_dir=cache_dir, use_cache=not no_cache)
        _plan(source, precision.value, workspace_mib, opt_level)
        ok, reason = trt_available()
        if not ok:
            raise EngineError(f"trt-build needs TensorRT and an NVIDIA GPU: {reason}")
        if source.is_dir():
            manifest = build_engines_for_export(source, precision.value, profile, out, step=step, **kwargs)
        else:
            manifest = build_engine_for_onnx(source, precision.value, profile, out, step=step, **kwargs)
        print_summary(manifest, out)

    run_cli(job)


def _plan(source: Path, precision: str, workspace_mib: int, opt_level: int) -> None:
    """Every check that needs no TensorRT, so bad input is reported on any machine."""
    from .builder import check_build_options

    check_build_options(precision, workspace_mib, opt_level)
    if not source.exists():
        raise ConfigError(f"{source}: no such export directory or ONNX file")
    if source.is_dir():
        manifest = _read_export(source)
        _window(manifest)
        for art in select_artifacts(manifest, precision):
            _check_onnx(source, art)
    else:
        require_hmr_trt_graph(source)


def print_summary(manifest: Manifest, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"engines in {out}")
    for col in ("graph", "ONNX", "engine", "batch", "MiB", "build s"):
        table.add_column(col, justify="right")
    for art in manifest.artifacts:
        if art.kind != "engine":
            continue
        info, prof = art.extra["engine"], art.extra["profile"]
        seconds = "cached" if art.extra.get("cache_hit") else f"{info['build_seconds']:.1f}"
        table.add_row(art.name, art.extra["onnx_precision"], art.precision, f"{prof['min']}:{prof['opt']}:{prof['max']}",
                      f"{info['engine_bytes'] / 2**20:.1f}", seconds)
    console = Console(width=max(Console().width, 100))
    console.print(table)
    console.print(f"wrote {out}/manifest.json")


def main() -> None:
    app()
