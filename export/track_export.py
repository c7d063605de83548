"""``trt-export`` for ``track`` models (WHAM): the ``init`` and the one-frame model (``step``) graphs,
validated, and their parity: ONNX Runtime fed frame by frame (runtime/wham_stream.py, the deployed
path) against the torch whole-sequence forward on seeded tracks. FP32 only so far; written through a
staging folder like every export (nothing left behind on failure)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from hmr_trt import registry
from hmr_trt.engines.preflight import MAX_OPSET_TRT86, validate_onnx
from hmr_trt.errors import ConfigError, ParityError
from hmr_trt.manifest import Artifact, Manifest, sha256_of, staged_output, tool_versions

from . import onnx_export

# FP32 step parity: each output within FLOOR_MULTIPLE x its own float32 floor (the torch sequence vs itself under
# ulp-sized perturbations of inputs or weights, measured in the same run), or within ROUNDOFF x its magnitude where
# the floor is 0. A fixed 1e-4 relative tolerance let a motion-encoder LSTM weight 1% off through (trans_world
# moved 5.4e-4 m, 60x its floor; tiny fixture, measured)
ROUNDOFF = 1e-6
PARITY_TRACKS, PARITY_EXTRA_FRAMES = 3, 20


def seeded_tracks(adapter: Any, cfg: Any, tracks: int, frames: int, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Inputs of ``tracks`` whole tracks (the model's ``forward`` arguments) drawn from ``seed``."""
    from hmr_trt.export.models.wham.adapter import example_frame, example_init

    gen = torch.Generator().manual_seed(seed)
    steps = [example_frame(cfg, tracks, gen) for _ in range(frames)]
    seq = {k: torch.stack([s[k] for s in steps], dim=1) for k in steps[0] if k != "camera"}
    drift = torch.linspace(0, 40, frames)[None, :]
    seq["bbox"][..., 0] += drift  # the box walks across the image
    init = example_init(cfg, tracks, gen)
    seq["keypoints"][:, 0] = init["keypoints"]
    return {**seq, "camera": steps[0]["camera"], "init_global_orient": init["init_global_orient"],
            "init_body_pose": init["init_body_pose"], "init_betas": init["init_betas"]}


