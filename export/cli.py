"""``trt-export``: PyTorch -> ONNX (and, with TensorRT on a GPU, engines), with parity in millimetres."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from hmr_trt import registry
from hmr_trt.cli_common import Precision, run_cli, step
from hmr_trt.errors import ParityError
from hmr_trt.profile import ShapeProfile


class Exporter(str, Enum):
    torchscript = "torchscript"
    dynamo = "dynamo"


class Size(str, Enum):
    released = "released"
    tiny = "tiny"


Model = Enum("Model", {name: name for name in registry.names()}, type=str)  # --model: the registered models


FileOpt = Annotated[Optional[Path], typer.Option(dir_okay=False)]

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", help="Output directory (created; replaced only on success).")],
    model: Annotated[Model, typer.Option(help="Which network (the registered models).")] = Model[registry.DEFAULT_MODEL],
    size: Annotated[Size, typer.Option(help="released: the published network (default); tiny: the same code at small "
                                       "widths, UNTRAINED (seeded weights), to try the pipeline or run CI in "
                                       "seconds; labelled in manifest.json, never the real network.")] = Size.released,
    precision: Annotated[Precision, typer.Option(help="fp32, fp16 or int8.")] = Precision.fp32,
    window: Annotated[Optional[int], typer.Option(help="Frames per window T (default: the model's; coseg: "
                                                  "even, >= 4).")] = None,
    batch: Annotated[str, typer.Option(help="Batch profile MIN:OPT:MAX.")] = "1:8:64",
    checkpoint: FileOpt = None,
    backbone_checkpoint: FileOpt = None,
    smpl_model: Annotated[Optional[Path], typer.Option(dir_okay=False, help="SMPL .npz or official .pkl; "
                                                       "default: a synthetic body model (not SMPL).")] = None,
    mean_params: FileOpt = None,
    video: Annotated[Optional[Path], typer.Option(dir_okay=False, help="Video whose frames give the real-feature "
                                                  "parity windows (default: the sample video when present).")] = None,
    exporter: Annotated[Exporter, typer.Option(help="torchscript (opset 17, TensorRT 8.6+) or dynamo "
                                               "(opset 18, TensorRT 10+).")] = Exporter.torchscript,
    calib: Annotated[Optional[Path], typer.Option(help="INT8 calibration data: a video, a folder of videos, or "
                                                  ".npz per-frame features (default: the sample video).")] = None,
    calib_cache: Annotated[Optional[Path], typer.Option(file_okay=False, help="Where calibration caches live "
                                                        "(default ~/.cache/hmr-trt/calibration).")] = None,
    recipe: Annotated[Optional[str], typer.Option(help="Precision recipe of the model's contract (default: "
                                                  "the contract's default for --precision).")] = None,
    max_drift_mm: Annotated[Optional[float], typer.Option(help="Refuse (exit 1, nothing written) an FP16/INT8 "
                                                          "result whose worst mean vertex drift exceeds this.")] = None,
    decomr_data: Annotated[Optional[Path], typer.Option(file_okay=False, help="DecoMR's data folder (UV "
                                                        "template, sampler, reference map) for --model decomr; "
                                                        "default: hmr-trt's synthetic UV layout.")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Like --max-drift-mm with the contract's goal for "
                                         "--precision.")] = False,
    step_graph: Annotated[Optional[bool], typer.Option("--step/--no-step", help="Also export a one-frame step graph "
                                                 "(Triton sequences; the model's own for VIBE). Default: the "
                                                 "model's own, or the window-as-state one under 100 MB of "
                                                 "weights.")] = None,
) -> None:
    """Export the model to ONNX, validate it and measure parity against PyTorch in millimetres."""

    def job() -> None:
        from rich.console import Console

        from .pipeline import ExportOptions, run_export
        from .sample import default_sample_video

        profile = ShapeProfile.parse(batch)
        sample = video or default_sample_video()
        console = Console(width=max(Console().width, 100))
        if sample is None:
            console.print("[yellow]no video given and no sample video found: parity on random windows only[/]")
        opts = ExportOptions(out=out, model=model.value, precision=precision.value, window=window, profile=profile,
                             checkpoint=checkpoint, backbone_checkpoint=backbone_checkpoint, smpl_model=smpl_model,
                             mean_params=mean_params, video=sample, exporter=exporter.value, calib=calib,
                             calib_cache=calib_cache, recipe=recipe, max_drift_mm=max_drift_mm, strict=strict,
                             step=step_graph, decomr_data=decomr_data, size=size.value)
        if size is Size.tiny:
            console.print(f"[bold yellow]--size tiny: {model.value}'s small UNTRAINED configuration (seeded weights), "
                          "for trying the pipeline and CI; not the released network, its outputs mean nothing[/]")
        try:
            result = run_export(opts, step=step)
        except ParityError as exc:
            print_parity(console, getattr(exc, "reports", []))
            raise
        if result.reports:
            print_parity(console, result.reports)
        print_step_parity(console, result.manifest)
        print_track_parity(console, result.manifest)
        console.print(f"wrote {out}/manifest.json; export took {result.seconds['total']:.1f} s "
                      f"(export {result.seconds['export']:.1f} s, parity {result.seconds['parity']:.1f} s)")
        for note in result.manifest.notes[:-1]:
            console.print(f"note: {note}")
        for rep in result.reports[1:]:
            if not rep.passed:
                console.print(f"[bold yellow]WARNING: {rep.precision} MISSES its goal of {rep.goal_mean_vertex_mm} mm "
                              f"(worst {rep.worst_judged()['mm']:.3g} mm); the artifacts were written and manifest.json "
                              "records the MISS. Use --strict or --max-drift-mm to refuse such a result.[/]")

    run_cli(job)


def print_parity(console, reports) -> None:  # noqa: ANN001 - rich types imported lazily
    from rich.table import Table

    from .parity import ParityTable

    keypoints = all(is_keypoint_report(rep) for rep in reports)
    table = Table(title="parity vs PyTorch, ONNX Runtime CPU (all drifts in "
                        f"{'pixels of the crop' if keypoints else 'mm'})")
    for col in ParityTable.header:
        table.add_column(col, justify="right")
    for row in ParityTable(reports).lines():
        table.add_row(*row)
    console.print(table)
    if any(not r.get("judged", True) for rep in reports for r in rep.rows):
        console.print("* reported, not judged: FP16/INT8 goals apply to real feature windows (random Gaussian "
                      "windows lie outside INT8 calibration ranges)")
    for rep in reports:
        status = "[green]PASS[/]" if rep.passed else "[red]MISS[/]"
        worst = rep.worst_judged()
        inv = ", ".join(f"{k} {v:.1e}" for k, v in rep.batch_invariance.items()) or "n/a"
        pinned = " (decisions pinned)" if rep.judged_on() == "pinned" else ""
        what, unit, inputs = (("keypoint", "px", "crops") if is_keypoint_report(rep) else ("vertex", "mm", "windows"))
        console.print(f"{rep.precision}: {status} worst mean {what} drift{pinned} {worst['mm']:.3g} {unit} ({worst['set']} "
                      f"{inputs}, batch {worst['batch']}) vs goal {rep.goal_mean_vertex_mm} {unit}"
                      f"{floor_clause(rep, worst['set'], unit)}; batch invariance max abs: {inv}")
        if rep.share:
            console.print(f"  {rep.precision}: weights {100 * rep.share['weights_fp16']:.0f}% FP16 / "
                          f"{100 * rep.share['weights_int8']:.0f}% INT8, FLOPs {100 * rep.share['flops_fp16']:.0f}% "
                          f"FP16 / {100 * rep.share['flops_int8']:.0f}% INT8")
        for line in decision_lines(rep) + keypoint_lines(rep):
            console.print(line)
        if rep.conditioning and rep.precision == "fp32":
            c = rep.conditioning
            console.print(f"  conditioning (FP32, {c['set']} windows): inputs x (1 +- {c['relative_perturbation']:g}) "
                          f"move vertices {c['perturbation_mean_vertex_mm']:.3g} mm mean; inputs rounded to FP16 "
                          f"alone {c['input_fp16_mean_vertex_mm']:.3g} mm mean (a reduced-precision drift near "
                          "these is the network's own conditioning)")


def is_keypoint_report(rep) -> bool:  # noqa: ANN001 - parity.ParityReport
    """A keypoint model's report (contract body_model "keypoints"): its drifts are keypoints in crop pixels."""
    return any("keypoints" in r for r in rep.rows)


