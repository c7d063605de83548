"""Scale-out figures for the README (issue 14): trt-run --videos on Ray with 1 vs 2 actors, and one window
through a CPU Triton server (PyTriton) vs local ONNX Runtime. Run it inside its own network namespace:

    unshare -n -p -f --kill-child sh -c 'ip link set lo up && exec .venv/bin/python tools/measure_scale.py \
        EXPORT_DIR data/vtest.avi OUT [--triton-python .venv-triton/bin/python]'

(the Triton server's python-backend stub needs LD_LIBRARY_PATH=<this Python's lib dir> with pyenv builds).
Writes OUT/scale.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np


def clips(video: Path, folder: Path, count: int, frames: int) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(video))
    for i in range(count):
        writer = None
        for _ in range(frames):
            ok, frame = cap.read()
            if not ok:
                break
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(str(folder / f"clip{i}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
            writer.write(frame)
        writer.release()
    cap.release()


def ray_figures(export_dir: Path, folder: Path, out: Path) -> dict:
    from hmr_trt.runtime.pipeline import RunOptions
    from hmr_trt.runtime.ray_videos import run_videos

    rows = {}
    for actors in (1, 2):
        opts = RunOptions(out=out / f"ray{actors}", export_dir=export_dir, backend="onnxruntime", emit="all",
                          detector="hog", threads=1)
        summary = run_videos(folder, opts, actors=actors)
        rows[f"{actors}_actors"] = {"total_s": summary["total_s"], "frames": summary["frames"],
                                    "frames_per_second": summary["frames_per_second"], "ok": summary["ok"]}
    return rows


def triton_figures(export_dir: Path, server_python: str, out: Path, requests: int = 20) -> dict:
    from hmr_trt.errors import HmrTrtError
    from hmr_trt.export.bench_timing import RoundRobin, System, round_robin
    from hmr_trt.manifest import Manifest
    from hmr_trt.runtime.backends import OnnxRuntimeBackend
    from hmr_trt.runtime.triton_backend import TritonBackend

    manifest = Manifest.read(export_dir)
    contract = manifest.model_contract()
    graph = contract.model_graph
    art = manifest.find(graph.name, "onnx", "fp32")
    server = subprocess.Popen([server_python, "-m", "hmr_trt.runtime.triton_serve", str(export_dir)],
                              stdout=open(out / "server.log", "w"), stderr=subprocess.STDOUT)
    try:
        name = f"{contract.name}_{graph.name}"
        for _ in range(300):
            try:
                with TritonBackend("127.0.0.1:8000", name, timeout=5):
                    break
            except HmrTrtError:
                time.sleep(1)
        rows = {}
        for batch in (1, 8):
            feed = {graph.inputs[0].name: np.random.default_rng(0).standard_normal(
                [batch] + list(art.inputs[0].shape[1:])).astype(np.float32)}
            with TritonBackend("127.0.0.1:8000", name) as remote, OnnxRuntimeBackend(export_dir / art.path, threads=1) as local:
                # alternate the two, so load changes hit both
                times = round_robin([System("triton", lambda f=feed: remote.infer(f)),
                                     System("local", lambda f=feed: local.infer(f))],
                                    RoundRobin(warmup=3, min_reps=requests, max_reps=requests, budget_s=0.0))
            rows[f"batch_{batch}"] = {k: {"min_ms": round(min(v), 2), "median_ms": round(float(np.median(v)), 2),
                                          "requests_per_s_at_median": round(1e3 / float(np.median(v)), 2)}
                                      for k, v in times.items()}
        return rows
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("video", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--triton-python", default=os.environ.get("HMR_TRT_TRITON_PY"))
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=40)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    clips(args.video, args.out / "videos", args.clips, args.frames)
    result = {"load_average_at_start": os.getloadavg(), "cpus": os.cpu_count()}
    result["ray"] = ray_figures(args.export_dir, args.out / "videos", args.out)
    if args.triton_python:
        result["triton_vs_local"] = triton_figures(args.export_dir, args.triton_python, args.out)
    result["load_average_at_end"] = os.getloadavg()
    (args.out / "scale.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
