"""``trt-bench``: how fast each registered model runs, against what, and how far from the floor.

A thin command over ``bench_sections`` (what is measured, per model, through the model adapter),
``bench_timing`` (round robin: systems measured in alternation; minimum, median, p90 and a noisy
flag per row) and ``bench_report`` (goals judged on the minimum; ``report.md``, ``results.json``
and PNG plots in ``--out``). ``--models a,b`` picks models (default: every registered one).
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import List, Optional

from hmr_trt import registry
from hmr_trt.errors import ConfigError

from .bench_report import BenchResult, evaluate_goals, write_report

__all__ = ["parse_models", "run_bench", "main"]


def parse_models(text: Optional[str]) -> List[str]:
    """``"a,b"`` -> ["a", "b"], each a registered model; None or "" -> every registered model."""
    if not text:
        return list(registry.names())
    models = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in models if m not in registry.MODELS]
    if unknown or not models:
        raise ConfigError(f"--models {text!r}: unknown model(s) {', '.join(unknown) or '(none given)'}; "
                          f"registered: {', '.join(registry.names())}")
    return list(dict.fromkeys(models))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_bench(out: Path, models: List[str], export_dir: Optional[Path] = None, video: Optional[Path] = None,
              tiny: bool = False, plots: bool = True, budget_s: Optional[float] = None,
              scene_export: Optional[Path] = None) -> BenchResult:
    """Every section for ``models``, sized for a 2-core CPU in minutes (``tiny``: seconds, for tests)."""
    import torch

    from .bench_sections import machine_info, run_sections

    torch.manual_seed(0)
    result = BenchResult(machine_info(), models=list(models))
    batches = run_sections(result, list(models), export_dir, video, tiny, budget_s)
    if scene_export is not None and export_dir is not None:  # both exports: the scene-vs-window section
        from .bench_sections import bench_scene_vs_window

        bench_scene_vs_window(result, export_dir, scene_export, video)
    result.memory["peak host RSS"] = peak_rss_mb()
    if torch.cuda.is_available():
        result.memory["peak GPU memory (torch)"] = torch.cuda.max_memory_allocated() / 2**20
    for model in models:
        evaluate_goals(result, model, batches[-1])
    write_report(result, out, plots=plots)
    return result


def main() -> None:
    import typer

    from hmr_trt.cli_common import run_cli

    def bench(
        out: Path = typer.Option(Path("out/bench"), help="Folder for report.md, results.json and plots."),
        models: Optional[str] = typer.Option(None, "--models", help="Comma-separated registered models "
                                             "(default: all)."),
        export: Optional[Path] = typer.Option(Path("out/demo/export"), help="A trt-export directory: its ONNX per "
                                              "precision, engines, and the end-to-end sections for its model."),
        video: Optional[Path] = typer.Option(Path("data/vtest.avi"), help="Video for the end-to-end section."),
        tiny: bool = typer.Option(False, help="Tiny configurations that run in seconds (tests)."),
        gpu: bool = typer.Option(False, help="Require a GPU (fail if none) instead of CPU-only sections."),
        budget_s: Optional[float] = typer.Option(None, "--budget-s", help="Round-robin seconds per model and "
                                                 "batch size (default 4; smaller on a shared machine)."),
        scene_export: Optional[Path] = typer.Option(None, help="A scene-model export (e.g. instancehmr): with a "
                                                    "window-model --export, the scene-vs-window section."),
    ) -> None:
        def job() -> None:
            import torch

            chosen = parse_models(models)
            if gpu and not torch.cuda.is_available():
                raise ConfigError("--gpu given but torch sees no CUDA device")
            exp = export if export is not None and (export / "manifest.json").is_file() else None
            vid = video if video is not None and video.is_file() else None
            t = time.perf_counter()
            if budget_s is not None and not budget_s > 0:
                raise ConfigError(f"--budget-s must be > 0, got {budget_s}")
            if scene_export is not None and not (scene_export / "manifest.json").is_file():
                raise ConfigError(f"--scene-export {scene_export}: no manifest.json (make one with trt-export)")
            result = run_bench(out, chosen, exp, vid, tiny=tiny, budget_s=budget_s, scene_export=scene_export)
            print(f"wrote {out}/report.md ({time.perf_counter() - t:.0f} s)")
            for g in result.goals:
                print(f"  {g['goal']}: {g['value']} (target {g['target']}) -> {g['met']}")

        run_cli(job)

    typer.run(bench)
