"""INT8 ONNX of a model graph: Q/DQ nodes as TensorRT reads them, calibrated on real inputs.

``int8_onnx_from_fp32`` runs ONNX Runtime's ``quantize_static`` in QDQ format with what TensorRT
needs: symmetric INT8 activations and weights (every zero point 0, checked), per-channel weights,
float biases, one Q/DQ pair per consumer, and Q/DQ on the inputs of the recipe's op types only
(``Recipe.int8_ops``; TensorRT fuses the rest): MatMul/Gemm for temporal graphs (calibrated on
feature windows), Conv too for CNNs (frame and scene models, calibrated on crops or whole frames).
The GRUs, most of a temporal model's parameters, stay float: ORT does not quantize GRU.
ORT gives every reader of a quantized tensor a Q/DQ pair (graph inputs included: every reader of
``features`` would see INT8 values, GRUs included; in a ResNet the residual Adds would);
``_dedicated_qdq`` rewires the float readers back to the float tensor.

Calibration data: one array for a single-input graph (windows (W, T, C), crops (N, 3, H, W), ...) or
{input name: array}.

Calibration ranges are cached on disk, keyed by the FP32 ONNX's sha256, a hash of the windows
and the calibration settings, so a rebuild does not recalibrate; a cache for another model or
other windows is ignored and replaced. Output and cache are written atomically.

``int8_sensitivity`` leaves one layer group in float at a time and measures the mean vertex drift
in mm (meshes through ``hmr_trt.mesh.meshes``: the body-model graph, or the model's own vertices
for body model "none", scene maps sampled at fixed cells); ``int8_with_sweep`` leaves the groups
that help most in float until the goal is met, gives back to INT8 those that still fit, and reports
the drift before and after. A MatMul/Gemm group is the nodes sharing one weight. A CNN has too many
convolutions to measure one by one on 2 CPU cores (each measurement runs the evaluation images
through the whole network), so ``layer_groups`` merges them, when there are more than a budget
(``CONV_GROUP_BUDGET``), into stages of the module tree (``/backbone/layer2``, ``/LNet/hg/down_layers.0``,
one head) and then merges neighbouring small stages.
On the seeded coseg model (8 calibration and 6-8 other evaluation windows of the sample video):
every MatMul/Gemm in INT8 drifts ~85 mm mean; the sweep keeps 8 of 31 nodes in INT8 (query
projection, fragment DIS MLPs, camera head) at ~0.3 mm mean, ~44 mm max.
torch-free: numpy, onnx and onnxruntime (>= 1.31, for quantize_static's calibration cache).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from hmr_trt.contract import INT8_OPS, INT8_QUANTIZABLE, ModelContract, Recipe
from hmr_trt.errors import ConfigError, ExportError, InputSpecError
from hmr_trt.fileio import atomic_write, save_onnx_atomic
from hmr_trt.manifest import sha256_of
from hmr_trt.mesh import mesh_drift, meshes
from hmr_trt.metrics import GOALS_MM

if TYPE_CHECKING:
    import onnx

PathLike = Union[str, Path]
Inputs = Union[np.ndarray, Mapping[str, np.ndarray]]  # one array (single-input graph) or {input name: array}
OP_TYPES = INT8_OPS  # the default quantized op types (temporal graphs): MatMul, Gemm
CACHE_FORMAT = "hmr-trt/int8-calibration/1"
CALIBRATION_BATCH = 4  # windows (or images) per calibration run
# Layer groups a Conv net's sweep measures at most (layer_groups). Measured on 2 shared CPU cores, full
# configs, 7 evaluation images: one measurement ~7.6 s for instancehmr (512x512 frames), ~4 s for DecoMR
# (224x224 crops), so ranking 12 groups takes 1.5 / 0.8 min and the search at most as long again; one
# group per Conv (89 / 118 of them) would take ~11 / ~8 min to rank alone.
CONV_GROUP_BUDGET = 12
# A MatMul/Gemm net with more layers than this (a ViT-H: 32 blocks x 4 weight GEMMs + 2 attention products)
# is swept by stages too (CONV_GROUP_BUDGET groups of neighbouring layers): one ViT-H forward pass over the
# evaluation crops takes ~10 s on 2 cores, so 192 one-layer measurements would take over half an hour.
MATMUL_GROUP_LIMIT = 64
# TensorRT's reading of Q/DQ: zero point 0, no Q/DQ shared between consumers, float biases,
# and no Q/DQ on GEMM/Conv outputs (TensorRT quantizes a tensor where its consumer needs it; the
# quantized op types are added to OpTypesToExcludeOutputQuantization per call).
EXTRA_OPTIONS = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "QuantizeBias": False,
    "DedicatedQDQPair": True,
    "OpTypesToExcludeOutputQuantization": list(OP_TYPES),
}


def int8_onnx_from_fp32(src: PathLike, dst: PathLike, windows: Inputs, cache_path: PathLike,
                        exclude_nodes: Sequence[str] = (), *, per_channel: bool = True,
                        method: str = "MinMax", op_types: Sequence[str] = OP_TYPES) -> Dict[str, Any]:
    """Write the INT8 (QDQ) graph to ``dst``: Q/DQ on the inputs of ``op_types`` nodes, ``exclude_nodes`` float.

    ``windows``: the calibration data, one array for a single-input graph or {input name: array}.
    Returns: calibrated (False when the cache was used), quantized and excluded node names,
    the number of Q/DQ nodes, the number of calibration samples ("windows") and the cache key.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise ConfigError("INT8 calibration needs onnxruntime >= 1.31 (quantize_static's calibration cache)")
    if method not in CalibrationMethod.__members__:
        raise ConfigError(f"calibration method must be one of {', '.join(CalibrationMethod.__members__)}, "
                          f"got {method!r}")
    op_types = _check_op_types(op_types)
    src, dst, cache_path = Path(src), Path(dst), Path(cache_path)
    inputs = _graph_inputs(src)
    windows = _check_inputs(windows, inputs)
    key = calibration_key(src, windows, method, op_types)
    reader = _InputReader(_as_feed(windows, [n for n, _ in inputs]))
    cached = _read_cache(cache_path, key)
    large = _over_protobuf_limit(src)  # a > 2 GB graph: ORT writes its calibration and output graphs external
    with tempfile.TemporaryDirectory(prefix="hmr-int8-", dir=dst.parent) as tmp:
        ort_cache, out = Path(tmp) / "ranges.json", Path(tmp) / "int8.onnx"
        if cached is not None:
            ort_cache.write_text(json.dumps(cached))
        with _quiet_root_logger():  # ORT logs a 'consider pre-processing' warning per call
            quantize_static(
                str(src), str(out), None if cached is not None else reader,
                quant_format=QuantFormat.QDQ, op_types_to_quantize=list(op_types), per_channel=per_channel,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude_nodes),
                calibrate_method=CalibrationMethod[method],
                extra_options={**EXTRA_OPTIONS, "OpTypesToExcludeOutputQuantization": list(op_types)},
                calibration_cache_path=str(ort_cache), use_external_data_format=large,
            )
        if cached is None:
            payload = {"format": CACHE_FORMAT, "key": key, "ranges": json.loads(ort_cache.read_text())}
            atomic_write(cache_path, lambda f: f.write(json.dumps(payload).encode()))
        model = onnx.load(str(out))
        _dedicated_qdq(model, set(exclude_nodes), op_types)
        problems = qdq_problems(model)
        if problems:
            raise ExportError(f"INT8 graph of {src} is not what TensorRT needs: " + "; ".join(problems[:5]))
        entry = model.metadata_props.add()
        entry.key, entry.value = "hmr_trt.int8", json.dumps({"excluded": sorted(exclude_nodes), **key})
        save_onnx_atomic(model, dst)
    return {"calibrated": cached is None, "quantized_nodes": sorted(_quantized_nodes(model, op_types)),
            "excluded_nodes": sorted(exclude_nodes),
            "qdq_nodes": sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node),
            "windows": _count(windows), "key": key}


