"""The precision-recipe table of the README: every recipe of every registered model, measured on a CPU.

For each model (full default config, seeded weights, the sample video): one FP32 export through
``trt-export``'s own job (``export/pipeline.py``: FP32 parity, the network's conditioning), then,
for each recipe of its contract, the pipeline's reduced-precision step on the same FP32 graphs,
windows and torch references (FP16: the CPU stand-in of ``engines/precision.py``; INT8: ONNX
Runtime's Q/DQ graph after the sensitivity sweep). A row: mean/max vertex drift on the video and
random windows (mean over batch sizes 1/2/7, max over them), share of weights and FLOPs in
FP16/INT8 (``engines.precision.reduced_precision_share``), the FP32 sensitivity (vertex drift for
inputs x (1 +- 1e-4)) and the drift from rounding only the inputs to FP16. The GPU speed column
says "not measured: no GPU" unless TensorRT and a GPU are present (the tool does not time engines).

Models run one after another (CPU-heavy: minutes each on 2 cores).

Usage:
  .venv/bin/python tools/precision_table.py [--models coseg,glot] [--precisions fp16,int8]
      [--from-export OUT_OF_TRT_EXPORT ...] [--json results.json] [--readme README.md]
(``--models ""`` with ``--json``/``--from-export``: only rewrite the table from rows measured before;
``--old OLD.json``: old -> new side by side, the old cells from an earlier table, ``rows_from_table``).
``--readme`` replaces the text between ``<!-- precision-table:begin -->`` and ``<!-- precision-table:end -->``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from hmr_trt import registry
from hmr_trt.export import parity
from hmr_trt.export.pipeline import (
    BATCH_SIZES,
    PARITY_REFERENCE_NAME,
    ExportOptions,
    Job,
    artifact_file,
    calibration_cache,
    calibration_windows,
    ort_runner,
    reduced_precision,
    run_export,
)
from hmr_trt.export.sample import default_sample_video
from hmr_trt.manifest import Manifest

BEGIN, END = "<!-- precision-table:begin -->", "<!-- precision-table:end -->"
HEADER = ["model", "recipe", "video mean / max mm", "random mean / max mm", "weights FP16/INT8",
          "FLOPs FP16/INT8", "FP32 sensitivity mm", "input FP16 mm", "verdict", "GPU speed"]


def load_references(out: Path, contract: Any) -> tuple[dict[str, Any], dict[str, parity.Reference]]:
    """The parity windows and torch references trt-export stored in ``parity_reference.npz``."""
    graph = contract.model_graph
    arrays = np.load(out / PARITY_REFERENCE_NAME)
    sets = sorted({k.split("/", 1)[0] for k in arrays.files})
    windows: dict[str, Any] = {}
    refs: dict[str, parity.Reference] = {}
    for s in sets:
        if f"{s}/features" in arrays.files and len(graph.input_names) == 1:
            windows[s] = arrays[f"{s}/features"]
        else:
            windows[s] = {n: arrays[f"{s}/{n}"] for n in graph.input_names}
        refs[s] = parity.Reference({k: arrays[f"{s}/{k}"] for k in graph.output_names},
                                   arrays[f"{s}/vertices"], arrays[f"{s}/joints3d"])
    return windows, refs


def measure_model(name: str, video: Path | None, work: Path, precisions: tuple[str, ...],
                  recipes: tuple[str, ...] = (), on_row: Any = None) -> list[dict[str, Any]]:
    """The rows of one model: its FP32 export once, then each recipe of ``precisions`` (only those named in
    ``recipes`` when given); ``on_row(rows)`` after each recipe, so a long run keeps what it measured."""
    adapter = registry.adapter(name)
    LOW_SPREAD.clear()
    out = work / name
    t = time.perf_counter()
    opts = ExportOptions(out=out, model=name, precision="fp32", video=video, build_engines=False)
    try:
        result = run_export(opts)
    except Exception as exc:  # noqa: BLE001 - the FP32 export itself fails: a row saying why, then the next model
        print(f"{name}: FP32 export FAILED: {type(exc).__name__}: {exc}", flush=True)
        return [{"model": name, "recipe": "(fp32 export)", "precision": "fp32",
                 "error": f"{type(exc).__name__}: {exc}"}]
    fp32 = result.reports[0]
    print(f"{name}: FP32 export and parity {time.perf_counter() - t:.0f} s; conditioning {fp32.conditioning}",
          flush=True)
    contract = Manifest.read(out).model_contract()
    paths = {g.name: out / artifact_file(name, g, "fp32") for g in contract.graphs}
    windows, refs = load_references(out, contract)
    cfg = adapter.default_config()
    rows = []
    for recipe in contract.recipes:
        if recipe.precision not in precisions or (recipes and recipe.name not in recipes):
            continue
        t = time.perf_counter()
        stage = work / f"{name}-{recipe.name}"
        stage.mkdir(parents=True, exist_ok=True)
        r_opts = dataclasses.replace(opts, precision=recipe.precision, recipe=recipe.name, out=stage)
        job = Job(adapter, cfg, contract, recipe=recipe.name)
        scratch = Manifest(model=name, config={}, profile={})
        try:
            report = reduced_precision(r_opts, job, contract, stage, paths, refs, windows, scratch,
                                       lambda _label: ExitStack())
        except Exception as exc:  # noqa: BLE001 - a recipe that cannot run is a row saying why
            print(f"{name} {recipe.name}: FAILED {type(exc).__name__}: {exc}", flush=True)
            rows.append({"model": name, "recipe": recipe.name, "precision": recipe.precision,
                         "error": f"{type(exc).__name__}: {exc}"})
            if on_row is not None:
                on_row(rows)
            continue
        report.conditioning = dict(fp32.conditioning)
        verdict = report.verdict(recipe.name)
        if LOW_SPREAD:
            verdict["low_spread_mm"] = dict(LOW_SPREAD)
        row = {"model": name, "recipe": recipe.name, "precision": recipe.precision,
               "default": contract.default_recipe.get(recipe.precision) == recipe.name,
               "description": recipe.description, "seconds": time.perf_counter() - t, **verdict}
        rows.append(row)
        print(f"{name} {recipe.name}: {json.dumps(_short(row))}", flush=True)
        if on_row is not None:
            on_row(rows)
    if "fp8" in precisions and (not recipes or FP8_ROW in recipes):
        t = time.perf_counter()
        try:
            row = fp8_row(name, opts, contract, work, paths, refs, windows)
        except Exception as exc:  # noqa: BLE001 - a row saying why
            print(f"{name} fp8: FAILED {type(exc).__name__}: {exc}", flush=True)
            row = {"model": name, "recipe": FP8_ROW, "precision": "fp8", "error": f"{type(exc).__name__}: {exc}"}
        else:
            row["conditioning"] = dict(fp32.conditioning)
            row["seconds"] = time.perf_counter() - t
            print(f"{name} fp8: {json.dumps(_short(row))}", flush=True)
        rows.append(row)
        if on_row is not None:
            on_row(rows)
    return rows


FP8_ROW = "fp8"  # the row's recipe name: FP8 E4M3 Q/DQ on the nodes of the contract's INT8 recipe, before its sweep


def fp8_row(name: str, opts: ExportOptions, contract: Any, work: Path, paths: dict[str, Path],
            refs: dict[str, parity.Reference], windows: dict[str, Any]) -> dict[str, Any]:
    """FP8 (E4M3, Hopper) judged on the CPU: the contract's default INT8 recipe quantizes every node of its op
    types but its exclusions (no sweep: it would be an INT8 decision), ``calibration/fp8.py`` turns those Q/DQ
    pairs into float8 ones, and ONNX Runtime's float8 kernels run the graph against the same torch references,
    judged against the INT8 goal (FP8 is the other 8-bit format)."""
    import onnx

    from hmr_trt.calibration.fp8 import fp8_onnx_from_int8
    from hmr_trt.calibration.quantize import int8_onnx_from_fp32, recipe_exclusions

    graph = contract.model_graph
    recipe = contract.recipe_for("int8", None)
    src = paths[graph.name]
    stage = work / f"{name}-{FP8_ROW}"
    stage.mkdir(parents=True, exist_ok=True)
    cal = calibration_windows(dataclasses.replace(opts, precision="int8"), contract, paths)
    cache = calibration_cache(opts, src)  # the INT8 step's cache: its ranges are reused
    fixed = recipe_exclusions(onnx.load(str(src), load_external_data=False), recipe)
    int8_onnx_from_fp32(src, stage / "int8.onnx", cal, cache, fixed, op_types=recipe.int8_ops)
    info = fp8_onnx_from_int8(stage / "int8.onnx", src, stage / "fp8.onnx")
    share = fp8_share(stage / "int8.onnx", stage / "fp8.onnx")
    (stage / "int8.onnx").unlink()
    goal = contract.goal_mm("int8")
    stack, run = ort_runner({**{n: p for n, p in paths.items() if n != graph.name}, graph.name: stage / "fp8.onnx"})
    with stack:
        report = parity.compare(run, refs, windows, precision="fp8", batch_sizes=BATCH_SIZES, goal_mm=goal,
                                judged={"video"} if "video" in windows else None, contract=contract)
    report.share = share
    verdict = report.verdict(FP8_ROW)
    return {"model": name, "recipe": FP8_ROW, "precision": "fp8", "default": False,
            "description": f"FP8 E4M3 Q/DQ on the nodes of the `{recipe.name}` recipe before its sweep "
                           f"({len(fixed)} nodes excluded by the recipe)", "fp8": _jsonable(info), **verdict}


def fp8_share(int8_onnx: Path, fp8_onnx: Path) -> dict[str, Any]:
    """The FP8 graph's share of weights and FLOPs: its INT8 graph's INT8 share (``fp8_onnx_from_int8`` keeps every
    Q/DQ pair and only changes its type), counted on the INT8 graph, whose shapes ONNX Runtime's symbolic shape
    inference follows (on the opset-19 FP8 graph of the ViT-H it stops at an Expand, and most MatMuls would count
    0 FLOPs). The FP8 graph's own FP8 weight share must agree."""
    from hmr_trt.engines.precision import reduced_precision_share

    int8, fp8 = reduced_precision_share(int8_onnx), reduced_precision_share(fp8_onnx)
    if abs(int8["weights_int8"] - fp8["weights_fp8"]) > 1e-9:
        raise RuntimeError(f"{fp8_onnx}: FP8 weights {fp8['weights_fp8']:.4f} of all, its INT8 graph's INT8 weights "
                           f"{int8['weights_int8']:.4f}: not the same nodes")
    return {**int8, "weights_int8": 0.0, "flops_int8": 0.0,
            "weights_fp8": int8["weights_int8"], "flops_fp8": int8["flops_int8"]}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