def step_parity(paths: Dict[str, Any], reference: Any, adapter: Any, cfg: Any, contract: Any) -> Dict[str, Any]:
    from hmr_trt.runtime.backends import OnnxRuntimeBackend
    from hmr_trt.runtime.wham_stream import WHAMTracks

    from .parity import FLOOR_MULTIPLE, FLOOR_REL, _perturbed, _perturbed_model

    frames = cfg.min_frames + PARITY_EXTRA_FRAMES
    seq = seeded_tracks(adapter, cfg, PARITY_TRACKS, frames)
    names = ("keypoints", "mask", "features", "cam_angvel", "bbox", "camera", "init_global_orient", "init_body_pose",
             "init_betas")

    def sequence(model: Any, arrays: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        with torch.no_grad():
            return model(*(arrays[k] for k in names))

    ref = sequence(reference, seq)
    # the float32 floor, as every model's FP32 parity (export/parity.py): how far the torch sequence moves from
    # itself when its float inputs, then its weights, are multiplied by 1 +- FLOOR_REL (random signs)
    moved = _perturbed({k: v.numpy() for k, v in seq.items() if k != "mask"}, FLOOR_REL, np.random.default_rng(0))
    by_inputs = sequence(reference, {**seq, **{k: torch.from_numpy(v) for k, v in moved.items()}})
    by_weights = sequence(_perturbed_model(reference, FLOOR_REL, 1), seq)
    floor = {k: float(max(np.abs(by_inputs[k].numpy() - r.numpy()).max(), np.abs(by_weights[k].numpy() - r.numpy()).max()))
             for k, r in ref.items()}
    got: Dict[str, list] = {k: [] for k in ref}
    with OnnxRuntimeBackend(paths["init"]) as ib, OnnxRuntimeBackend(paths["step"]) as sb:
        tracks = WHAMTracks.from_contract(ib, sb, contract)
        tracks.start({i: {"init_global_orient": seq["init_global_orient"][i].numpy(),
                          "init_body_pose": seq["init_body_pose"][i].numpy(), "init_betas": seq["init_betas"][i].numpy(),
                          "keypoints": seq["keypoints"][i, 0].numpy()} for i in range(PARITY_TRACKS)})
        for t in range(frames):
            out = tracks.step({i: {"keypoints": seq["keypoints"][i, t].numpy(), "mask": seq["mask"][i, t].numpy(),
                                   "features": seq["features"][i, t].numpy(), "cam_angvel": seq["cam_angvel"][i, t].numpy(),
                                   "bbox": seq["bbox"][i, t].numpy(), "camera": seq["camera"][i].numpy()}
                               for i in range(PARITY_TRACKS)})
            for k in got:
                got[k].append(np.stack([out[i][k] for i in range(PARITY_TRACKS)]))
    worst, failures = {}, []
    for k, r in ref.items():
        r = r.numpy()
        g = np.stack(got[k], axis=1)
        worst[k] = float(np.abs(g - r).max())
        limit = max(ROUNDOFF * max(1.0, float(np.abs(r).max())), FLOOR_MULTIPLE * floor[k])
        if not worst[k] <= limit:
            failures.append(f"{k} differs by {worst[k]:.3g} (over {FLOOR_MULTIPLE:g} x its float32 floor "
                            f"{floor[k]:.3g}: limit {limit:.3g})")
    return {"tracks": PARITY_TRACKS, "frames": frames, "max_abs": worst, "floor_max_abs": floor,
            "floor_multiple": FLOOR_MULTIPLE, "relative_perturbation": FLOOR_REL, "failures": failures}


FEATURE_EXPORTS = ("hmr2", "vitpose")  # sub-folders of a WHAM export: the image feature and the keypoints


def feature_exports(opts: Any, cfg: Any, stage: Path, manifest: Manifest, step: Any) -> None:
    """The exports WHAM's video pipeline reads, as sub-folders of its own (``hmr2/``: the 1024-d token and
    the first frame's SMPL estimate; ``vitpose/``: the keypoints), each a complete export of its model that
    trt-run verifies like any other. A tiny WHAM (feature width under 1024) gets tiny ones."""
    from .pipeline import ExportOptions, run_export

    tiny = cfg.d_feat != 1024
    for name in FEATURE_EXPORTS:
        if name not in registry.names():
            manifest.notes.append(f"no {name} export: this hmr-trt has no {name} model; give one with "
                                  f"trt-export --model {name} --out <this folder>/{name}")
            continue
        adapter = registry.adapter(name)
        sub_cfg = None
        if tiny:
            sub_cfg = adapter.tiny_config()
            if name == "hmr2":
                sub_cfg = replace(sub_cfg, token_dim=cfg.d_feat)
        with step(f"exporting {name} into {name}/ (its own export, {'tiny' if tiny else 'released'} config)"):
            run_export(ExportOptions(out=stage / name, model=name, config=sub_cfg, exporter=opts.exporter,
                                     profile=opts.profile, build_engines=opts.build_engines, video=opts.video,
                                     size=opts.size))
        manifest.notes.append(f"{name}/: the {name} export WHAM's pipeline reads ({'tiny' if tiny else 'released'} "
                              "config, seeded weights)")


def fp16_step(stage: Path, paths: Dict[str, Path], reference: Any, adapter: Any, cfg: Any, contract: Any,
              recipe: str, model: str) -> Dict[str, Any]:
    """The step graph at FP16 (the recipe's keep rules), and its drift from the torch sequence along the parity
    tracks, measured on its CPU stand-in (FP32 compute, FP16 storage: engines/precision.py)."""
    import tempfile

    from hmr_trt.engines.precision import emulation_onnx_from_fp16, fp16_onnx_from_fp32

    from .pipeline import artifact_file

    dst = stage / artifact_file(model, contract.graph("step"), "fp16")
    info = fp16_onnx_from_fp32(paths["step"], dst, contract.recipe_for("fp16", recipe).keep)
    with tempfile.TemporaryDirectory(prefix="wham-fp16-") as tmp:
        emulated = Path(tmp) / "step_fp16_emulated.onnx"
        emulation_onnx_from_fp16(dst, emulated)
        report = step_parity({"init": paths["init"], "step": emulated}, reference, adapter, cfg, contract)
    return {"recipe": recipe, "conversion": {k: v for k, v in info.items() if k != "blocked"}, **report,
            "trans_world_mm": 1000.0 * report["max_abs"]["trans_world"]}


def run_track_export(opts: Any, job: Any, step: Any) -> Any:
    from .pipeline import FACES_NAME, ExportResult, artifact_file

    if opts.precision == "int8":
        raise ConfigError(f"model {opts.model}: --precision int8 is not available yet (fp32 or fp16)")
    adapter, cfg = job.adapter, job.cfg
    t0 = time.perf_counter()
    seconds: Dict[str, float] = {}
    with step("building the torch reference"):
        reference = adapter.reference(cfg, opts.checkpoint)
    cfg = reference.cfg  # the checkpoint's body size
    contract = adapter.contract_for(cfg)
    seconds["reference"] = time.perf_counter() - t0
    with staged_output(opts.out) as stage:
        manifest = Manifest(model=opts.model, config=cfg.to_dict(), profile=opts.profile.to_dict(),
                            tools=tool_versions("torch", "onnx", "onnxruntime"), contract=contract.to_dict())
        if opts.size == "tiny":
            from .pipeline import TINY_NOTE

            manifest.notes.append(TINY_NOTE)
        if opts.checkpoint is None:
            manifest.notes.append(f"{opts.model} weights: seeded defaults (untrained), seeded stand-in body "
                                  "(NOT SMPL); meshes are not poses")
        paths, specs = {}, {}
        t = time.perf_counter()
        body = None
        with step("body model: the checkpoint's SMPL buffers"):
            from hmr_trt.contract import smpl_body_graph

            from .body_model import ExportableSMPL

            body = ExportableSMPL(reference.smpl.body_model_data(reference.faces))
            contract = replace(contract, graphs=contract.graphs + (smpl_body_graph(vertices=body.num_vertices),))
            manifest.contract = contract.to_dict()
        for graph in contract.graphs:
            if graph.role == "body_model":
                with step("exporting the body_model graph"):
                    path = stage / artifact_file(opts.model, graph, "fp32")
                    specs[graph.name] = onnx_export.export_body_model(body, path, opts.profile.max * 4, opts.exporter,
                                                                      {"model": opts.model, "body_model": "WHAM's"})
                    paths[graph.name] = path
                    np.save(stage / FACES_NAME, np.asarray(body.faces, dtype=np.int64))
                continue
            with step(f"exporting the {graph.name} graph ({opts.exporter})"):
                path = stage / artifact_file(opts.model, graph, "fp32")
                example = adapter.example_inputs(cfg, graph.name, max(2, min(opts.profile.opt, 4)))
                specs[graph.name] = onnx_export.onnx_from_module(
                    adapter.exportable(reference, graph.name), graph, example, path, exporter=opts.exporter,
                    max_batch=opts.profile.max, metadata={"model": opts.model, "exporter": opts.exporter,
                                                          "config": cfg.to_dict(), "profile": opts.profile.to_dict()})
                paths[graph.name] = path
        seconds["export"] = time.perf_counter() - t
        if opts.with_backbone:
            feature_exports(opts, cfg, stage, manifest, step)
        with step("validating (onnx.checker, shape inference, TensorRT op preflight)"):
            for path in paths.values():
                validate_onnx(path, max_opset=MAX_OPSET_TRT86 if opts.exporter == "torchscript" else None)
        t = time.perf_counter()
        with step("parity: ONNX Runtime frame by frame vs the torch whole-sequence forward"):
            report = step_parity({k: paths[k] for k in ("init", "step")}, reference, adapter, cfg, contract)
        seconds["parity"] = time.perf_counter() - t
        if report["failures"]:
            raise ParityError("FP32 step parity failed: " + "; ".join(report["failures"]) + "; nothing was written")
        for graph in contract.graphs:
            ins, outs = specs[graph.name]
            manifest.add(Artifact(graph.name, paths[graph.name].name, "onnx", "fp32", sha256_of(paths[graph.name]),
                                  ins, outs, parity=report if graph.role == "model" else None,
                                  extra={"faces": FACES_NAME} if graph.role == "body_model" else {}))
        manifest.parity = {"fp32": report}
        if opts.precision == "fp16":
            with step(f"FP16 step graph (recipe {job.recipe}) and its drift along the parity tracks"):
                fp16 = fp16_step(stage, paths, reference, adapter, cfg, contract, job.recipe, opts.model)
            manifest.parity["fp16"] = fp16
            limit = job.limit_mm
            if limit is not None and fp16["trans_world_mm"] > limit:
                raise ParityError(f"FP16 (recipe {job.recipe}) moves the world trajectory by {fp16['trans_world_mm']:.3g} "
                                  f"mm over {fp16['frames']} frames, over the limit of {limit:g} mm; nothing was written")
            art = stage / artifact_file(opts.model, contract.graph("step"), "fp16")
            manifest.add(Artifact("step", art.name, "onnx", "fp16", sha256_of(art), *specs["step"], parity=fp16,
                                  extra={"recipe": job.recipe}))
        seconds["total"] = time.perf_counter() - t0
        manifest.notes.append(f"export seconds: {seconds}")
        manifest.write(stage)
    return ExportResult(manifest, [], seconds)