def floor_clause(rep, set_name: str, unit: str = "mm") -> str:  # noqa: ANN001 - parity.ParityReport
    """FP32: the float32 floor of the worst set and the rule (within the goal, or within the multiple of it)."""
    from .parity import FLOOR_MULTIPLE

    floor = rep.floor.get(set_name)
    if floor is None:
        return ""
    within = "" if not rep.passed else (" (within the goal)" if rep.passed_within() == "goal"
                                        else f" (within {FLOOR_MULTIPLE:g} x the floor)")
    return (f" or {FLOOR_MULTIPLE:g} x the float32 floor {floor['vertices_mean_mm']:.3g} {unit}{within} (the floor: the "
            f"torch reference vs itself, inputs or weights x (1 +- {floor['relative_perturbation']:.2g}))")


def decision_lines(rep) -> list[str]:  # noqa: ANN001 - parity.ParityReport
    """Models with discrete decisions: per set, the largest batch's row: inputs the export decided otherwise,
    both drifts, which one the verdict uses, and a warning when the end-to-end drift is over the goal."""
    out = []
    for name, d in rep.decisions_by_set().items():
        flips = d["items_decided_otherwise"]
        pixels = ""
        if "peak_flips" in d:
            pixels = f" ({d['peak_flips']} of {d['peaks']} center-map peaks read elsewhere"
            pixels += (f", the reference within {d['largest_flip_margin']:.1e} of the comparison)"
                       if d["peak_flips"] else ")")
        if "cell_flips" in d:
            pixels = f" ({d['foreground_flips']} foreground and {d['cell_flips']} UV-cell flips of {d['pixels']} pixels"
            pixels += (f", the reference within {d['largest_flip_margin']:.1e} of the edge)"
                       if d["foreground_flips"] + d["cell_flips"] else ")")
        judged = "with the export's decisions pinned" if d["judged_on"] == "pinned" else "end to end"
        out.append(f"  {rep.precision} decisions ({name} inputs, batch {d['batch']}): {flips} of {d['items']} inputs "
                   f"decided otherwise{pixels}; mean vertex drift end to end {d['unpinned_vertices_mean_mm']:.3g} mm "
                   f"(max {d['unpinned_vertices_max_mm']:.3g}), with the export's decisions pinned "
                   f"{d['pinned_vertices_mean_mm']:.3g} mm; judged {judged}")
        if d["judged_on"] == "pinned" and flips and d["unpinned_vertices_mean_mm"] > rep.goal_mean_vertex_mm:
            out.append(f"  [yellow]note: end to end, {flips} {name} input(s) decided otherwise move "
                       f"{d.get('unpinned_on_those_mean_mm', float('nan')):.3g} mm mean; the others agree to "
                       f"{d.get('unpinned_elsewhere_mean_mm', float('nan')):.3g} mm. The model's decisions flip "
                       "within round-off of their edges: any two FP32 runtimes can disagree there.[/]")
    return out


