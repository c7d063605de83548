"""Latency and throughput of the streaming stage for each ``--emit`` mode, on a window model with a recurrent
step graph (VIBE: ``last`` steps once per frame) and one without (GLoT: middle-emitting, ``center`` only).

    python tools/stream_latency.py [--frames 200] [--tracks 3] [--vibe DIR] [--glot DIR] [--backend onnxruntime]

Without --vibe/--glot, small exports (the models' tiny configs, no backbone) are made in a temporary folder
(needs torch). Per-frame features of ``--tracks`` tracks are pushed frame by frame through the runtime's own
streamer choice (runtime/pipeline._streamer: the step graph for ``last`` where the export has one, else
windows) with one drain per frame, as ``trt-run``'s loop does; a frame's latency is the time from its push
to the moment its result leaves (in seconds and in frames). Throughput is given as frames per second and as
a ratio to ``--emit all`` (``center`` where ``all`` is refused) on the same model, measured in the same run.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from typing_extensions import Annotated


def tiny_export(model: str, out: Path) -> Path:
    from hmr_trt import registry
    from hmr_trt.export.pipeline import ExportOptions, run_export
    from hmr_trt.profile import ShapeProfile

    adapter = registry.adapter(model)
    run_export(ExportOptions(out=out, model=model, config=adapter.tiny_config(), profile=ShapeProfile(1, 4, 8),
                             with_backbone=False, parity_windows=3, build_engines=False))
    return out


def measure(export: Path, emit: str, frames: int, tracks: int, backend: str) -> dict:
    from hmr_trt.errors import HmrTrtError
    from hmr_trt.runtime.backends_select import open_backends
    from hmr_trt.runtime.pipeline import RunOptions, _streamer

    opts = RunOptions(out=Path("."), export_dir=export, emit=emit, backend=backend)
    with open_backends(export, backend, need_backbone=False, need_step=emit == "last") as backends:
        try:
            streamer = _streamer(backends, opts)
        except HmrTrtError as exc:
            return {"refused": str(exc)}
        rng = np.random.default_rng(0)
        feats = rng.standard_normal((tracks, frames, backends.feature_dim)).astype(np.float32)
        pushed, lat_s, lat_frames = {}, [], []
        start = time.perf_counter()
        for f in range(frames):
            for t in range(tracks):
                pushed[t, f] = time.perf_counter()
                out = streamer.push(t, f, feats[t, f])
                out += streamer.drain() if t == tracks - 1 else []
                now = time.perf_counter()
                for r in out:
                    lat_s.append(now - pushed[r.track_id, r.frame_index])
                    lat_frames.append(f - r.frame_index)
        now = time.perf_counter()
        for r in streamer.flush():
            lat_s.append(now - pushed[r.track_id, r.frame_index])
            lat_frames.append(frames - r.frame_index)
        total = time.perf_counter() - start
    ms = np.asarray(lat_s) * 1000
    return {"step_graph": emit == "last" and backends.step is not None, "results": len(lat_s),
            "frames_per_s": round(frames * tracks / total, 1),
            "latency_ms": {"p50": round(float(np.percentile(ms, 50)), 3), "p95": round(float(np.percentile(ms, 95)), 3),
                           "max": round(float(ms.max()), 3)},
            "latency_frames": {"p50": float(np.percentile(lat_frames, 50)), "max": int(max(lat_frames))}}


def main(frames: Annotated[int, typer.Option()] = 200, tracks: Annotated[int, typer.Option()] = 3,
         vibe: Annotated[Optional[Path], typer.Option()] = None, glot: Annotated[Optional[Path], typer.Option()] = None,
         backend: Annotated[str, typer.Option()] = "onnxruntime") -> None:
    report = {"frames": frames, "tracks": tracks, "backend": backend}
    with tempfile.TemporaryDirectory() as tmp:
        exports = {"vibe": vibe or tiny_export("vibe", Path(tmp) / "vibe"),
                   "glot": glot or tiny_export("glot", Path(tmp) / "glot")}
        for name, export in exports.items():
            rows = {emit: measure(export, emit, frames, tracks, backend) for emit in ("all", "center", "last")}
            base_emit = "all" if "frames_per_s" in rows["all"] else "center"  # middle-emitting: center only
            base = rows[base_emit]["frames_per_s"]
            for row in rows.values():
                if "frames_per_s" in row:
                    row[f"throughput_vs_{base_emit}"] = round(row["frames_per_s"] / base, 3)
            report[name] = rows
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    typer.run(main)
