"""Regenerate the two files the seeded (untrained) default weights are measured from.

    .venv/bin/python tools/make_seeded_data.py [--video data/vtest.avi]

1. ``export/seeded_crops.png``: every hand-labelled person of tests/fixtures/vtest_people.json cropped
   from the sample video as the runtime crops a tracked person (square box, scale 1.2), stored at
   112 x 112 side by side in one lossless PNG strip. ``ResNet50Backbone.from_seed`` sets its BatchNorm statistics on
   these crops, so the seeded backbone's activations have the ranges trained BatchNorm gives on people.
2. ``export/seeded_features.npz``: per-channel mean and standard deviation of that seeded backbone's
   features on the same crops. The SPIN-style regressors of the seeded video models are scaled with
   them (export/seeded.py), so their poses and cameras stay near the mean on real features.

Both are deterministic functions of the video and the labels; rerun this after changing either, or the
backbone's seeded initialisation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import typer

ROOT = Path(__file__).resolve().parents[1]
STORE = 112  # side of one stored crop


def main(video: Path = typer.Option(ROOT / "data" / "vtest.avi", help="The sample video."),
         labels: Path = typer.Option(ROOT / "tests" / "fixtures" / "vtest_people.json"),
         out: Path = typer.Option(ROOT / "export", help="Where the two files go.")) -> None:
    import cv2

    from hmr_trt.export.backbone import ResNet50Backbone
    from hmr_trt.export.features import features_from_crops
    from hmr_trt.export.seeded import CROPS_FILE, FEATURES_FILE, person_crops
    from hmr_trt.runtime.crops import crop_from_frame, square_box
    from hmr_trt.runtime.video import frames_from_video

    if not video.is_file():
        typer.echo(f"error: sample video not found: {video} (make data/vtest.avi)", err=True)
        raise typer.Exit(1)
    frames_wanted = {int(k): v for k, v in json.loads(labels.read_text())["frames"].items()}
    crops = []
    for index, frame in frames_from_video(video, max_frames=max(frames_wanted) + 1):
        for box in frames_wanted.get(index, []):
            crops.append(crop_from_frame(frame, square_box(np.asarray(box, dtype=np.float32)), size=STORE))
    png = out / CROPS_FILE  # one strip, crop i at columns [i * STORE, (i + 1) * STORE)
    cv2.imwrite(str(png), np.concatenate(crops, axis=1)[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    typer.echo(f"{len(crops)} person crops -> {png}")

    backbone = ResNet50Backbone.from_seed(0)  # reads the mosaic just written
    features = features_from_crops(backbone, person_crops())
    np.savez(out / FEATURES_FILE, mean=features.mean(0).astype(np.float32),
             std=features.std(0).astype(np.float32), crops=np.int64(len(crops)))
    typer.echo(f"seeded backbone features on them: mean {features.mean():.3f}, std {features.std(0).mean():.3f} "
               f"-> {out / FEATURES_FILE}")


if __name__ == "__main__":
    sys.exit(typer.run(main))