def keypoint_lines(rep) -> list[str]:  # noqa: ANN001 - parity.ParityReport
    """Keypoint models (contract body_model "keypoints"): the drifts above are crop pixels, and per set the
    heatmap maxima the export put in another cell than the reference (end to end drift beside)."""
    rows = {r["set"]: r for r in rep.rows if "keypoints" in r}  # the largest batch of each set
    if not rows:
        return []
    pinned = next(iter(rows.values()))["keypoints"].get("judged_on") == "pinned"
    out = [f"  {rep.precision}: keypoint model: the drifts above are keypoints in pixels of the crop"
           + (", decoded from the reference's heatmap maxima; the heatmaps themselves are held to the per-output tier"
              if pinned else ", end to end")]
    for name, r in rows.items():
        k = r["keypoints"]
        out.append(f"  {rep.precision} maxima ({name} crops, batch {r['batch']}): {k['maxima_decided_otherwise']} of "
                   f"{k['keypoints']} in another cell; end to end {k['unpinned_mean_px']:.3g} px mean "
                   f"(max {k['unpinned_max_px']:.3g})")
    return out


def print_step_parity(console, manifest) -> None:  # noqa: ANN001 - rich types imported lazily
    """One line per parity set for the step graph (export/step_graph.py: step_parity), when there is one."""
    art = next((a for a in manifest.artifacts if a.parity and a.parity.get("kind") in ("window as state",
                                                                                        "recurrent state")), None)
    if art is None:
        return
    p = art.parity
    sets = ", ".join(f"{name} {r['vertices_mean_mm']:.2g}/{r['vertices_max_mm']:.2g} mm over {r['frames_compared']} "
                     f"frames" for name, r in p["sets"].items())
    status = "[green]PASS[/]" if not p["failures"] else "[red]MISS[/]"
    console.print(f"step graph ({p['kind']}, fed frame by frame): {status} mean/max vertex drift vs the torch "
                  f"window model: {sets}")


def print_track_parity(console, manifest) -> None:  # noqa: ANN001 - rich types imported lazily
    """Track models (WHAM): the init/step graphs fed frame by frame vs the torch whole-sequence forward."""
    p = (manifest.parity or {}).get("fp32") or {}
    if "tracks" not in p:
        return
    worst = ", ".join(f"{k} {v:.2g}" for k, v in p["max_abs"].items())
    status = "[green]PASS[/]" if not p["failures"] else "[red]MISS[/]"
    console.print(f"step graph fed frame by frame ({p['tracks']} tracks x {p['frames']} frames, ONNX Runtime CPU) vs "
                  f"the torch whole-sequence forward: {status}; max abs difference: {worst}")
    if "floor_max_abs" in p:
        floor = ", ".join(f"{k} {v:.2g}" for k, v in p["floor_max_abs"].items())
        console.print(f"float32 floor (the torch sequence vs itself, inputs or weights x (1 +- "
                      f"{p['relative_perturbation']:.2g})): {floor}; each output passes within "
                      f"{p['floor_multiple']:g} x its floor")


def main() -> None:
    app()
