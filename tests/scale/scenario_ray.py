"""Run inside a network namespace by test_ray.py: a folder of videos across a local Ray instance."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hmr_trt.errors import HmrTrtError
from hmr_trt.runtime.pipeline import RunOptions
from hmr_trt.runtime.ray_videos import run_videos

export_dir, videos, out = (Path(a) for a in sys.argv[1:4])
results = {}
try:
    run_videos(videos, RunOptions(out=out / "unreachable", export_dir=export_dir), address="127.0.0.1:1")
except HmrTrtError as exc:
    results["unreachable"] = str(exc)
seen = []
summary = run_videos(videos, RunOptions(out=out / "run", export_dir=export_dir, backend="onnxruntime", emit="all",
                                        min_track_frames=8), actors=2, progress=lambda name, row: seen.append(name))
results["summary"], results["progress"] = summary, seen
(out / "results.json").write_text(json.dumps(results, indent=2))