LOW_SPREAD: dict[str, float] = {}


def _note_low_spread(report: parity.ParityReport, minimum: float = parity.MIN_SPREAD_MM) -> None:
    """--allow-low-spread: record the spread instead of failing the FP32 parity on it."""
    for set_name, spread in report.spread_mm.items():
        if spread < minimum:
            LOW_SPREAD[set_name] = spread


def rows_from_export(out: Path) -> list[dict[str, Any]]:
    """The reduced-precision verdicts a ``trt-export --precision fp16|int8`` run recorded in its manifest."""
    manifest = Manifest.read(out)
    contract = manifest.model_contract()
    return [{"model": manifest.model, "precision": precision, "description": contract.recipe(v["recipe"]).description,
             "default": contract.default_recipe.get(precision) == v["recipe"], **v}
            for precision, v in manifest.verdict.items() if precision != "fp32"]


def _short(row: dict[str, Any]) -> dict[str, Any]:
    return {"by_set": row.get("drift_by_set"), "share": {k: round(v, 3) for k, v in row.get("share", {}).items()
                                                         if isinstance(v, float)}, "verdict": row.get("verdict")}


def gpu_speed() -> str:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "not measured: no GPU"
    return "not measured: run trt-bench on the engines"


def _recipe_cell(r: dict[str, Any]) -> str:
    recipe = f"`{r['recipe']}`" + (" (default)" if r.get("default") else "")
    if r.get("low_spread_mm"):
        recipe += " (spread " + ", ".join(f"{k} {v:.0f} mm" for k, v in r["low_spread_mm"].items()) + "!)"
    return recipe


