"""A Triton Inference Server model repository from an hmr-trt export directory (``trt-triton``).

One Triton model per exported graph, named ``<model>_<graph>`` (``coseg_temporal``, ``coseg_body_model``,
``coseg_backbone``, ``coseg_step``):
- ``tensorrt_plan`` when the export (a ``trt-build`` output) holds engines: one plan per GPU compute
  capability, mapped with ``cc_model_filenames`` (a plan runs only on the capability and the TensorRT
  version that built it: the Triton release must bundle that TensorRT version);
- ``onnxruntime_onnx`` otherwise (the ONNX of the requested precision for graphs that have one); a graph
  whose weights live in an external data file (over 2 GB: HMR 2.0's ViT-H) gets that file beside
  ``model.onnx`` under the name the graph reads (``hmr2_hmr2_fp32.onnx.data``), verified first.
``max_batch_size`` and dynamic batching come from the export's batch profile times the graph's rows per
window (``ModelContract.rows_per_item``, the rule trt-build's engine profiles use: windows for the model and
step graphs, windows x T for the feature extractor, windows x emitted frames for the body model: x T for
``emit=all``, x 1 for ``emit=middle``), with ``instance_group``.

Window models also get:
- ``<model>_pipeline``, an ensemble from one window of crops (T, 3, 224, 224) to vertices: backbone ->
  temporal (a non-batching twin, ``<model>_temporal_window``, that reshapes (T, C) to (1, T, C)) ->
  body model, so one request goes from crops to meshes inside the server;
- ``<model>_step`` when the export has a step graph: Triton's sequence batcher with implicit state
  (the state input ``state`` and output ``state_out`` never leave the server; ``start`` is the
  CONTROL_SEQUENCE_START flag), so a client sends one frame's features per request with the track as
  the sequence id, and many tracks batch together.

Torch-free and onnx-free (text only): runs on the GPU host's Python 3.9 too.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from hmr_trt.contract import GraphSpec, ModelContract, TensorSpec
from hmr_trt.errors import ConfigError, HmrTrtError
from hmr_trt.manifest import MANIFEST_NAME, Artifact, Manifest, staged_output
from hmr_trt.runtime.graph_loader import contract_from_manifest, graph_from_manifest

PLATFORMS = ("auto", "tensorrt_plan", "onnxruntime_onnx")
KINDS = ("auto", "gpu", "cpu")
MARKER = "hmr_trt_repository.txt"  # written at the top of a generated repository (safe to replace)
START_INPUT = "start"  # a step graph's CONTROL_SEQUENCE_START input (export/step_graph.py)
_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32",
          "uint8": "TYPE_UINT8"}


@dataclass(frozen=True)
class RepoOptions:
    precision: str = "fp32"
    platform: str = "auto"
    instances: int = 1
    kind: str = "auto"  # KIND_GPU for plans, KIND_CPU for ONNX without --kind gpu
    max_queue_delay_us: int = 500
    sequence_idle_us: int = 60_000_000

    def __post_init__(self) -> None:
        if self.platform not in PLATFORMS:
            raise ConfigError(f"--platform must be one of {', '.join(PLATFORMS)}, got {self.platform!r}")
        if self.kind not in KINDS:
            raise ConfigError(f"--kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.instances < 1:
            raise ConfigError(f"--instances must be >= 1, got {self.instances}")


def model_name(contract: ModelContract, graph: str) -> str:
    return f"{contract.name}_{graph}"


# --- config.pbtxt text ------------------------------------------------------------------------

def _dims(shape: Iterable) -> str:
    return "[ " + ", ".join(str(int(d)) for d in shape) + " ]"


def _static(spec: TensorSpec, graph: GraphSpec) -> Tuple[int, ...]:
    """The shape without the batch axis; every other axis must be static (the contract promises it)."""
    if not spec.shape or spec.shape[0] != graph.batch_axis:
        raise HmrTrtError(f"graph {graph.name}: tensor {spec.name} does not lead with the batch axis {graph.batch_axis}")
    rest = spec.shape[1:]
    if not all(isinstance(d, int) for d in rest):
        raise HmrTrtError(f"graph {graph.name}: tensor {spec.name} has dynamic axes besides the batch: {spec.shape}; "
                          "re-export it with this hmr-trt (static shapes)")
    return tuple(rest)


def _io(section: str, name: str, dtype: str, dims: Sequence[int], reshape: Optional[Sequence[int]] = None) -> str:
    if dtype not in _TYPES:
        raise HmrTrtError(f"tensor {name}: dtype {dtype} has no Triton type here")
    text = f"{section} {{\n  name: \"{name}\"\n  data_type: {_TYPES[dtype]}\n  dims: {_dims(dims)}\n"
    if reshape is not None:
        text += f"  reshape {{ shape: {_dims(reshape)} }}\n"
    return text + "}\n"


def _instances(count: int, kind: str) -> str:
    return f"instance_group [ {{ count: {count} kind: KIND_{kind.upper()} }} ]\n"


def state_pairs(graph: GraphSpec) -> List[Tuple[TensorSpec, str]]:
    """A step graph's implicit state: (input spec, output name) pairs, named ``x``/``x_out`` (the window
    ring buffer ``state``/``state_out``) or ``x``/``next_x`` (a recurrent hidden state, e.g. VIBE's)."""
    outs = set(graph.output_names)
    return [(spec, out) for spec in graph.inputs for out in (f"{spec.name}_out", f"next_{spec.name}") if out in outs]


def graph_config(name: str, graph: GraphSpec, platform: str, max_batch: int, opt_batch: int, opts: RepoOptions,
                 kind: str, cc_files: Optional[Dict[str, str]] = None) -> str:
    """config.pbtxt of one graph; a ``step`` graph gets the sequence batcher with implicit state."""
    lines = [f"name: \"{name}\"\n", f"platform: \"{platform}\"\n", f"max_batch_size: {max_batch}\n"]
    pairs = state_pairs(graph) if graph.role == "step" else []
    if graph.role == "step" and not pairs:
        raise HmrTrtError(f"step graph {graph.name} has no state input/output pair (x -> x_out or next_x): "
                          f"{graph.input_names} -> {graph.output_names}")
    control = pairs and START_INPUT in graph.input_names  # Triton feeds it: CONTROL_SEQUENCE_START
    hidden = {spec.name for spec, _ in pairs} | {out for _, out in pairs} | ({START_INPUT} if control else set())
    for spec in graph.inputs:
        if spec.name not in hidden:
            lines.append(_io("input", spec.name, spec.dtype, _static(spec, graph)))
    for spec in graph.outputs:
        if spec.name not in hidden:
            lines.append(_io("output", spec.name, spec.dtype, _static(spec, graph)))
    if pairs:
        states = []
        for spec, out in pairs:
            dims = _dims(_static(spec, graph))
            states.append(f"{{ input_name: \"{spec.name}\" output_name: \"{out}\" data_type: {_TYPES[spec.dtype]} "
                          f"dims: {dims} initial_state: [ {{ data_type: {_TYPES[spec.dtype]} dims: {dims} "
                          "zero_data: true name: \"zeros\" } ] }")
        start = (f"  control_input [ {{ name: \"{START_INPUT}\" control [ {{ kind: CONTROL_SEQUENCE_START "
                 "fp32_false_true: [ 0, 1 ] } ] } ]\n") if control else ""
        lines.append(
            "sequence_batching {\n"
            f"  max_sequence_idle_microseconds: {opts.sequence_idle_us}\n"
            f"  oldest {{ max_candidate_sequences: {max_batch} preferred_batch_size: [ {opt_batch} ] "
            f"max_queue_delay_microseconds: {opts.max_queue_delay_us} }}\n"
            + start + "  state [ " + ", ".join(states) + " ]\n}\n")
    else:
        lines.append(f"dynamic_batching {{ preferred_batch_size: [ {opt_batch} ] "
                     f"max_queue_delay_microseconds: {opts.max_queue_delay_us} }}\n")
    lines.append(_instances(opts.instances, kind))
    for cc, file in sorted((cc_files or {}).items()):
        lines.append(f"cc_model_filenames [ {{ key: \"{cc}\" value: \"{file}\" }} ]\n")
    return "".join(lines)


def window_twin_config(name: str, graph: GraphSpec, platform: str, opts: RepoOptions, kind: str,
                       cc_files: Optional[Dict[str, str]] = None) -> str:
    """The window graph without Triton batching: one window (T, C) per request, reshaped to (1, T, C)."""
    lines = [f"name: \"{name}\"\n", f"platform: \"{platform}\"\n", "max_batch_size: 0\n"]
    for section, specs in (("input", graph.inputs), ("output", graph.outputs)):
        for spec in specs:
            dims = _static(spec, graph)
            lines.append(_io(section, spec.name, spec.dtype, dims, reshape=(1,) + dims))
    lines.append(_instances(opts.instances, kind))
    for cc, file in sorted((cc_files or {}).items()):
        lines.append(f"cc_model_filenames [ {{ key: \"{cc}\" value: \"{file}\" }} ]\n")
    return "".join(lines)


def ensemble_config(contract: ModelContract, backbone: GraphSpec, temporal: GraphSpec, body: GraphSpec) -> str:
    """crops (T, 3, 224, 224) -> backbone -> temporal window twin -> body model -> vertices/joints, per window."""
    name = model_name(contract, "pipeline")
    image = backbone.inputs[0]
    t = contract.window
    lines = [f"name: \"{name}\"\n", "platform: \"ensemble\"\n", "max_batch_size: 0\n",
             _io("input", "images", image.dtype, (t,) + _static(image, backbone))]
    frames_out = len(contract.emit_positions())
    outs = {spec.name: spec for spec in temporal.outputs}
    for spec in temporal.outputs:  # SMPL parameters out too (the body model also reads pose_rotmat, betas)
        lines.append(_io("output", spec.name, spec.dtype, _static(spec, temporal)))
    for spec in body.outputs:
        lines.append(_io("output", spec.name, spec.dtype, (frames_out,) + _static(spec, body)))

    def step(model: str, inputs: Dict[str, str], outputs: Dict[str, str]) -> str:
        ins = " ".join(f"input_map {{ key: \"{k}\" value: \"{v}\" }}" for k, v in inputs.items())
        outs_ = " ".join(f"output_map {{ key: \"{k}\" value: \"{v}\" }}" for k, v in outputs.items())
        return f"    {{ model_name: \"{model}\" model_version: -1 {ins} {outs_} }}"

    feat = backbone.outputs[0].name
    steps = [
        step(model_name(contract, backbone.name), {image.name: "images"}, {feat: "_features"}),
        step(model_name(contract, "temporal_window"), {temporal.inputs[0].name: "_features"},
             {n: n for n in outs}),
        step(model_name(contract, body.name), {n: n for n in body.input_names},
             {n: n for n in body.output_names}),
    ]
    lines.append("ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n")
    return "".join(lines)


# --- the repository -----------------------------------------------------------------------------

def _onnx_for(manifest: Manifest, graph: GraphSpec, precision: str) -> Optional[Artifact]:
    wanted = precision if graph.precision_passes else "fp32"
    return manifest.find(graph.name, "onnx", wanted) or manifest.find(graph.name, "onnx", "fp32")


def _engines_for(manifest: Manifest, graph: GraphSpec, precision: str) -> List[Artifact]:
    wanted = (precision,) if graph.precision_passes else (precision, "fp16", "fp32")
    found = [a for a in manifest.artifacts if a.kind == "engine" and a.name == graph.name and a.precision in wanted]
    return found


def _capability(art: Artifact) -> str:
    """The engine's compute capability as Triton's cc_model_filenames key: "sm_90" -> "9.0"."""
    info = art.extra.get("engine", art.extra)
    raw = str(info.get("compute_capability", ""))
    digits = raw[3:] if raw.startswith("sm_") else raw.replace(".", "")
    if not digits.isdigit() or len(digits) < 2:
        raise HmrTrtError(f"engine {art.path}: its sidecar records no compute capability ({raw!r}); "
                          "rebuild it with trt-build")
    return f"{digits[:-1]}.{digits[-1]}"


def repository_from_export(export_dir: Path, out: Path, opts: RepoOptions = RepoOptions()) -> Dict[str, str]:
    """Write the repository to ``out`` (replaced whole only when it is an earlier hmr-trt repository).
    Returns {Triton model name: platform}."""
    export_dir = Path(export_dir)
    manifest = Manifest.read(export_dir)
    contract = contract_from_manifest(manifest, str(export_dir / MANIFEST_NAME))
    has_engines = any(a.kind == "engine" for a in manifest.artifacts)
    if opts.platform == "tensorrt_plan" and not has_engines:
        raise HmrTrtError(f"{export_dir} holds no TensorRT engines: build them first (trt-build {export_dir} "
                          f"--precision {opts.precision} --out DIR) or use --platform onnxruntime_onnx")
    platform = opts.platform if opts.platform != "auto" else ("tensorrt_plan" if has_engines else "onnxruntime_onnx")
    kind = opts.kind if opts.kind != "auto" else ("gpu" if platform == "tensorrt_plan" else "cpu")
    profile = manifest.profile
    written: Dict[str, str] = {}

    with staged_output(out, replace_marker=MARKER) as stage:
        (stage / MARKER).write_text(f"Triton model repository written by trt-triton from {export_dir}\n")

        def place(graph: GraphSpec, folder: str) -> Tuple[str, Optional[Dict[str, str]]]:
            """Copy the graph's model file(s) into ``folder/1``; returns (platform, cc_model_filenames)."""
            version = stage / folder / "1"
            version.mkdir(parents=True)
            if platform == "tensorrt_plan":
                engines = _engines_for(manifest, graph, opts.precision)
                if not engines:
                    raise HmrTrtError(f"{export_dir}: no {opts.precision} TensorRT engine for the {graph.name} graph "
                                      f"(rebuild with trt-build --precision {opts.precision})")
                cc_files = {}
                for art in engines:
                    cc = _capability(art)
                    file = f"model_sm{cc.replace('.', '')}.plan"
                    source = graph_from_manifest(export_dir, manifest, art, contract, hash_engine=True).path
                    shutil.copyfile(source, version / file)
                    cc_files[cc] = file
                return platform, cc_files
            art = _onnx_for(manifest, graph, opts.precision)
            if art is None:
                raise HmrTrtError(f"{export_dir}/manifest.json lists no ONNX for the {graph.name} graph")
            source = graph_from_manifest(export_dir, manifest, art, contract).path  # its data file checked too
            shutil.copyfile(source, version / "model.onnx")
            data = art.extra.get("external_data")
            if data:  # weights over 2 GB: the data file beside model.onnx, named as the graph reads it
                shutil.copyfile(source.parent / data["location"], version / data["location"])
            return platform, None

        for graph in contract.graphs:
            name = model_name(contract, graph.name)
            rows = contract.rows_per_item(graph)  # as the graph's engine profile (trt-build) has it
            max_batch, opt_batch = int(profile["max"]) * rows, int(profile["opt"]) * rows
            plat, cc_files = place(graph, name)
            (stage / name / "config.pbtxt").write_text(
                graph_config(name, graph, plat, max_batch, opt_batch, opts, kind, cc_files))
            written[name] = plat

        backbone = contract.graph_for("feature_extractor")
        body = contract.graph_for("body_model")
        temporal = contract.model_graph
        if contract.family == "window" and backbone is not None and body is not None:
            twin = model_name(contract, "temporal_window")
            plat, cc_files = place(temporal, twin)
            (stage / twin / "config.pbtxt").write_text(window_twin_config(twin, temporal, plat, opts, kind, cc_files))
            written[twin] = plat
            pipeline = model_name(contract, "pipeline")
            (stage / pipeline / "1").mkdir(parents=True)
            (stage / pipeline / "config.pbtxt").write_text(ensemble_config(contract, backbone, temporal, body))
            written[pipeline] = "ensemble"
    return written
