"""Run inside a network namespace by test_triton_server.py: a CPU Triton server (PyTriton) serving an export,
trt-run's pipeline against it and locally, error cases, and request timings. Writes results.json to OUT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from hmr_trt.errors import HmrTrtError
from hmr_trt.export.bench_timing import RoundRobin, System, round_robin
from hmr_trt.manifest import Manifest
from hmr_trt.runtime.backends import OnnxRuntimeBackend
from hmr_trt.runtime.pipeline import RunOptions, run_video
from hmr_trt.runtime.triton_backend import TritonBackend

export_dir, clip, out, server_python = (Path(a) for a in sys.argv[1:5])
url = "127.0.0.1:8000"
results: dict = {}
contract = Manifest.read(export_dir).model_contract()
model = f"{contract.name}_{contract.model_graph.name}"

try:  # no server yet: one line
    with TritonBackend(url, model, timeout=5):
        pass
except HmrTrtError as exc:
    results["down"] = str(exc)

log = open(out / "server.log", "w")
server = subprocess.Popen([str(server_python), "-m", "hmr_trt.runtime.triton_serve", str(export_dir)],
                          stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
try:
    deadline = time.time() + 240
    waiting = [f"{contract.name}_{g.name}" for g in contract.graphs if g.role != "step"]
    while waiting:  # the server loads its models one after another
        try:
            with TritonBackend(url, waiting[0], timeout=5):
                waiting.pop(0)
        except HmrTrtError:
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit("the Triton server did not come up; see server.log") from None
            time.sleep(1)
    results["startup_s"] = round(time.time() - (deadline - 240), 1)

    try:  # a model of that name with other inputs
        with TritonBackend(url, f"{contract.name}_body_model", expected_inputs=("features",)):
            pass
    except HmrTrtError as exc:
        results["wrong_model"] = str(exc)

    for backend, sub in (("triton", "remote"), ("onnxruntime", "local")):
        opts = RunOptions(out=out / sub, export_dir=export_dir, video=clip, backend=backend,
                          triton_url=url if backend == "triton" else None, emit="all", min_track_frames=8)
        t = time.perf_counter()
        summary = run_video(opts)
        results[f"{sub}_s"] = round(time.perf_counter() - t, 3)
        results[f"{sub}_backend"] = summary["backend"]

    # requests per second and latency of one window through the server vs locally (alternating)
    art = Manifest.read(export_dir).find(contract.model_graph.name, "onnx", "fp32")
    window = np.random.default_rng(0).standard_normal([1] + art.inputs[0].shape[1:]).astype(np.float32)
    feed = {art.inputs[0].name: window}
    with TritonBackend(url, model) as remote, OnnxRuntimeBackend(export_dir / art.path) as local:
        lat = round_robin([System("triton", lambda: remote.infer(feed)), System("local", lambda: local.infer(feed))],
                          RoundRobin(warmup=3, min_reps=15, max_reps=15, budget_s=0.0))  # ms, alternating
    results["latency_ms"] = {k: {"min": min(v), "median": float(np.median(v))} for k, v in lat.items()}
finally:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
    (out / "results.json").write_text(json.dumps(results, indent=2))