def cells(r: dict[str, Any]) -> dict[str, str]:
    """A measured row's table cells (``CELLS``), as ``markdown`` prints them."""
    share, cond = r["share"], r["conditioning"]
    return {"video": _drift(r, "video"), "random": _drift(r, "random"),
            "weights": f"{_pct(share['weights_fp16'])} / {_pct(share['weights_int8'])}" + _fp8(share, "weights"),
            "flops": f"{_pct(share['flops_fp16'])} / {_pct(share['flops_int8'])}" + _fp8(share, "flops"),
            "sensitivity": f"{cond['perturbation_mean_vertex_mm']:.3g}",
            "input_fp16": f"{cond['input_fp16_mean_vertex_mm']:.3g}",
            "verdict": f"{r['verdict']} (goal {r['goal_mm']:g}{_nothing_int8(r)})"}


def _nothing_int8(r: dict[str, Any]) -> str:
    """An INT8 row whose sweep left every layer float: its drift is the float graph's, said in the verdict."""
    share = r["share"]
    none = r.get("precision") == "int8" and not share.get("weights_int8") and not share.get("flops_int8")
    return "; no layer stays INT8" if none else ""


def markdown(rows: list[dict[str, Any]], speed: str) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        recipe = _recipe_cell(r)
        if "error" in r:
            lines.append(f"| {r['model']} | {recipe} | failed: {r['error'][:80]} |" + " |" * (len(HEADER) - 3))
            continue
        lines.append(" | ".join([f"| {r['model']}", recipe, *cells(r).values(), speed]) + " |")
    return "\n".join(lines)


