"""Measure the instance-aware network's FP32 export at the released config (CPU, ONNX Runtime):
export time, max |ORT - torch| per map at batch 1/2/7 on random images and letterboxed sample-video
frames, batch invariance, drift after post-processing in mm through the synthetic body model, and
the seeded reference's motion spread.

    .venv/bin/python tools/instancehmr_parity_report.py [--video data/vtest.avi] [--out /tmp/instancehmr] [--fp16]

``--fp16`` measures the FP16 CPU stand-in instead: onnxconverter-common FP16 with the contract's ``fp16``
recipe nodes kept FP32, then ``engines.precision.emulation_onnx_from_fp16`` (FP32 compute, FP16 storage).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from hmr_trt.export.body_model import ExportableSMPL
from hmr_trt.export.models.instancehmr import postprocess as post
from hmr_trt.export.onnx_export import onnx_from_module
from hmr_trt.export.synthetic_smpl import make_synthetic_smpl
from hmr_trt.metrics import drift_mm, motion_spread_mm
from hmr_trt.registry import adapter
from hmr_trt.runtime import scene
from hmr_trt.runtime.video import frames_from_video


def fp16_stand_in(path: Path, recipe, out: Path) -> Path:
    import re
    import warnings

    import onnx
    from onnxconverter_common import float16

    from hmr_trt.engines.precision import FP16_MAX, _fp32_graph_outputs, emulation_onnx_from_fp16

    model = onnx.load(str(path))
    keep = sorted(n.name for n in model.graph.node
                  if any(n.op_type in r.ops and re.search(r.scope, n.name) for r in recipe.keep))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fp16 = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=[], node_block_list=keep,
                                                min_positive_val=0.0, max_finite_val=FP16_MAX)
    _fp32_graph_outputs(fp16)
    onnx.save(fp16, str(out / "maps_fp16.onnx"))
    emulation_onnx_from_fp16(out / "maps_fp16.onnx", out / "maps_fp16_emulated.onnx")
    print(f"FP16 stand-in: {len(keep)} nodes kept FP32")
    return out / "maps_fp16_emulated.onnx"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=Path("data/vtest.avi"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/instancehmr"))
    ap.add_argument("--fp16", action="store_true", help="measure the FP16 CPU stand-in")
    opts = ap.parse_args()
    opts.out.mkdir(parents=True, exist_ok=True)
    import onnxruntime as ort

    a = adapter("instancehmr")
    cfg = a.default_config()
    t = time.perf_counter()
    model = a.reference(cfg)
    report = {"build_s": time.perf_counter() - t}
    g = a.contract_for(cfg).model_graph
    path = opts.out / "maps.onnx"
    t = time.perf_counter()
    onnx_from_module(a.exportable(model, "maps"), g,
                     a.example_inputs(cfg, "maps", 2), path)
    report["export_s"] = time.perf_counter() - t
    from hmr_trt.engines.preflight import validate_onnx

    validate_onnx(path)
    if opts.fp16:
        path = fp16_stand_in(path, a.contract_for(cfg).recipe_for("fp16"), opts.out)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    video = np.stack([scene.letterbox(f, cfg.image_size, bgr=True)[0] for _, f in frames_from_video(opts.video, max_frames=7)])
    body = ExportableSMPL(make_synthetic_smpl()).eval()

    def body_np(feed):
        with torch.no_grad():
            v, j = body(torch.from_numpy(feed["pose_rotmat"]), torch.from_numpy(feed["betas"]))
        return {"vertices": v.numpy(), "joints3d": j.numpy()}

    inputs = {f"random b{b}": a.example_inputs(cfg, "maps", b, seed=b)[0].numpy() for b in (1, 2, 7)}
    inputs.update({"video b1": video[:1], "video b2": video[:2], "video b7": video})
    all_verts = []
    for name, x in inputs.items():
        t = time.perf_counter()
        got = sess.run(None, {"image": x})
        ort_s = time.perf_counter() - t
        with torch.no_grad():
            ref_maps = model(torch.from_numpy(x))
            ref = post.postprocess(*ref_maps)
            ref_v, ref_j = body(ref["pose_rotmat"], ref["betas"])
        row = {g.output_names[k]: float(np.abs(got[k] - ref_maps[k].numpy()).max()) for k in range(3)}
        people = scene.people_from_maps(got, 0.2)
        keys = [(p["image"], p["map_yx"]) for p in people]
        ref_keys = [(b, tuple(yx)) for b, yx in zip(ref["batch_ids"].tolist(), ref["centers_yx"].tolist())]
        common = [k for k in keys if k in ref_keys]
        row.update(people_torch=len(ref_keys), people_ort=len(keys), common=len(common), ort_s=ort_s)
        if common:
            mine = body_np({"pose_rotmat": np.stack([people[keys.index(k)]["pose_rotmat"] for k in common]),
                            "betas": np.stack([people[keys.index(k)]["betas"] for k in common])})
            idx = [ref_keys.index(k) for k in common]
            row["vertex_mm_mean_max"] = drift_mm(mine["vertices"], ref_v.numpy()[idx])
            row["joint_mm_mean_max"] = drift_mm(mine["joints3d"], ref_j.numpy()[idx])
            all_verts.append(ref_v.numpy())
        report[name] = row
        print(name, json.dumps(row))
    one = [sess.run(None, {"image": video[i:i + 1]}) for i in range(len(video))]
    whole = sess.run(None, {"image": video})
    report["batch_invariance_max"] = max(float(np.abs(np.concatenate([o[k] for o in one]) - whole[k]).max())
                                         for k in range(3))
    report["motion_spread_mm"] = motion_spread_mm(np.concatenate(all_verts)[:, None]) if all_verts else None
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, dict)}))
    (opts.out / ("report_fp16.json" if opts.fp16 else "report.json")).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
