"""``trt-bench``: how fast a registered model runs, against what, and how far from the floor.

A thin command over ``bench_sections`` (what is measured, per model, through the model adapter),
``bench_timing`` (round robin: systems measured in alternation; minimum, median, p90 and a noisy
flag per row), ``bench_store`` (one record per finished model: resumable runs, the README's zoo
table) and ``bench_report`` (goals judged on the minimum; ``report.md``, ``results.json`` and PNG
plots in ``--out``).

``trt-bench`` (``make bench``) measures the default model end to end in minutes: an existing export
of it is reused when its files match its manifest, else one is made; then torch eager against ONNX
Runtime at batch 1 and 8, the per-frame step where the model has one, the feature extractor, the
runtime on the first frames of the sample video. ``--models all --plan full`` (``make bench-zoo``)
measures every registered model; models already measured with that plan in ``--out`` are kept
(``--force`` measures them again); Ctrl-C or SIGTERM stops the run with the finished models saved and
reported (exit 130). A batch size whose call is estimated, linearly from the largest
smaller batch measured, to take over the plan's cap (30 s; ``--max-call-s``) is skipped and reported
as skipped with its estimate, never dropped silently. Every measurement prints one line as it ends, flushed, so a pipe
or a CI log shows the run as it goes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import resource
import signal
import sys
import time
from enum import Enum
from pathlib import Path
from typing import IO, Callable, Iterator, List, Optional, Sequence

from hmr_trt import registry
from hmr_trt.errors import ConfigError, HmrTrtError

from .bench_report import BenchResult, evaluate_goals, write_report
from .bench_store import Mark, ModelRecord, RecordStore, rewrite_between_markers, update_readme

__all__ = ["parse_models", "run_bench", "check_export", "resolve_export", "Progress", "main"]

DEMO_EXPORT = Path("out/demo/export")  # `make demo`'s export of the default model: reused when it checks out
EXPORT_PROFILE = "1:8:64"  # the batch profile of an export made here (the demo's)


class Plan(str, Enum):
    """--plan: how much to measure per model (bench_sections.PLANS)."""

    quick = "quick"
    full = "full"


def parse_models(text: Optional[str]) -> List[str]:
    """``"a,b"`` -> ["a", "b"], each a registered model; ``"all"`` -> every registered model; None or "" -> the
    default model."""
    if not text:
        return [registry.DEFAULT_MODEL]
    if text.strip() == "all":
        return list(registry.names())
    models = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in models if m not in registry.MODELS]
    if unknown or not models:
        raise ConfigError(f"--models {text!r}: unknown model(s) {', '.join(unknown) or '(none given)'}; "
                          f"registered: {', '.join(registry.names())} (or all)")
    return list(dict.fromkeys(models))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Progress:
    """One line per event, written and flushed at once whether or not the stream is a terminal (a pipe, a
    CI log or ``make bench | tee`` shows the run as it goes). Lines start with the minutes:seconds since
    the run began."""

    def __init__(self, stream: Optional[IO[str]] = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.clock = clock
        self.start = clock()

    def __call__(self, message: str) -> None:
        stream = self.stream if self.stream is not None else sys.stdout  # sys.stdout at call time (pytest capture)
        minutes, seconds = divmod(int(self.clock() - self.start), 60)
        stream.write(f"[trt-bench {minutes}:{seconds:02d}] {message}\n")
        stream.flush()


# ---------------------------------------------------------------------------------------------
# the export the end-to-end sections run on


def check_export(export_dir: Path, model: str, default_inputs: bool = True) -> Optional[str]:
    """Why ``export_dir`` is not a usable export of ``model``, or None: its manifest reads, names the model,
    takes the inputs the benchmark feeds (``default_inputs``: the default configuration's), has the FP32
    model graph, its FP32 parity (when recorded) passed, and every file it lists is there with the sha256
    it records."""
    from hmr_trt.manifest import MANIFEST_NAME, Manifest, sha256_of

    export_dir = Path(export_dir)
    if not (export_dir / MANIFEST_NAME).is_file():
        return f"no {MANIFEST_NAME}"
    try:
        manifest = Manifest.read(export_dir)
        if manifest.model != model:
            return f"an export of {manifest.model}, not {model}"
        exported = manifest.model_contract().graph_for("model")
    except HmrTrtError as exc:
        return str(exc)
    adapter = registry.adapter(model)
    graph = adapter.contract_for(adapter.default_config()).model_graph
    if exported is None:
        return "no model graph in its contract"
    if default_inputs and exported.inputs != graph.inputs:
        return "other model-graph inputs than the default configuration's (another --window?)"
    if manifest.find(exported.name, "onnx", "fp32") is None:
        return f"no FP32 ONNX of the {exported.name} graph"
    verdict = (manifest.verdict.get("fp32") or {}).get("verdict")
    if verdict not in (None, "PASS"):
        return f"its FP32 parity verdict is {verdict}"
    for art in manifest.artifacts:
        path = export_dir / art.path
        if not path.is_file():
            return f"{art.path} (in its manifest) is missing"
        if sha256_of(path) != art.sha256:
            return f"{art.path} does not match the sha256 in its manifest"
    return None


def resolve_export(model: str, explicit: Optional[Path], out: Path, make: bool, video: Optional[Path],
                   say: Callable[[str], None], reuse: Sequence[Path] = (),
                   exporter: Optional[Callable[[str, Path, Optional[Path], Callable[[str], None]], None]] = None
                   ) -> Optional[Path]:
    """The export of ``model`` to benchmark: ``explicit`` (``--export``) when it holds this model (any window;
    refused in one line when its files do not check out), else the first of ``reuse`` and ``<out>/export/<model>`` that
    checks out, else (``make``) a new one exported into ``<out>/export/<model>``, else None."""
    own = Path(out) / "export" / model
    candidates = list(dict.fromkeys([*([Path(explicit)] if explicit is not None else []), *map(Path, reuse), own]))
    for cand in candidates:
        if not (cand / "manifest.json").is_file():
            continue
        problem = check_export(cand, model, default_inputs=cand != explicit)  # --export may have another window
        if problem is None:
            say(f"{model}: reusing the export in {cand} (manifest, inputs and file checksums match)")
            return cand
        if cand == explicit and not problem.startswith("an export of"):
            raise ConfigError(f"--export {cand}: not a usable export of {model}: {problem}")
        if not problem.startswith("an export of"):
            say(f"{model}: not reusing {cand}: {problem}")
    if not make:
        return None
    say(f"{model}: no usable export: exporting into {own} (FP32 ONNX, validation and parity: the longest step)")
    (exporter or export_model)(model, own, video, say)
    problem = check_export(own, model)
    if problem is not None:
        raise HmrTrtError(f"the export just written to {own} does not check out: {problem}")
    return own


def export_model(model: str, out: Path, video: Optional[Path], say: Callable[[str], None]) -> None:
    """``trt-export --model MODEL --precision fp32 --batch 1:8:64 [--video VIDEO] --out OUT``, its steps as
    progress lines."""
    from hmr_trt.profile import ShapeProfile

    from .pipeline import ExportOptions, run_export

    @contextlib.contextmanager
    def step(label: str) -> Iterator[None]:
        say(f"{model} export: {label} ...")
        t = time.perf_counter()
        yield
        say(f"{model} export: {label}: done in {time.perf_counter() - t:.0f} s")

    opts = ExportOptions(out=Path(out), model=model, precision="fp32", profile=ShapeProfile.parse(EXPORT_PROFILE),
                         video=video)
    result = run_export(opts, step=step)
    verdict = result.manifest.verdict.get("fp32", {})
    say(f"{model} export: written in {result.seconds['total']:.0f} s; FP32 parity {verdict.get('verdict', '?')} "
        f"(worst mean vertex drift {verdict.get('worst_mean_vertex_mm', float('nan')):.2g} mm)")


# ---------------------------------------------------------------------------------------------
# the run


def run_bench(out: Path, models: List[str], export_dir: Optional[Path] = None, video: Optional[Path] = None,
              tiny: bool = False, plots: bool = True, budget_s: Optional[float] = None,
              scene_export: Optional[Path] = None, *, plan: Optional[str] = None, force: bool = False,
              make_export: bool = False, reuse: Sequence[Path] = (), readme: Optional[Path] = None,
              say: Optional[Callable[[str], None]] = None, max_call_s: Optional[float] = None) -> BenchResult:
    """Measure ``models`` (each one's record saved to ``<out>/models/<plan>/`` as soon as it is done; models
    with a record of this plan are kept unless ``force``), then the report over all of them. ``plan``:
    quick (default), full or tiny (``tiny=True``: seconds, for tests); ``budget_s`` overrides its round-robin
    seconds per batch size, ``max_call_s`` its cap on a call's estimated seconds (0: none)."""
    import torch

    from .bench_sections import PLANS, machine_floor, machine_info, measure_model

    say = say or Progress()
    name = plan or ("tiny" if tiny else "quick")
    if name not in PLANS:
        raise ConfigError(f"--plan {name!r}: one of {', '.join(PLANS)}")
    chosen = PLANS[name] if budget_s is None else dataclasses.replace(PLANS[name], budget_s=budget_s)
    chosen = chosen if max_call_s is None else dataclasses.replace(chosen, max_call_s=max_call_s)
    store = RecordStore(out, chosen.name)
    result = BenchResult(machine_info(), models=[])
    records: List[ModelRecord] = []
    floor = None
    say(f"{len(models)} model(s) ({', '.join(models)}), plan {chosen.name}: batches "
        f"{', '.join(map(str, chosen.batches))}, {chosen.budget_s:g} s of round robin per batch size"
        + (f", batch sizes whose call is estimated over {chosen.max_call_s:g} s skipped" if chosen.max_call_s else "")
        + f"; records in {store.folder}")
    try:
        for i, model in enumerate(models, 1):
            tag = f"[{i}/{len(models)}] {model}"
            if not force:
                try:
                    rec = store.load(model)
                except ValueError as why:
                    if store.path(model).exists():
                        say(f"{tag}: measuring again: {why}")
                else:
                    rec.add_to(result)
                    result.provenance.append(_provenance(rec, store, kept=True))
                    records.append(rec)
                    say(f"{tag}: kept the measurement of {rec.measured_at} ({store.path(model)}; --force measures "
                        "again)")
                    continue
            say(f"{tag}: measuring")
            torch.manual_seed(0)
            exp = (export_dir if export_dir is not None and _holds(export_dir, model) else None) if chosen.tiny else \
                resolve_export(model, export_dir, out, make_export, video, say, reuse)
            mark = Mark(result)
            if floor is None:
                floor = machine_floor(chosen)
                say(f"this machine: memory bandwidth {floor[0]:.1f} GB/s, SGEMM {floor[1]:.0f} GFLOP/s")
            measure_model(result, model, exp, video, chosen, floor, say)
            result.models.append(model)
            rec = mark.record(model, chosen.to_dict(), exp, peak_rss_mb())
            store.save(rec)
            records.append(rec)
            result.provenance.append(_provenance(rec, store, kept=False))
            say(f"{tag}: done in {rec.seconds:.0f} s; saved {store.path(model)}")
    except KeyboardInterrupt:
        if records:  # the report of the finished models only (not the rows of the one cut short)
            finished = BenchResult(result.machine, models=[], provenance=result.provenance)
            for rec in records:
                rec.add_to(finished)
            _finish(finished, records, out, plots, None, say)
        say(f"interrupted: {len(records)} of {len(models)} model(s) are saved in {store.folder}; run the same "
            "command again to measure the rest")
        raise
    if scene_export is not None and export_dir is not None:  # both exports: the scene-vs-window section
        from .bench_sections import bench_scene_vs_window

        say("scene vs window: both exports end to end ...")
        bench_scene_vs_window(result, export_dir, scene_export, video)
    result.memory["peak host RSS"] = peak_rss_mb()
    if torch.cuda.is_available():
        result.memory["peak GPU memory (torch)"] = torch.cuda.max_memory_allocated() / 2**20
    _finish(result, records, out, plots, readme, say)
    return result


def _holds(export_dir: Path, model: str) -> bool:
    from .bench_sections import export_of

    return export_of(export_dir, model) is not None


def _provenance(rec: ModelRecord, store: RecordStore, kept: bool) -> dict:
    return {"model": rec.model, "measured_at": rec.measured_at, "seconds": rec.seconds, "load_before":
            rec.load_before, "load_after": rec.load_after, "export": rec.export, "record": str(store.path(rec.model)),
            "kept": kept}


def _finish(result: BenchResult, records: List[ModelRecord], out: Path, plots: bool, readme: Optional[Path],
            say: Callable[[str], None]) -> None:
    """Goals per model (at its largest batch), the report and plots, and the README's zoo table."""
    result.goals = []
    for model in result.models:
        batches = [t.batch for t in result.timings if t.model == model]
        if batches:
            evaluate_goals(result, model, max(batches))
    write_report(result, Path(out), plots=plots)
    say(f"wrote {Path(out) / 'report.md'}, results.json" + (f" and {', '.join(result.plots)}" if result.plots else ""))
    if readme is not None:
        update_readme(readme, records)
        say(f"rewrote the zoo table in {readme} ({len(records)} models)")


def main() -> None:
    import typer

    from hmr_trt.cli_common import run_cli

    def bench(
        out: Path = typer.Option(Path("out/bench"), help="Folder for report.md, results.json, plots, the records "
                                 "of measured models (models/<plan>/) and exports made here (export/<model>)."),
        models: Optional[str] = typer.Option(None, "--models", help="Comma-separated registered models, or all "
                                             f"(default: {registry.DEFAULT_MODEL}, the default model)."),
        plan: Plan = typer.Option(Plan.quick, help="quick: batches 1 and 8, 2 s per batch size, 100 video frames "
                                 "(minutes); full: batches 1-32, 4 s, 50 and 200 frames (the zoo table); both skip a batch size "
                                 "whose call is estimated over 30 s."),
        force: bool = typer.Option(False, "--force", help="Measure again the models already measured with this "
                                   "plan in --out (default: keep them; an interrupted run resumes)."),
        export: Optional[Path] = typer.Option(None, help="A trt-export directory: its ONNX per precision, engines, "
                                              "and the end-to-end sections for its model (default: "
                                              f"{DEMO_EXPORT} or OUT/export/MODEL when they check out)."),
        make_export: Optional[bool] = typer.Option(None, "--make-export/--no-make-export", help="Export a model "
                                                   "that has no usable export (FP32, into OUT/export/MODEL). "
                                                   "Default: when one model is measured."),
        video: Optional[Path] = typer.Option(Path("data/vtest.avi"), help="Video for the end-to-end section."),
        tiny: bool = typer.Option(False, help="Tiny configurations that run in seconds (tests)."),
        gpu: bool = typer.Option(False, help="Require a GPU (fail if none) instead of CPU-only sections."),
        budget_s: Optional[float] = typer.Option(None, "--budget-s", help="Round-robin seconds per model and "
                                                 "batch size (default: the plan's)."),
        max_call_s: Optional[float] = typer.Option(None, "--max-call-s", help="Skip (and report as skipped) a batch "
                                                   "size whose call is estimated, linearly from the largest smaller "
                                                   "batch, to take over this many seconds (default: the plan's, 30; "
                                                   "0 measures every batch size)."),
        scene_export: Optional[Path] = typer.Option(None, help="A scene-model export (e.g. instancehmr): with a "
                                                    "window-model --export, the scene-vs-window section."),
        readme: Optional[Path] = typer.Option(None, help="Rewrite the zoo table of this README (between its "
                                              "trt-bench markers) from the measured models."),
    ) -> None:
        def job() -> None:
            import torch

            chosen = parse_models(models)
            if gpu and not torch.cuda.is_available():
                raise ConfigError("--gpu given but torch sees no CUDA device")
            if budget_s is not None and not budget_s > 0:
                raise ConfigError(f"--budget-s must be > 0, got {budget_s}")
            if max_call_s is not None and not max_call_s >= 0:
                raise ConfigError(f"--max-call-s must be >= 0, got {max_call_s}")
            if export is not None and not (export / "manifest.json").is_file():
                raise ConfigError(f"--export {export}: no manifest.json (make one with trt-export)")
            if scene_export is not None and not (scene_export / "manifest.json").is_file():
                raise ConfigError(f"--scene-export {scene_export}: no manifest.json (make one with trt-export)")
            if readme is not None:  # before the long run, not after it
                if not readme.is_file():
                    raise ConfigError(f"--readme {readme}: file not found")
                rewrite_between_markers(readme.read_text(), [])
            vid = video if video is not None and video.is_file() else None
            t = time.perf_counter()
            say = Progress()
            if video is not None and vid is None:
                say(f"no video at {video}: the end-to-end section is skipped (make data/vtest.avi fetches it)")
            def on_sigterm(_signum: int, _frame: object) -> None:  # `kill`, a CI job cancelled: as Ctrl-C
                raise KeyboardInterrupt

            signal.signal(signal.SIGTERM, on_sigterm)
            try:
                result = run_bench(out, chosen, export, vid, tiny=tiny, budget_s=budget_s, scene_export=scene_export,
                                   plan="tiny" if tiny else plan.value, force=force,
                                   make_export=len(chosen) == 1 if make_export is None else make_export,
                                   reuse=(DEMO_EXPORT,), readme=readme, say=say, max_call_s=max_call_s)
            except KeyboardInterrupt:
                sys.exit(130)  # run_bench said what was saved
            say(f"finished in {time.perf_counter() - t:.0f} s: {out}/report.md")
            for g in result.goals:
                print(f"  {g['goal']}: {g['value']} (target {g['target']}) -> {g['met']}", flush=True)

        run_cli(job)

    typer.run(bench)
