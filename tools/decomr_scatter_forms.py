"""DecoMR's image->UV scatter, two exportable forms side by side (issue: DecoMR through ONNX and TensorRT).

For the full default configuration (seeded weights, hmr-trt's synthetic UV layout) it exports the model
graph twice, with the scatter as ``dense`` (one-hot by Equal, then MatMul: plugin-free) and as ``scatter``
(``scatter_add`` -> ONNX ScatterElements with reduction=add), and reports for each:
- the TensorRT op preflight (engines/preflight.py: which TensorRT versions can parse it);
- FP32 parity against the torch reference (the official index_add form) on 7 random crops and 7 crops of
  people in the sample video, batch 1/2/7, judged as trt-export judges DecoMR (decisions pinned), with the
  end-to-end drift and the inputs decided otherwise beside;
- ONNX Runtime CPU time per call at batch 1 and 7, both forms timed in alternation (round robin).

    .venv/bin/python tools/decomr_scatter_forms.py [--video data/vtest.avi] [--budget-s 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import onnx

from hmr_trt import registry
from hmr_trt.engines.preflight import validate_onnx
from hmr_trt.errors import ExportError
from hmr_trt.export import onnx_export, parity
from hmr_trt.export.bench_timing import RoundRobin, System, time_systems
from hmr_trt.export.pipeline import Pins
from hmr_trt.export.sample import default_sample_video
from hmr_trt.runtime.backends import OnnxRuntimeBackend

FORMS = ("dense", "scatter")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=None, help="default: the sample video")
    ap.add_argument("--budget-s", type=float, default=3.0, help="round-robin seconds per batch size")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    video = args.video or default_sample_video()
    adapter = registry.adapter("decomr")
    cfg = adapter.default_config()
    reference = adapter.reference(cfg)
    contract = adapter.contract_for(cfg)
    graph = contract.model_graph
    example = adapter.example_inputs(cfg, graph.name, 7, seed=0)
    sets = {"random": {"images": example[0].numpy()}}
    if video is not None:
        sets["video"] = {"images": np.ascontiguousarray(
            adapter.video_inputs(cfg, graph.name, Path(video), 7)["images"], dtype=np.float32)}
    refs = {k: parity.reference_outputs(reference, None, w, graph, contract) for k, w in sets.items()}
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        backends = {}
        for form in FORMS:
            path = Path(tmp) / f"decomr_{form}.onnx"
            onnx_export.onnx_from_module(reference.with_scatter(form).eval(), graph,
                                         adapter.example_inputs(cfg, graph.name, 2), path, max_batch=16)
            try:
                validate_onnx(path)
                preflight = "passes (TensorRT 8.6 and later)"
            except ExportError as exc:
                preflight = f"fails: {str(exc)[:300]}"
            backend = stack.enter_context(OnnxRuntimeBackend(path))
            backends[form] = backend
            pinning = Pins(adapter, reference, None, contract, Path(tmp)).pinning(path, stack)  # as trt-export
            report = parity.compare(lambda name, feed, b=backend: b.infer(feed), refs, sets, batch_sizes=(1, 2, 7),
                                    contract=contract, pinning=pinning)
            ops = sorted({n.op_type for n in onnx.load(str(path)).graph.node}
                         & {"ScatterElements", "ScatterND", "Equal", "MatMul"})
            results[form] = {"preflight": preflight, "ops": ops, "passed": report.passed,
                             "failures": report.failures, "drift_by_set": report.drift_by_set(),
                             "decisions": {k: {x: v[x] for x in ("items_decided_otherwise", "unpinned_vertices_mean_mm",
                                                                 "unpinned_vertices_max_mm", "cell_flips",
                                                                 "foreground_flips")}
                                           for k, v in report.decisions_by_set().items()},
                             "batch_invariance": report.batch_invariance}
            print(f"{form}: ops {ops}; preflight {preflight}; FP32 {'PASS' if report.passed else 'MISS'} "
                  f"{json.dumps(results[form]['drift_by_set'])}; decisions {json.dumps(results[form]['decisions'])}",
                  flush=True)
        plan = RoundRobin(warmup=1, min_reps=3, max_reps=30, budget_s=args.budget_s)
        timings = {}
        for batch in (1, 7):
            feed = {"images": sets["random"]["images"][:batch]}
            rows = time_systems("decomr", graph.name, batch,
                                [System(f"onnxruntime fp32 {f}", lambda b=backends[f], x=feed: b.infer(x))
                                 for f in FORMS],
                                plan)
            timings[batch] = {r.system: {"min_ms": r.min_ms, "median_ms": r.median_ms, "runs": r.runs} for r in rows}
            print(f"batch {batch}: " + "; ".join(f"{r.system} min {r.min_ms:.1f} ms median {r.median_ms:.1f} ms "
                                                 f"({r.runs} runs)" for r in rows), flush=True)
        results["timings"] = timings
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