# The old-vs-new table: the cells of a table in ``HEADER``'s layout (an earlier run: ``rows_from_table``)
# beside this run's. Columns whose old figure is shown as "old -> new"; the others show the new figure.
CELLS = ("video", "random", "weights", "flops", "sensitivity", "input_fp16", "verdict")
COMPARED = ("video", "flops", "sensitivity", "input_fp16", "verdict")
COMPARE_HEADER = ["model", "recipe", "video mean / max mm (old -> new)", "random mean / max mm (new)",
                  "weights FP16/INT8 (new)", "FLOPs FP16/INT8 (old -> new)", "FP32 sensitivity mm (old -> new)",
                  "input FP16 mm (old -> new)", "verdict (old -> new)", "GPU speed"]


def rows_from_table(text: str) -> list[dict[str, str]]:
    """The rows of the first table in ``HEADER``'s layout in ``text`` (e.g. the README's section between
    the markers), as cell strings by ``CELLS`` name plus ``model`` and ``recipe`` (without backticks and
    the "(default)" mark)."""
    head = "| " + " | ".join(HEADER) + " |"
    if head not in text:
        raise SystemExit(f"no table with the header {head!r} found")
    rows = []
    for line in text.split(head, 1)[1].splitlines()[2:]:
        if not line.startswith("| "):
            break
        parts = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(parts) != len(HEADER):
            raise SystemExit(f"table row with {len(parts)} cells, expected {len(HEADER)}: {line!r}")
        recipe = parts[1].split("`")[1] if "`" in parts[1] else parts[1]
        rows.append({"model": parts[0], "recipe": recipe, "default": "(default)" in parts[1],
                     **dict(zip(CELLS, parts[2:2 + len(CELLS)]))})
    return rows


def compare_markdown(rows: list[dict[str, Any]], old: list[dict[str, str]], speed: str) -> str:
    """One line per (model, recipe) of either: old -> new where both exist, "not re-measured" where only
    the old one does."""
    new = {(r["model"], r["recipe"]): r for r in rows}
    keys = list(new) + [(o["model"], o["recipe"]) for o in old if (o["model"], o["recipe"]) not in new]
    order = {n: i for i, n in enumerate(registry.names())}
    keys.sort(key=lambda k: (order.get(k[0], 99), k[1].split("-")[0] != "fp16", k[1]))
    before = {(o["model"], o["recipe"]): o for o in old}
    lines = ["| " + " | ".join(COMPARE_HEADER) + " |", "|" + "---|" * len(COMPARE_HEADER)]
    for key in keys:
        r, o = new.get(key), before.get(key)
        if r is not None and "error" in r:
            now = {c: f"failed: {r['error'][:60]}" if c == "video" else "" for c in CELLS}
        else:
            now = cells(r) if r is not None else {c: "not re-measured" for c in CELLS}
        shown = []
        for c in CELLS:
            if c not in COMPARED:
                shown.append(now[c])
            elif o is None:
                shown.append(f"(no old row) -> {now[c]}")
            else:
                old_cell = o[c].split(" (goal")[0] if c == "verdict" and r is not None else o[c]
                shown.append(f"{old_cell} -> {now[c]}")
        recipe = _recipe_cell(r if r is not None else {"recipe": key[1], "default": o.get("default")})
        lines.append(" | ".join([f"| {key[0]}", recipe, *shown, speed]) + " |")
    return "\n".join(lines)