def calibration_key(src: PathLike, windows: Inputs, method: str, op_types: Sequence[str] = OP_TYPES) -> Dict[str, Any]:
    """What calibration ranges depend on: the FP32 graph, the calibration data and settings.

    One array hashes its shape, dtype and bytes (the key of caches written before {name: array} data);
    a dict hashes each input's name too, in name order."""
    if isinstance(windows, np.ndarray):
        h = hashlib.sha256(f"{windows.shape}{windows.dtype}".encode())
        h.update(np.ascontiguousarray(windows).tobytes())
    else:
        h = hashlib.sha256()
        for name in sorted(windows):
            arr = windows[name]
            h.update(f"{name}{arr.shape}{arr.dtype}".encode())
            h.update(np.ascontiguousarray(arr).tobytes())
    return {"onnx_sha256": sha256_of(src), "windows_sha256": h.hexdigest(), "method": method,
            "op_types": list(op_types)}


def qdq_problems(model: onnx.ModelProto) -> List[str]:
    """Every Q/DQ node whose zero point is not 0 or not INT8 (TensorRT accepts symmetric INT8 only)."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    problems = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        zp = inits.get(node.input[2])
        if zp is None:
            problems.append(f"{node.name}: zero point '{node.input[2]}' is not a constant")
            continue
        value = numpy_helper.to_array(zp)
        if value.dtype != np.int8 or np.any(value != 0):
            problems.append(f"{node.name}: zero point {value.ravel()[:4]} ({value.dtype}); TensorRT needs int8 0")
    return problems


def layer_groups(model: onnx.ModelProto, op_types: Sequence[str] = OP_TYPES, *, exclude: Sequence[str] = (),
                 budget: Optional[int] = None) -> Dict[str, List[str]]:
    """Quantizable nodes (``op_types``, less ``exclude``) grouped by layer, in graph order.

    A layer: the nodes sharing a weight (the regressor's three iterations), named by the first node's
    module scope; an activation x activation MatMul (attention) is a group of its own. With more layers
    than ``budget`` (a Conv net's), ``coarse_groups`` merges them into stages of the module tree.
    """
    inits = {t.name for t in model.graph.initializer}
    skip = set(exclude)
    groups: Dict[str, List[str]] = {}
    owner: Dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type not in op_types or node.name in skip:
            continue
        weight = next((i for i in node.input[:2] if i in inits), None)
        if weight is None:  # activation x activation (attention): a group of its own
            groups[node.name] = [node.name]
            continue
        owner.setdefault(weight, node.name.rsplit("/", 1)[0] or node.name)
        groups.setdefault(owner[weight], []).append(node.name)
    if budget is not None and len(groups) > budget:
        return coarse_groups(groups, budget)
    return groups


def stage_scope(scope: str) -> str:
    """The module a layer belongs to at the level of a stage: the scope cut before its first indexed child
    (``/CNet/resnet/layer2/layer2.1/conv1`` -> ``/CNet/resnet/layer2``, ``/final_layers.1/final_layers.1.0/..``
    -> ``/final_layers.1``); a scope without one is its own stage (``/backbone/conv1``)."""
    parts = scope.strip("/").split("/")
    for i in range(1, len(parts)):
        if re.fullmatch(re.escape(parts[i - 1]) + r"\.\d+", parts[i]):
            return "/" + "/".join(parts[:i])
    return scope


def coarse_groups(groups: Mapping[str, List[str]], budget: int) -> Dict[str, List[str]]:
    """At most ``budget`` groups (>= 1): layers of one stage (``stage_scope``) together, then, while too
    many, the two neighbouring groups (graph order) with the fewest nodes between them merged (ties:
    neighbours under the same top-level module first), so that a network's big stages stay apart and
    its many small head modules go together. A merged group is named ``first .. last``."""
    if budget < 1:
        raise ConfigError(f"the sweep's group budget must be >= 1, got {budget}")
    stages: Dict[str, List[str]] = {}
    for name, nodes in groups.items():
        stages.setdefault(stage_scope(name), []).extend(nodes)
    merged = [([key], nodes) for key, nodes in stages.items()]  # (stage names, nodes)

    def top(key: str) -> str:
        return key.strip("/").split("/")[0]

    while len(merged) > budget:
        i = min(range(len(merged) - 1), key=lambda k: (len(merged[k][1]) + len(merged[k + 1][1]),
                                                       top(merged[k][0][-1]) != top(merged[k + 1][0][0]), k))
        (keys_a, nodes_a), (keys_b, nodes_b) = merged[i], merged[i + 1]
        merged[i:i + 2] = [(keys_a + keys_b, nodes_a + nodes_b)]
    return {keys[0] if len(keys) == 1 else f"{keys[0]} .. {keys[-1]}": nodes for keys, nodes in merged}


def int8_drift(int8_onnx: PathLike, body_onnx: Optional[PathLike], windows: Inputs,
               reference: Tuple[np.ndarray, np.ndarray], contract: Optional[ModelContract] = None) -> Dict[str, float]:
    """Vertex/joint drift (mm) of ``int8_onnx`` (+ the body model; None for body model "none") against
    reference meshes; ``contract`` tells ``hmr_trt.mesh.meshes`` how to read the outputs (None: SMPL
    parameters through ``body_onnx``)."""
    return mesh_drift(*_meshes(int8_onnx, body_onnx, windows, contract), *reference)


def reference_meshes(fp32_onnx: PathLike, body_onnx: Optional[PathLike], windows: Inputs,
                     contract: Optional[ModelContract] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Vertices and joints of the FP32 model graph (+ body model) on ORT: the INT8 reference."""
    return _meshes(fp32_onnx, body_onnx, windows, contract)


def _meshes(model_onnx: PathLike, body_onnx: Optional[PathLike], windows: Inputs,
            contract: Optional[ModelContract]) -> Tuple[np.ndarray, np.ndarray]:
    from hmr_trt.runtime.backends import OnnxRuntimeBackend

    with contextlib.ExitStack() as stack:
        model = stack.enter_context(OnnxRuntimeBackend(model_onnx))
        body = stack.enter_context(OnnxRuntimeBackend(body_onnx)) if body_onnx is not None else None
        outputs = model.infer(_as_feed(windows, [t.name for t in model.inputs]))
        return meshes(body.infer if body is not None else None, outputs, contract)


def int8_sensitivity(src: PathLike, int8_onnx: PathLike, body_onnx: Optional[PathLike], windows: Inputs,
                     reference: Tuple[np.ndarray, np.ndarray],
                     groups: Optional[Dict[str, List[str]]] = None,
                     models: Optional[Tuple[Any, Any]] = None, contract: Optional[ModelContract] = None,
                     op_types: Sequence[str] = OP_TYPES) -> List[Dict[str, Any]]:
    """Mean vertex drift with each quantized layer group left in float, best improvement first.

    Each variant is the INT8 graph with that group's nodes reading their original float inputs
    again (no re-quantization), run on ORT against ``reference`` meshes. ``models``: the FP32 and
    INT8 ModelProtos when the caller has them loaded already. Each row carries its ``seconds``.
    """
    import onnx

    fp32, q = models if models is not None else (onnx.load(str(src)), onnx.load(str(int8_onnx)))
    quantized = _quantized_nodes(q, op_types)
    groups = groups if groups is not None else layer_groups(fp32, op_types)
    rows = []
    for name, nodes in groups.items():
        nodes = [n for n in nodes if n in quantized]
        if nodes:
            t = time.perf_counter()
            drift = _variant_drift(q, fp32, set(nodes), body_onnx, windows, reference, contract)
            rows.append({"group": name, "nodes": nodes, **drift, "seconds": time.perf_counter() - t})
    return sorted(rows, key=lambda r: r["vertices_mean_mm"])


def recipe_exclusions(model: onnx.ModelProto, recipe: Recipe) -> List[str]:
    """Names of the nodes the recipe's ``int8_exclude`` rules match (op type and node-name regex)."""
    rules = recipe.int8_exclude
    bad = [r.name for r in rules if not any(n.op_type in r.ops and re.search(r.scope, n.name) for n in model.graph.node)]
    if bad:
        raise ConfigError(f"INT8 recipe {recipe.name}: exclusion rules {', '.join(bad)} match no node of the graph; "
                          "the graph's node names changed (update the model's contract)")
    return sorted(n.name for n in model.graph.node
                  if any(n.op_type in r.ops and re.search(r.scope, n.name) for r in rules))


def sweep_group_budget(model: onnx.ModelProto, op_types: Sequence[str], exclude: Sequence[str] = ()) -> Optional[int]:
    """The most layer groups a sweep measures: ``CONV_GROUP_BUDGET`` when Convs are quantized or the graph has more
    than ``MATMUL_GROUP_LIMIT`` MatMul/Gemm layers (a ViT-H), else None (one group per layer)."""
    if "Conv" in op_types or len(layer_groups(model, op_types, exclude=exclude)) > MATMUL_GROUP_LIMIT:
        return CONV_GROUP_BUDGET
    return None


def int8_with_sweep(src: PathLike, dst: PathLike, calibration_windows: Inputs, eval_windows: Inputs,
                    body_onnx: Optional[PathLike], cache_path: PathLike, *, goal_mm: float = GOALS_MM["int8"],
                    max_groups: Optional[int] = None, recipe: Optional[Recipe] = None,
                    contract: Optional[ModelContract] = None, group_budget: Optional[int] = None,
                    **quantize_options: Any) -> Tuple[Path, Dict[str, Any]]:
    """INT8 graph meeting ``goal_mm`` mean vertex drift on ``eval_windows`` if any exclusion can.

    Quantize every node of the recipe's op types (``recipe.int8_ops``; MatMul/Gemm without a recipe);
    if the drift misses the goal, rank the layer groups by ``int8_sensitivity`` and leave them in float
    in that order, re-measuring after each, until the goal is met (or ``max_groups`` are out); then
    give back to INT8 each excluded group (last excluded first) that still keeps the goal, and quantize
    once more without the rest.
    Returns ``dst`` and a report: drift before/after (mm), excluded and readmitted groups, the
    excluded node names, INT8 nodes left, the layer groups measured, the sensitivity table, the
    seconds each phase took, and ``passed`` (goal met with at least one layer still INT8).
    ``recipe``: the contract's INT8 recipe; the nodes its ``int8_exclude`` rules match stay float from
    the start. ``body_onnx``: the body-model graph, None when the model outputs vertices (``contract``
    body model "none"). ``contract``: how ``hmr_trt.mesh.meshes`` reads the outputs (scene maps,
    vertices); None: SMPL parameters through ``body_onnx``. ``group_budget``: the most layer groups
    measured (``layer_groups``); None: ``CONV_GROUP_BUDGET`` when Convs are quantized, else one group
    per layer.
    """
    import onnx

    clock = time.perf_counter()
    seconds: Dict[str, float] = {}

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[phase] = seconds.get(phase, 0.0) + now - clock
        clock = now

    requested = quantize_options.pop("op_types", None)  # explicit op types win over the recipe's
    op_types = _check_op_types(requested or (recipe.int8_ops if recipe else OP_TYPES))
    eval_windows = _check_inputs(eval_windows, _graph_inputs(src))
    graph_only = onnx.load(str(src), load_external_data=False)
    fixed = recipe_exclusions(graph_only, recipe) if recipe else []
    if group_budget is None:
        group_budget = sweep_group_budget(graph_only, op_types, fixed)
    del graph_only
    reference = reference_meshes(src, body_onnx, eval_windows, contract)
    lap("reference")
    info = int8_onnx_from_fp32(src, dst, calibration_windows, cache_path, fixed, op_types=op_types,
                               **quantize_options)
    lap("calibration")
    before = int8_drift(dst, body_onnx, eval_windows, reference, contract)
    lap("before")
    report: Dict[str, Any] = {"goal_mm": goal_mm, "before": before, "after": before, "excluded_groups": [],
                              "excluded_nodes": [], "readmitted_groups": [], "sensitivity": [],
                              "calibration_windows": info["windows"],
                              "eval_windows": _count(eval_windows), "op_types": list(op_types),
                              "group_budget": group_budget, "groups": {}}
    excluded: List[str] = []
    if before["vertices_mean_mm"] > goal_mm:
        fp32, q = onnx.load(str(src)), onnx.load(str(dst))
        groups = layer_groups(fp32, op_types, exclude=fixed, budget=group_budget)
        report["groups"] = {name: len(nodes) for name, nodes in groups.items()}
        rows = int8_sensitivity(src, dst, body_onnx, eval_windows, reference, groups, models=(fp32, q),
                                contract=contract, op_types=op_types)
        report["sensitivity"] = [{k: r[k] for k in ("group", "vertices_mean_mm", "vertices_max_mm")} for r in rows]
        lap("sensitivity")

        def meets_goal(float_nodes: List[str]) -> bool:
            drift = _variant_drift(q, fp32, set(float_nodes), body_onnx, eval_windows, reference, contract)
            return drift["vertices_mean_mm"] <= goal_mm

        out, met = [], False
        for row in rows[:max_groups]:  # leave the most helpful groups in float until the goal is met
            out.append(row)
            met = meets_goal([n for r in out for n in r["nodes"]])
            if met:
                break
        for row in reversed(out[:-1] if met else []):  # errors add up: an early group may fit in INT8 now
            trial = [r for r in out if r is not row]
            if meets_goal([n for r in trial for n in r["nodes"]]):
                out = trial
                report["readmitted_groups"].append(row["group"])
        del fp32, q
        lap("search")
        report["excluded_groups"] = [r["group"] for r in out]
        excluded = [n for r in out for n in r["nodes"]]
        info = int8_onnx_from_fp32(src, dst, calibration_windows, cache_path, fixed + excluded, op_types=op_types,
                                   **quantize_options)
        report["after"] = int8_drift(dst, body_onnx, eval_windows, reference, contract)
        lap("final")
    report["excluded_nodes"] = excluded
    report["recipe"] = recipe.name if recipe else ""
    report["recipe_excluded_nodes"] = fixed
    report["int8_nodes"] = len(info["quantized_nodes"])
    report["passed"] = report["after"]["vertices_mean_mm"] <= goal_mm and report["int8_nodes"] > 0
    if not report["passed"]:
        report["note"] = (f"no INT8 layer meets the goal: every {'/'.join(op_types)} group had to stay float"
                          if report["int8_nodes"] == 0 else f"stopped after {max_groups} groups above the goal")
    report["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    return Path(dst), report


def _dedicated_qdq(model: onnx.ModelProto, excluded: set, op_types: Sequence[str] = OP_TYPES) -> None:
    """One Q/DQ pair per quantized consumer, and float consumers read the float tensor.

    ORT quantizes a graph input in place: with some MatMuls excluded, every consumer of
    ``features`` (excluded MatMuls, GRU slices, residuals) reads the fake-quantized tensor, and
    consumers share one pair (TensorRT wants a pair per consumer). The same holds inside a CNN: a
    block's input feeds its first Conv (quantized) and the residual Add (float), and the network's
    input image feeds only the stem Conv. Rewire and duplicate so that only the quantized
    ``op_types`` nodes read INT8 values.
    """
    from onnx import helper

    g = model.graph
    producers = {o: n for n in g.node for o in n.output}
    for dq in [n for n in g.node if n.op_type == "DequantizeLinear"]:
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue  # a weight: int8 initializer -> DQ
        readers = [n for n in g.node if dq.output[0] in n.input]
        quantized = [n for n in readers if n.op_type in op_types and n.name not in excluded]
        for node in readers:
            if node not in quantized:
                node.input[:] = [q.input[0] if i == dq.output[0] else i for i in node.input]
        for k, node in enumerate(quantized[1:], start=1):
            q_out, dq_out = f"{q.output[0]}_{k}", f"{dq.output[0]}_{k}"
            g.node.extend([helper.make_node("QuantizeLinear", list(q.input), [q_out], name=f"{q.name}_{k}"),
                           helper.make_node("DequantizeLinear", [q_out, *dq.input[1:]], [dq_out],
                                            name=f"{dq.name}_{k}")])
            node.input[:] = [dq_out if i == dq.output[0] else i for i in node.input]
    _topological_sort(g)


def _topological_sort(g: onnx.GraphProto) -> None:
    ready = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    pending, ordered = list(g.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ExportError(f"INT8 graph has a cycle or a missing input at {rest[0].name}")
        pending = rest
    del g.node[:]
    g.node.extend(ordered)


def _variant_drift(q: onnx.ModelProto, fp32: onnx.ModelProto, float_nodes: set, body_onnx: Optional[PathLike],
                   windows: Inputs, reference: Tuple[np.ndarray, np.ndarray],
                   contract: Optional[ModelContract] = None) -> Dict[str, float]:
    import onnx

    from hmr_trt.external_data import THRESHOLD_BYTES, initializer_bytes

    with tempfile.TemporaryDirectory(prefix="hmr-int8-sweep-") as tmp:
        variant = Path(tmp) / "variant.onnx"
        model = _float_again(q, fp32, float_nodes)
        if initializer_bytes(model) > THRESHOLD_BYTES:  # many float layers of a ViT-H: over protobuf's limit
            onnx.save(model, str(variant), save_as_external_data=True, all_tensors_to_one_file=True,
                      location="variant.onnx.data")
        else:
            onnx.save(model, str(variant))
        return int8_drift(variant, body_onnx, windows, reference, contract)


def _quantized_nodes(model: onnx.ModelProto, op_types: Sequence[str] = OP_TYPES) -> set:
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in model.graph.node if n.op_type in op_types and any(i in dq for i in n.input)}


class _InputReader:
    """ORT CalibrationDataReader over the calibration data, a few samples at a time."""

    def __init__(self, feed: Dict[str, np.ndarray], batch: int = CALIBRATION_BATCH) -> None:
        n = _count(feed)
        self.batches = [{k: v[i:i + batch] for k, v in feed.items()} for i in range(0, n, batch)]
        self.index = 0

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        if self.index >= len(self.batches):
            return None
        self.index += 1
        return self.batches[self.index - 1]

    def __iter__(self) -> _InputReader:
        return self

    def __next__(self) -> Dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item

    def __len__(self) -> int:
        return len(self.batches)


def _float_again(q: onnx.ModelProto, fp32: onnx.ModelProto, names: set) -> onnx.ModelProto:
    """A copy of the QDQ graph ``q`` in which the nodes ``names`` read their FP32 inputs again."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(q)
    original = {n.name: n for n in fp32.graph.node if n.name in names}
    fp32_inits = {t.name: t for t in fp32.graph.initializer}
    have = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        if node.name in original:
            node.input[:] = original[node.name].input
            for name in node.input:
                if name in fp32_inits and name not in have:
                    model.graph.initializer.append(fp32_inits[name])
                    have.add(name)
    _prune(model)
    return model


def _prune(model: onnx.ModelProto) -> None:
    """Remove nodes and initializers nothing reads any more (the Q/DQ of un-quantized inputs)."""
    g = model.graph
    while True:
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)


def _over_protobuf_limit(path: PathLike) -> bool:
    """Whether the graph's weights exceed what one protobuf holds (hmr_trt.external_data's threshold)."""
    import onnx

    from hmr_trt.external_data import THRESHOLD_BYTES, initializer_bytes

    return initializer_bytes(onnx.load(str(path), load_external_data=False)) > THRESHOLD_BYTES


def _graph_inputs(path: PathLike) -> List[Tuple[str, int]]:
    """(name, rank) of the graph's inputs (initializers listed as inputs left out)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {t.name for t in graph.initializer}
    return [(i.name, len(i.type.tensor_type.shape.dim)) for i in graph.input if i.name not in inits]


def _check_inputs(windows: Inputs, inputs: List[Tuple[str, int]]) -> Inputs:
    """Calibration or evaluation data checked against the graph's inputs, as contiguous float32.

    One array stays one array (a single-input graph; a rank-3 input takes windows (W, T, C));
    a mapping must name every input, with the same number of samples each."""
    if not isinstance(windows, Mapping):
        if len(inputs) != 1:
            raise InputSpecError(f"the graph has {len(inputs)} inputs ({', '.join(n for n, _ in inputs)}): "
                                 "give calibration data as {input name: array}")
        name, rank = inputs[0]
        if not isinstance(windows, np.ndarray) or windows.ndim != rank or len(windows) == 0:
            shape = getattr(windows, "shape", type(windows).__name__)
            if rank == 3:
                raise InputSpecError(f"calibration windows must be a non-empty (W, T, C) array, got {shape}")
            raise InputSpecError(f"calibration data for '{name}' must be a non-empty array of rank {rank}, "
                                 f"got {shape}")
        return np.ascontiguousarray(windows, dtype=np.float32)
    names = [n for n, _ in inputs]
    if sorted(windows) != sorted(names):
        raise InputSpecError(f"calibration data names {sorted(windows)}; the graph's inputs are {names}")
    out: Dict[str, np.ndarray] = {}
    for name, rank in inputs:
        arr = windows[name]
        if not isinstance(arr, np.ndarray) or arr.ndim != rank or len(arr) == 0:
            shape = getattr(arr, "shape", type(arr).__name__)
            raise InputSpecError(f"calibration data for '{name}' must be a non-empty array of rank {rank}, "
                                 f"got {shape}")
        out[name] = np.ascontiguousarray(arr, dtype=np.float32)
    if len({len(v) for v in out.values()}) > 1:
        raise InputSpecError(f"calibration inputs differ in length: {({k: len(v) for k, v in out.items()})}")
    return out


def _as_feed(windows: Inputs, names: Sequence[str]) -> Dict[str, np.ndarray]:
    return dict(windows) if isinstance(windows, Mapping) else {names[0]: windows}


def _count(windows: Inputs) -> int:
    return len(next(iter(windows.values()))) if isinstance(windows, Mapping) else len(windows)


def _check_op_types(op_types: Sequence[str]) -> Tuple[str, ...]:
    bad = [op for op in op_types if op not in INT8_QUANTIZABLE]
    if bad or not op_types:
        raise ConfigError(f"INT8 op types must be a non-empty subset of {', '.join(INT8_QUANTIZABLE)}, "
                          f"got {list(op_types)}")
    return tuple(op_types)


def _read_cache(path: Path, key: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The cached ORT ranges when ``path`` holds a cache for exactly ``key``; else None (recalibrate)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or data.get("key") != key:
        return None
    return data.get("ranges")


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
