"""How well a peers' file (``--format vibe``) puts the meshes on the people, as the official renderer draws them.

    .venv/bin/python tools/peer_overlap.py RUN_DIR [--official CHECKOUT_OF_mkocabas/VIBE]

RUN_DIR is a ``trt-run --format vibe`` output folder (the peer file and the ``track_<id>.npz`` files,
whose ``boxes`` are the detection boxes). For every row of the file the mesh is projected with the
row's ``orig_cam`` the way the official renderer does (the mesh turned 180 degrees about x, the
projection matrix of ``WeakPerspectiveCamera.get_projection_matrix`` compiled from the official
``lib/utils/renderer.py`` when ``--official`` is given, else the same matrix written from its
definition), and the outline's box is compared with the detection box: median IoU, and the share of
2D joints (``joints2d_img_coord`` when saved) inside their box.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from hmr_trt.runtime.vibe_format import PEER_DEMOS


def projection_matrix(official: Optional[Path]):
    if official is None:
        def get_p(scale, translation):
            p = np.eye(4)
            p[0, 0], p[1, 1] = scale
            p[0, 3], p[1, 3] = translation[0] * scale[0], -translation[1] * scale[1]
            p[2, 2] = -1
            return p
        return get_p
    path = official / "lib" / "utils" / "renderer.py"
    tree = ast.parse(path.read_text())
    node = next(i for c in tree.body if isinstance(c, ast.ClassDef) and c.name == "WeakPerspectiveCamera"
                for i in c.body if isinstance(i, ast.FunctionDef) and i.name == "get_projection_matrix")
    scope = {"np": np}
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), scope)

    def call(scale, translation):
        cam = type("Camera", (), {"scale": scale, "translation": translation})()
        return scope["get_projection_matrix"](cam)
    return call


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def main(run_dir: Path, official: Optional[Path] = typer.Option(None, help="A checkout of mkocabas/VIBE.")) -> None:
    import joblib

    summary = json.loads((run_dir / "summary.json").read_text())
    width, height = int(summary["width"]), int(summary["height"])
    files = [run_dir / d.file for d in PEER_DEMOS.values() if (run_dir / d.file).is_file()]
    if not files:
        typer.echo(f"error: no peer file in {run_dir} (run trt-run --format vibe)", err=True)
        raise typer.Exit(1)
    results = joblib.load(files[0])
    get_p = projection_matrix(official)
    ious, inside, total = [], 0, 0
    for row in summary["track_files"]:
        track = np.load(run_dir / row["file"])
        entry = results[int(row["id"])] if row["id"].lstrip("-").isdigit() else results[row["id"]]
        for i, box in enumerate(np.asarray(track["boxes"], np.float64)[:, :4]):
            p = get_p(entry["orig_cam"][i][:2], entry["orig_cam"][i][2:])
            v = np.asarray(entry["verts"][i], np.float64) * np.array([1.0, -1.0, -1.0])  # render(): Rx(180)
            clip = np.concatenate([v, np.ones((len(v), 1))], 1) @ p.T
            ndc = clip[:, :2] / clip[:, 3:4]
            px = np.stack([(ndc[:, 0] + 1) / 2 * width, (1 - ndc[:, 1]) / 2 * height], 1)  # pyrender viewport
            ious.append(iou(np.array([*px.min(0), *px.max(0)]), box))
            if "joints2d_img_coord" in entry:
                j = entry["joints2d_img_coord"][i]
                inside += int(((j[:, 0] >= box[0]) & (j[:, 0] <= box[2]) & (j[:, 1] >= box[1]) & (j[:, 1] <= box[3])).sum())
                total += len(j)
    ious = np.array(ious)
    typer.echo(f"{files[0].name}: {len(ious)} rows, median IoU of the drawn mesh with its detection box "
               f"{np.median(ious):.3f} (p10 {np.percentile(ious, 10):.3f}, p90 {np.percentile(ious, 90):.3f})"
               + (f"; {100 * inside / total:.1f}% of the 2D joints inside their box" if total else "")
               + (" [official projection matrix]" if official else ""))


if __name__ == "__main__":
    sys.exit(typer.run(main))
