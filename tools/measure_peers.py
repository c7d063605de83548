"""Measure TCMR, MPS-Net and VIBE at their released configs (seeded weights) on this CPU.

Per model: parameter count, export time of the model graph, ONNX Runtime vs torch at batch 1, 2 and 7
(max abs error of rotation matrices, betas, camera; mean/max vertex drift in mm through the
synthetic body model), seeded motion spread (mm), ORT FP16 drift of each FP16 recipe. For VIBE also the step graph, and the per-frame
cost of streaming (one step-graph call per new frame) against re-running a 16-frame window per new
frame (ONNX Runtime CPU, the two measured alternately; min and median).

    python tools/measure_peers.py [--models tcmr,mpsnet,vibe] [--repeats 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tcmr,mpsnet,vibe")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import onnxruntime as ort

    from hmr_trt import registry
    from hmr_trt.engines.preflight import validate_onnx
    from hmr_trt.export.body_model import ExportableSMPL
    from hmr_trt.export.onnx_export import onnx_from_module
    from hmr_trt.export.synthetic_smpl import make_synthetic_smpl
    from hmr_trt.metrics import drift_mm, motion_spread_mm

    torch.set_num_threads(args.threads)
    body = ExportableSMPL(make_synthetic_smpl(0)).eval()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads

    def vertices(rotmat: np.ndarray, betas: np.ndarray) -> np.ndarray:
        lead = betas.shape[:-1]
        with torch.no_grad():
            v, _ = body(torch.from_numpy(rotmat.reshape(-1, 24, 3, 3)), torch.from_numpy(betas.reshape(-1, 10)))
        return v.numpy().reshape(*lead, -1, 3)

    def export(adapter, model, graph, cfg, path):
        spec = graph
        t0 = time.perf_counter()
        onnx_from_module(adapter.exportable(model, graph.name), spec, adapter.example_inputs(cfg, graph.name, 2), path)
        seconds = time.perf_counter() - t0
        validate_onnx(path)
        return seconds, ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    tmp = Path(tempfile.mkdtemp())
    for name in args.models.split(","):
        adapter = registry.adapter(name)
        cfg = adapter.default_config()
        model = adapter.reference(cfg)
        params = sum(p.numel() for p in model.parameters())
        graph = adapter.contract_for(cfg).model_graph
        seconds, session = export(adapter, model, graph, cfg, tmp / f"{name}.onnx")
        x = adapter.example_inputs(cfg, graph.name, 7, seed=4)[0]
        with torch.no_grad():
            ref = [t.numpy() for t in model(x)]
        ref_v = vertices(ref[0], ref[1])
        print(f"{name}: {params / 1e6:.2f} M parameters, export {seconds:.1f} s, "
              f"seeded spread {motion_spread_mm(ref_v):.0f} mm")
        for batch in (1, 2, 7):
            got = session.run(list(graph.output_names), {"features": x[:batch].numpy()})
            errs = [float(np.abs(g - r[:batch]).max()) for g, r in zip(got, ref)]
            mean, worst = drift_mm(vertices(got[0], got[1]), ref_v[:batch])
            print(f"  ORT vs torch @ batch {batch}: rotmat {errs[0]:.1e}, betas {errs[1]:.1e}, cam {errs[2]:.1e}; "
                  f"vertices mean {mean:.2e} mm, max {worst:.2e} mm")
        for recipe in (r for r in adapter.contract_for(cfg).recipes if r.precision == "fp16"):
            from hmr_trt.engines.precision import fp16_onnx_from_fp32

            rules = recipe.keep
            dst = tmp / f"{name}_{recipe.name}.onnx"
            fp16_onnx_from_fp32(tmp / f"{name}.onnx", dst, rules)
            got = ort.InferenceSession(str(dst), opts, providers=["CPUExecutionProvider"]).run(
                list(graph.output_names), {"features": x.numpy()})
            mean, worst = drift_mm(vertices(got[0], got[1]), ref_v)
            print(f"  ORT FP16 recipe {recipe.name} vs torch FP32 @ batch 7: vertices mean {mean:.3f} mm, "
                  f"max {worst:.3f} mm")
        for recipe in (r for r in adapter.contract_for(cfg).recipes if r.precision == "int8"):
            import onnx

            from hmr_trt.calibration.quantize import int8_onnx_from_fp32
            from hmr_trt.engines.precision import rule_matches

            rules = recipe.int8_exclude
            excluded = [n.name for n in onnx.load(str(tmp / f"{name}.onnx")).graph.node if any(rule_matches(r, n) for r in rules)]
            calib = adapter.example_inputs(cfg, graph.name, 32, seed=9)[0].numpy()
            dst = tmp / f"{name}_{recipe.name}.onnx"
            int8_onnx_from_fp32(tmp / f"{name}.onnx", dst, calib, tmp / f"{name}_cache.json", excluded)
            got = ort.InferenceSession(str(dst), opts, providers=["CPUExecutionProvider"]).run(
                list(graph.output_names), {"features": x.numpy()})
            mean, worst = drift_mm(vertices(got[0], got[1]), ref_v)
            print(f"  ORT INT8 recipe {recipe.name} ({len(excluded)} nodes excluded, 32 random calibration windows) "
                  f"vs torch FP32 @ batch 7: vertices mean {mean:.3f} mm, max {worst:.3f} mm")
        if name != "vibe":
            continue
        step_graph = adapter.contract_for(cfg).graph("step")
        seconds, step = export(adapter, model, step_graph, cfg, tmp / "vibe_step.onnx")
        feats, hidden = adapter.example_inputs(cfg, "step", 7, seed=5)
        from hmr_trt.export.models.vibe.model import VIBEStep

        with torch.no_grad():
            sref = [t.numpy() for t in VIBEStep(model)(feats, hidden)]
        print(f"vibe step graph: export {seconds:.1f} s")
        for batch in (1, 2, 7):
            got = step.run(list(step_graph.output_names), {"features": feats[:batch].numpy(),
                                                           "hidden": hidden[:batch].numpy()})
            errs = [float(np.abs(g - r[:batch]).max()) for g, r in zip(got, sref)]
            print(f"  step ORT vs torch @ batch {batch}: rotmat {errs[0]:.1e}, betas {errs[1]:.1e}, "
                  f"cam {errs[2]:.1e}, next_hidden {errs[3]:.1e}")
        # per-frame cost, one track: a step call vs a 16-frame window call (alternated)
        window = x[:1].numpy()
        f1, h1 = feats[:1].numpy(), hidden[:1].numpy()
        times = {"step": [], "window": []}
        for _ in range(3):  # warm-up
            step.run(None, {"features": f1, "hidden": h1})
            session.run(None, {"features": window})
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            step.run(None, {"features": f1, "hidden": h1})
            times["step"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            session.run(None, {"features": window})
            times["window"].append(time.perf_counter() - t0)
        for k, v in times.items():
            print(f"  per new frame, {k}: min {min(v) * 1e3:.2f} ms, median {statistics.median(v) * 1e3:.2f} ms "
                  f"({args.repeats} runs, {args.threads} thread(s))")
        tracks = 8  # batched across tracks: one step call for 8 tracks vs one 8-window call
        f8, h8, w8 = feats.repeat(2, 1)[:tracks].numpy(), hidden.repeat(2, 1, 1)[:tracks].numpy(), x.repeat(2, 1, 1)[:tracks].numpy()
        batched = {"step": [], "window": []}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            step.run(None, {"features": f8, "hidden": h8})
            batched["step"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            session.run(None, {"features": w8})
            batched["window"].append(time.perf_counter() - t0)
        for k, v in batched.items():
            print(f"  per new frame of {tracks} tracks (one batched call), {k}: min {min(v) * 1e3:.2f} ms, "
                  f"median {statistics.median(v) * 1e3:.2f} ms")
        print(f"  window/step median ratio {statistics.median(times['window']) / statistics.median(times['step']):.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
