"""Measure the full GLoT config: parameter count, export time, ONNX Runtime vs torch at batch 1/2/7
(max abs error and vertex drift through the synthetic body model), seeded spread, and the FP16 CPU
stand-in (``fp16_onnx_from_fp32`` + ``emulation_onnx_from_fp16``) for each FP16 recipe of the contract.

Usage: .venv/bin/python tools/glot_measure.py   (about a minute on 2 cores)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from hmr_trt.contract import KeepRule
from hmr_trt.engines.precision import emulation_onnx_from_fp16, fp16_onnx_from_fp32
from hmr_trt.engines.preflight import validate_onnx
from hmr_trt.export import onnx_export
from hmr_trt.export.body_model import ExportableSMPL
from hmr_trt.export.models.glot.adapter import ADAPTER
from hmr_trt.export.synthetic_smpl import make_synthetic_smpl
from hmr_trt.metrics import drift_mm, motion_spread_mm

OUTPUTS = ["pose_rotmat", "betas", "cam"]


def main() -> None:
    cfg = ADAPTER.default_config()
    contract = ADAPTER.contract_for(cfg)
    g = contract.model_graph
    ref = ADAPTER.reference(cfg)
    print("parameters", sum(p.numel() for p in ref.parameters()))
    tmp = Path(tempfile.mkdtemp())
    path = tmp / "temporal.onnx"
    start = time.time()
    onnx_export.onnx_from_module(ADAPTER.exportable(ref, "temporal"),
                                 g,
                                 ADAPTER.example_inputs(cfg, "temporal", 2), path)
    print(f"export {time.time() - start:.2f} s, {path.stat().st_size / 1e6:.1f} MB")
    validate_onnx(path)
    print("TensorRT preflight: ok")
    body = ExportableSMPL(make_synthetic_smpl()).eval()

    def vertices(rotmat: np.ndarray, betas: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            v, _ = body(torch.from_numpy(np.ascontiguousarray(rotmat[:, 0])),
                        torch.from_numpy(np.ascontiguousarray(betas[:, 0])))
        return v.numpy()

    (x7,) = ADAPTER.example_inputs(cfg, "temporal", 7, seed=11)
    x7 = x7.abs()  # SPIN features are non-negative
    with torch.no_grad():
        want = [t.numpy() for t in ref(x7)]
    ref_vertices = vertices(want[0], want[1])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (1, 2, 7):
        got = sess.run(OUTPUTS, {"features": x7[:b].numpy()})
        errs = [float(np.abs(a - w[:b]).max()) for a, w in zip(got, want)]
        mean, worst = drift_mm(vertices(got[0], got[1]), ref_vertices[:b])
        print(f"ORT batch {b}: max abs rotmat {errs[0]:.2e} betas {errs[1]:.2e} cam {errs[2]:.2e}; "
              f"vertex drift mean {mean:.2e} max {worst:.2e} mm")
    print(f"seeded spread over 7 windows: {motion_spread_mm(ref_vertices[:, None]):.1f} mm")
    # The stand-in's floor: every node (but Constants) blocked; tensors between FP32 nodes stay FP32
    # (engines/precision.py drop_fp32_round_trips), so this row should read 0 mm.
    every_op = tuple(sorted({n.op_type for n in onnx.load(str(path)).graph.node} - {"Constant"}))
    keep_lists = [(r.name, r.keep)
                  for r in contract.recipes if r.precision == "fp16"]
    keep_lists.append(("every node blocked (stand-in floor)", (KeepRule("all", every_op, "", "floor"),)))
    for name, block in keep_lists:
        info = fp16_onnx_from_fp32(path, tmp / "fp16.onnx", block)
        emulation_onnx_from_fp16(tmp / "fp16.onnx", tmp / "fp16.emu.onnx")
        got = ort.InferenceSession(str(tmp / "fp16.emu.onnx"),
                                   providers=["CPUExecutionProvider"]).run(OUTPUTS, {"features": x7.numpy()})
        mean, worst = drift_mm(vertices(got[0], got[1]), ref_vertices)
        print(f"FP16 stand-in, {name} ({info.get('blocked_nodes')} nodes FP32): vertex drift "
              f"mean {mean:.3f} max {worst:.3f} mm")


if __name__ == "__main__":
    main()
