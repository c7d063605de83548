"""``trt-build``: TensorRT engines from an hmr-trt export directory (or one of its ONNX files).

A thin command over ``export_engines`` (which graphs, at which precision and batch profile, all
from the export's model contract) and ``builder``. ``--out`` receives the engines, their sidecars
and a ``manifest.json``. Without TensorRT or a GPU it stops with one line that says what to
install and where to run; every check that needs no TensorRT runs first, on any machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from hmr_trt.cli_common import Precision, run_cli
from hmr_trt.errors import EngineError
from hmr_trt.manifest import Manifest
from hmr_trt.profile import ShapeProfile
from hmr_trt.runtime.trt_compat import trt_available

from .builder import DEFAULT_WORKSPACE_MIB
from .export_engines import (
    BuildOptions,
    add_engines_to_export,
    build_engine_for_onnx,
    build_engines_for_export,
    plan_build,
)

__all__ = ["add_engines_to_export", "app", "main"]  # add_engines_to_export: trt-export imports it from here


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def build(
    source: Annotated[Path, typer.Argument(help="An hmr-trt export directory (manifest.json) or one of its ONNX files.")],
    precision: Annotated[Precision, typer.Option(help="fp32, fp16 or int8 (fp16/int8 need those ONNX files).")],
    out: Annotated[Path, typer.Option("--out", help="Output directory (created; replaced only on success).")],
    batch: Annotated[Optional[str], typer.Option(help="Batch profile MIN:OPT:MAX of the model graph (windows for window models; default: the export's).")] = None,
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
        plan_build(source, precision.value, workspace_mib, opt_level)
        ok, reason = trt_available()
        if not ok:
            raise EngineError(f"trt-build needs TensorRT and an NVIDIA GPU: {reason}")
        options = BuildOptions(workspace_mib, opt_level, cache_dir, use_cache=not no_cache)
        build = build_engines_for_export if source.is_dir() else build_engine_for_onnx
        manifest = build(source, precision.value, profile, out, options=options, step=step)
        print_summary(manifest, out)

    run_cli(job)


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
