"""The README's table of FP32 exports of released-format checkpoints: drift beside the float32 floor.

Reads the ``manifest.json`` of ``trt-export --model NAME --checkpoint FILE`` runs (``verdict.fp32``:
per-set floor, judged rows, conditioning, decisions; ``notes``: the export seconds) and writes one row
per run: the parity set (random / video), worst judged mean vertex drift over the batch sizes, the
float32 floor of that set, drift / floor, the network's conditioning (inputs x (1 +- 1e-4)), items
decided otherwise (models with decisions; judged pinned), the verdict with the rule it passed by, and
the export's wall time.

Each run is given as ``OUT_DIR::CHECKPOINT_FILE::WEIGHTS`` (the file name as the command used it, a few
words on the weights). ``--rows`` keeps the extracted rows as JSON so the table can be rewritten later
without the export folders (``--from-rows``).

    .venv/bin/python tools/floor_table.py /tmp/x/coseg::coseg.pt::"seeded, bare state dict" ... \
        --rows docs/fp32_floor_rows.json --readme README.md
    .venv/bin/python tools/floor_table.py --from-rows docs/fp32_floor_rows.json --readme README.md

``--readme`` replaces the text between ``<!-- fp32-floor-released:begin -->`` and ``...:end -->``.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- fp32-floor-released:begin -->", "<!-- fp32-floor-released:end -->"
HEADER = ["model", "checkpoint (`--checkpoint`)", "weights", "parity set", "drift mm", "floor mm", "drift / floor",
          "conditioning mm", "decided otherwise", "verdict", "export time"]


def _g(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.2g}" if abs(x) < 1e-3 else f"{x:.3g}"


def row_from_export(out: Path, checkpoint: str, weights: str) -> dict[str, Any]:
    """One run's figures from its manifest."""
    manifest = json.loads((out / "manifest.json").read_text())
    verdict = manifest["verdict"]["fp32"]
    rows = [r for r in manifest["parity"]["fp32"]["rows"] if r.get("judged", True)]
    sets: dict[str, Any] = {}
    for name in dict.fromkeys(r["set"] for r in rows):
        worst = max((r for r in rows if r["set"] == name), key=lambda r: r["vertices_mean_mm"])
        floor = verdict["floor_by_set"][name]["mean_vertex_mm"]
        dec = verdict.get("decisions", {}).get(name)
        sets[name] = {"drift_mm": worst["vertices_mean_mm"], "drift_max_mm": worst["vertices_max_mm"],
                      "batch": worst["batch"], "floor_mm": floor,
                      "decided_otherwise": None if dec is None else [dec["items_decided_otherwise_any_batch"],
                                                                       dec["items"]]}
    seconds = next((ast.literal_eval(n.split(":", 1)[1].strip()) for n in manifest.get("notes", [])
                    if n.startswith("export seconds:")), {})
    return {"model": manifest["model"], "checkpoint": checkpoint, "weights": weights, "sets": sets,
            "goal_mm": verdict["goal_mm"], "floor_multiple": verdict["floor_multiple"],
            "verdict": verdict["verdict"], "passed_within": verdict["passed_within"],
            "judged_on": verdict.get("judged_on"),
            "conditioning_mm": verdict["conditioning"].get("perturbation_mean_vertex_mm"),
            "seconds": seconds}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        names = list(r["sets"])
        sets = [r["sets"][n] for n in names]
        decided = [s["decided_otherwise"] for s in sets]
        within = {"goal": f"within the goal ({r['goal_mm']:g} mm)",
                  "floor": f"within {r['floor_multiple']:g} x the floor (goal {r['goal_mm']:g} mm)"}
        verdict = f"PASS {within[r['passed_within']]}" if r["verdict"] == "PASS" else r["verdict"]
        seconds = r["seconds"]
        time_s = (f"{seconds['total']:.0f} s (parity {seconds.get('parity', 0):.0f} s)" if "total" in seconds else "-")
        cells = [r["model"], f"`{r['checkpoint']}`", r["weights"], " / ".join(names),
                 " / ".join(_g(s["drift_mm"]) for s in sets), " / ".join(_g(s["floor_mm"]) for s in sets),
                 " / ".join(f"{s['drift_mm'] / s['floor_mm']:.2f}" if s["floor_mm"] else "-" for s in sets),
                 _g(r["conditioning_mm"]),
                 "-" if all(d is None for d in decided) else
                 " / ".join(f"{d[0]} of {d[1]}" for d in decided if d is not None) + f" ({r['judged_on']})",
                 verdict, time_s]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_readme(readme: Path, text: str) -> None:
    doc = readme.read_text()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{readme}: no {BEGIN} ... {END} markers to replace")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", help="OUT_DIR::CHECKPOINT_FILE::WEIGHTS, one per trt-export run")
    ap.add_argument("--from-rows", type=Path, help="rows written earlier by --rows (runs given are appended)")
    ap.add_argument("--rows", type=Path, help="write the extracted rows as JSON here")
    ap.add_argument("--readme", type=Path, help="replace the marked table in this README")
    args = ap.parse_args(argv)
    rows = json.loads(args.from_rows.read_text()) if args.from_rows else []
    for run in args.runs:
        parts = run.split("::")
        if len(parts) != 3:
            raise SystemExit(f"{run!r}: expected OUT_DIR::CHECKPOINT_FILE::WEIGHTS")
        new = row_from_export(Path(parts[0]), parts[1], parts[2])
        rows = [r for r in rows if (r["model"], r["checkpoint"]) != (new["model"], new["checkpoint"])] + [new]
    if not rows:
        raise SystemExit("no runs given and no --from-rows")
    if args.rows:
        args.rows.write_text(json.dumps(rows, indent=1) + "\n")
    text = table(rows)
    if args.readme:
        write_readme(args.readme, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