def _fp8(share: dict[str, Any], what: str) -> str:
    value = share.get(f"{what}_fp8", 0.0)
    return f" (FP8 {_pct(value)})" if value else ""


def _pct(share: float) -> str:
    return ">99.9%" if 0.999 < share < 1 else f"{100 * share:.1f}%"


def _drift(row: dict[str, Any], window_set: str) -> str:
    d = row["drift_by_set"].get(window_set)
    return f"{d['mean_vertex_mm']:.3g} / {d['max_vertex_mm']:.3g}" if d else "n/a"


def replace_section(readme: Path, table: str) -> None:
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        sys.exit(f"{readme}: no {BEGIN} ... {END} markers; add them where the table goes")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(registry.names()))
    ap.add_argument("--precisions", default="fp16,int8",
                    help="fp16, int8 and/or fp8 (fp8: the INT8 recipe's nodes in FP8 E4M3, judged on the CPU)")
    ap.add_argument("--recipes", default="", help="only these recipes (comma-separated names; default: every "
                                                    "recipe of --precisions)")
    ap.add_argument("--video", type=Path, default=None, help="default: the sample video")
    ap.add_argument("--json", type=Path, default=None, help="append the rows to this JSON file (kept across runs)")
    ap.add_argument("--from-export", type=Path, action="append", default=[],
                    help="also take the rows of a trt-export output folder's manifest (its verdicts)")
    ap.add_argument("--allow-low-spread", action="store_true",
                    help="measure models whose seeded outputs move less than 50 mm across the windows (their "
                         "FP32 export refuses them); the table marks those rows")
    ap.add_argument("--readme", type=Path, default=None, help="write the table (all rows of --json) here")
    ap.add_argument("--old", type=Path, default=None,
                    help="an earlier table (JSON of rows_from_table's rows): print old -> new side by side")
    args = ap.parse_args()
    video = args.video or default_sample_video()
    if args.allow_low_spread:
        parity.check_spread = _note_low_spread
    precisions = tuple(args.precisions.split(","))
    rows: list[dict[str, Any]] = []
    if args.json is not None and args.json.exists():
        rows = json.loads(args.json.read_text())
    for out in args.from_export:
        new = rows_from_export(out)
        rows = [r for r in rows if (r["model"], r["recipe"]) not in {(n["model"], n["recipe"]) for n in new}] + new
    recipes = tuple(filter(None, args.recipes.split(",")))

    def merged(name: str, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
        done = {r["recipe"] for r in new}
        return [r for r in rows if r["model"] != name or r["recipe"] not in done] + new

    def keep(name: str, new: list[dict[str, Any]]) -> None:
        if args.json is not None:
            args.json.write_text(json.dumps(merged(name, new), indent=1, default=str))

    with tempfile.TemporaryDirectory() as tmp:
        for name in filter(None, args.models.split(",")):
            new = measure_model(name, video, Path(tmp), precisions, recipes,
                                on_row=lambda new, name=name: keep(name, new))
            rows = merged(name, new)
            keep(name, [])
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    order = {n: i for i, n in enumerate(registry.names())}
    rows.sort(key=lambda r: (order.get(r["model"], 99), r["precision"] != "fp16", r["recipe"]))
    table = markdown(rows, gpu_speed()) if args.old is None else \
        compare_markdown(rows, json.loads(args.old.read_text()), gpu_speed())
    print(table)
    if args.readme is not None:
        replace_section(args.readme, table)


if __name__ == "__main__":
    main()
