"""INT8 ONNX of the temporal graph: Q/DQ nodes as TensorRT reads them, calibrated on feature windows.

``int8_onnx_from_fp32`` runs ONNX Runtime's ``quantize_static`` in QDQ format with what TensorRT
needs: symmetric INT8 activations and weights (every zero point 0, checked), per-channel weights,
float biases, one Q/DQ pair per consumer, and Q/DQ on the inputs of MatMul/Gemm only (TensorRT
fuses the rest). The GRUs, most of the parameters, stay float: ORT does not quantize GRU.
ORT quantizes a graph input in place (every reader of ``features`` would see INT8 values, GRUs
included); ``_dedicated_qdq`` rewires the float readers back to the float input.

Calibration ranges are cached on disk, keyed by the FP32 ONNX's sha256, a hash of the windows
and the calibration settings, so a rebuild does not recalibrate; a cache for another model or
other windows is ignored and replaced. Output and cache are written atomically.

``int8_sensitivity`` leaves one MatMul/Gemm layer group (the nodes sharing one weight) in float at
a time and measures the mean vertex drift in mm; ``int8_with_sweep`` leaves the groups that help
most in float until the goal is met, gives back to INT8 those that still fit, and reports the
drift before and after. On the seeded model (8 calibration and 6-8 other evaluation windows of
the sample video): every MatMul/Gemm in INT8 drifts ~85 mm mean; the sweep keeps 8 of 31 nodes
in INT8 (query projection, fragment DIS MLPs, camera head) at ~0.3 mm mean, ~44 mm max.
torch-free: numpy, onnx and onnxruntime (>= 1.31, for quantize_static's calibration cache).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from hmr_trt.contract import Recipe
from hmr_trt.errors import ConfigError, ExportError, InputSpecError
from hmr_trt.fileio import atomic_write, save_onnx_atomic
from hmr_trt.manifest import sha256_of
from hmr_trt.mesh import mesh_drift, meshes
from hmr_trt.metrics import GOALS_MM

if TYPE_CHECKING:
    import onnx

PathLike = Union[str, Path]
OP_TYPES = ("MatMul", "Gemm")
CACHE_FORMAT = "hmr-trt/int8-calibration/1"
CALIBRATION_BATCH = 4  # windows per calibration run
# TensorRT's reading of Q/DQ: zero point 0, no Q/DQ shared between consumers, float biases,
# and no Q/DQ on GEMM outputs (TensorRT quantizes a tensor where its consumer needs it).
EXTRA_OPTIONS = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "QuantizeBias": False,
    "DedicatedQDQPair": True,
    "OpTypesToExcludeOutputQuantization": list(OP_TYPES),
}


def int8_onnx_from_fp32(src: PathLike, dst: PathLike, windows: np.ndarray, cache_path: PathLike,
                        exclude_nodes: Sequence[str] = (), *, per_channel: bool = True,
                        method: str = "MinMax") -> Dict[str, Any]:
    """Write the INT8 (QDQ) temporal graph to ``dst``; ``exclude_nodes`` stay float.

    Returns: calibrated (False when the cache was used), quantized and excluded node names,
    the number of Q/DQ nodes and the cache key.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise ConfigError("INT8 calibration needs onnxruntime >= 1.31 (quantize_static's calibration cache)")
    if method not in CalibrationMethod.__members__:
        raise ConfigError(f"calibration method must be one of {', '.join(CalibrationMethod.__members__)}, "
                          f"got {method!r}")
    windows = _check_windows(windows)
    src, dst, cache_path = Path(src), Path(dst), Path(cache_path)
    key = calibration_key(src, windows, method)
    cached = _read_cache(cache_path, key)
    with tempfile.TemporaryDirectory(prefix="hmr-int8-", dir=dst.parent) as tmp:
        ort_cache, out = Path(tmp) / "ranges.json", Path(tmp) / "int8.onnx"
        if cached is not None:
            ort_cache.write_text(json.dumps(cached))
        with _quiet_root_logger():  # ORT logs a 'consider pre-processing' warning per call
            quantize_static(
                str(src), str(out), None if cached is not None else _WindowReader(windows),
                quant_format=QuantFormat.QDQ, op_types_to_quantize=list(OP_TYPES), per_channel=per_channel,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude_nodes),
                calibrate_method=CalibrationMethod[method], extra_options=dict(EXTRA_OPTIONS),
                calibration_cache_path=str(ort_cache),
            )
        if cached is None:
            payload = {"format": CACHE_FORMAT, "key": key, "ranges": json.loads(ort_cache.read_text())}
            atomic_write(cache_path, lambda f: f.write(json.dumps(payload).encode()))
        model = onnx.load(str(out))
        _dedicated_qdq(model, set(exclude_nodes))
        problems = qdq_problems(model)
        if problems:
            raise ExportError(f"INT8 graph of {src} is not what TensorRT needs: " + "; ".join(problems[:5]))
        entry = model.metadata_props.add()
        entry.key, entry.value = "hmr_trt.int8", json.dumps({"excluded": sorted(exclude_nodes), **key})
        save_onnx_atomic(model, dst)
    return {"calibrated": cached is None, "quantized_nodes": sorted(_quantized_nodes(model)), "excluded_nodes": sorted(exclude_nodes),
            "qdq_nodes": sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node),
            "windows": len(windows), "key": key}


def calibration_key(src: PathLike, windows: np.ndarray, method: str) -> Dict[str, Any]:
    """What calibration ranges depend on: the FP32 graph, the windows and the calibration settings."""
    h = hashlib.sha256(f"{windows.shape}{windows.dtype}".encode())
    h.update(np.ascontiguousarray(windows).tobytes())
    return {"onnx_sha256": sha256_of(src), "windows_sha256": h.hexdigest(), "method": method,
            "op_types": list(OP_TYPES)}


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


def layer_groups(model: onnx.ModelProto) -> Dict[str, List[str]]:
    """Quantizable MatMul/Gemm nodes grouped by layer: nodes sharing a weight (the regressor's
    three iterations) form one group, named by the first node's module scope."""
    inits = {t.name for t in model.graph.initializer}
    groups: Dict[str, List[str]] = {}
    owner: Dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type not in OP_TYPES:
            continue
        weight = next((i for i in node.input[:2] if i in inits), None)
        if weight is None:  # activation x activation (attention): a group of its own
            groups[node.name] = [node.name]
            continue
        owner.setdefault(weight, node.name.rsplit("/", 1)[0] or node.name)
        groups.setdefault(owner[weight], []).append(node.name)
    return groups


def int8_drift(int8_onnx: PathLike, body_onnx: PathLike, windows: np.ndarray,
               reference: Tuple[np.ndarray, np.ndarray]) -> Dict[str, float]:
    """Vertex/joint drift (mm) of ``int8_onnx`` + the body model against reference meshes."""
    from hmr_trt.runtime.backends import OnnxRuntimeBackend

    with OnnxRuntimeBackend(int8_onnx) as temporal, OnnxRuntimeBackend(body_onnx) as body:
        verts, joints = meshes(body.infer, temporal.infer({temporal.inputs[0].name: windows}))
    return mesh_drift(verts, joints, *reference)


def reference_meshes(fp32_onnx: PathLike, body_onnx: PathLike, windows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Vertices and joints of the FP32 temporal graph + body model on ORT: the INT8 reference."""
    from hmr_trt.runtime.backends import OnnxRuntimeBackend

    with OnnxRuntimeBackend(fp32_onnx) as temporal, OnnxRuntimeBackend(body_onnx) as body:
        return meshes(body.infer, temporal.infer({temporal.inputs[0].name: windows}))


def int8_sensitivity(src: PathLike, int8_onnx: PathLike, body_onnx: PathLike, windows: np.ndarray,
                     reference: Tuple[np.ndarray, np.ndarray],
                     groups: Optional[Dict[str, List[str]]] = None,
                     models: Optional[Tuple[Any, Any]] = None) -> List[Dict[str, Any]]:
    """Mean vertex drift with each quantized layer group left in float, best improvement first.

    Each variant is the INT8 graph with that group's nodes reading their original float inputs
    again (no re-quantization), run on ORT against ``reference`` meshes. ``models``: the FP32 and
    INT8 ModelProtos when the caller has them loaded already.
    """
    import onnx

    fp32, q = models if models is not None else (onnx.load(str(src)), onnx.load(str(int8_onnx)))
    quantized = _quantized_nodes(q)
    groups = groups if groups is not None else layer_groups(fp32)
    rows = []
    for name, nodes in groups.items():
        nodes = [n for n in nodes if n in quantized]
        if nodes:
            drift = _variant_drift(q, fp32, set(nodes), body_onnx, windows, reference)
            rows.append({"group": name, "nodes": nodes, **drift})
    return sorted(rows, key=lambda r: r["vertices_mean_mm"])


def recipe_exclusions(model: onnx.ModelProto, recipe: Recipe) -> List[str]:
    """Names of the nodes the recipe's ``int8_exclude`` rules match (op type and node-name regex)."""
    import re

    rules = recipe.int8_exclude
    bad = [r.name for r in rules if not any(n.op_type in r.ops and re.search(r.scope, n.name) for n in model.graph.node)]
    if bad:
        raise ConfigError(f"INT8 recipe {recipe.name}: exclusion rules {', '.join(bad)} match no node of the graph; "
                          "the graph's node names changed (update the model's contract)")
    return sorted(n.name for n in model.graph.node
                  if any(n.op_type in r.ops and re.search(r.scope, n.name) for r in rules))


def int8_with_sweep(src: PathLike, dst: PathLike, calibration_windows: np.ndarray, eval_windows: np.ndarray,
                    body_onnx: PathLike, cache_path: PathLike, *, goal_mm: float = GOALS_MM["int8"],
                    max_groups: Optional[int] = None, recipe: Optional[Recipe] = None,
                    **quantize_options: Any) -> Tuple[Path, Dict[str, Any]]:
    """INT8 graph meeting ``goal_mm`` mean vertex drift on ``eval_windows`` if any exclusion can.

    Quantize every MatMul/Gemm; if the drift misses the goal, rank the layer groups by
    ``int8_sensitivity`` and leave them in float in that order, re-measuring after each, until the
    goal is met (or ``max_groups`` are out); then give back to INT8 each excluded group (last
    excluded first) that still keeps the goal, and quantize once more without the rest.
    Returns ``dst`` and a report: drift before/after (mm), excluded and readmitted groups, the
    excluded node names, INT8 nodes left, the sensitivity table, and ``passed`` (goal met with
    at least one layer still INT8). ``recipe``: the contract's INT8 recipe; the nodes its
    ``int8_exclude`` rules match stay float from the start.
    """
    import onnx

    eval_windows = _check_windows(eval_windows)
    fixed = recipe_exclusions(onnx.load(str(src), load_external_data=False), recipe) if recipe else []
    reference = reference_meshes(src, body_onnx, eval_windows)
    info = int8_onnx_from_fp32(src, dst, calibration_windows, cache_path, fixed, **quantize_options)
    before = int8_drift(dst, body_onnx, eval_windows, reference)
    report: Dict[str, Any] = {"goal_mm": goal_mm, "before": before, "after": before, "excluded_groups": [],
                              "excluded_nodes": [], "readmitted_groups": [], "sensitivity": [],
                              "calibration_windows": info["windows"],
                              "eval_windows": len(eval_windows)}
    excluded: List[str] = []
    if before["vertices_mean_mm"] > goal_mm:
        fp32, q = onnx.load(str(src)), onnx.load(str(dst))
        rows = int8_sensitivity(src, dst, body_onnx, eval_windows, reference, models=(fp32, q))
        report["sensitivity"] = [{k: r[k] for k in ("group", "vertices_mean_mm", "vertices_max_mm")} for r in rows]

        def meets_goal(float_nodes: List[str]) -> bool:
            drift = _variant_drift(q, fp32, set(float_nodes), body_onnx, eval_windows, reference)
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
        report["excluded_groups"] = [r["group"] for r in out]
        excluded = [n for r in out for n in r["nodes"]]
        info = int8_onnx_from_fp32(src, dst, calibration_windows, cache_path, fixed + excluded, **quantize_options)
        report["after"] = int8_drift(dst, body_onnx, eval_windows, reference)
    report["excluded_nodes"] = excluded
    report["recipe"] = recipe.name if recipe else ""
    report["recipe_excluded_nodes"] = fixed
    report["int8_nodes"] = len(info["quantized_nodes"])
    report["passed"] = report["after"]["vertices_mean_mm"] <= goal_mm and report["int8_nodes"] > 0
    if not report["passed"]:
        report["note"] = ("no INT8 layer meets the goal: every MatMul/Gemm group had to stay float"
                          if report["int8_nodes"] == 0 else f"stopped after {max_groups} groups above the goal")
    return Path(dst), report


def _dedicated_qdq(model: onnx.ModelProto, excluded: set) -> None:
    """One Q/DQ pair per quantized consumer, and float consumers read the float tensor.

    ORT quantizes a graph input in place: with some MatMuls excluded, every consumer of
    ``features`` (excluded MatMuls, GRU slices, residuals) reads the fake-quantized tensor, and
    consumers share one pair (TensorRT wants a pair per consumer). Rewire and duplicate so that
    only the quantized MatMul/Gemm nodes read INT8 values.
    """
    from onnx import helper

    g = model.graph
    producers = {o: n for n in g.node for o in n.output}
    for dq in [n for n in g.node if n.op_type == "DequantizeLinear"]:
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue  # a weight: int8 initializer -> DQ
        readers = [n for n in g.node if dq.output[0] in n.input]
        quantized = [n for n in readers if n.op_type in OP_TYPES and n.name not in excluded]
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


def _variant_drift(q: onnx.ModelProto, fp32: onnx.ModelProto, float_nodes: set, body_onnx: PathLike,
                   windows: np.ndarray, reference: Tuple[np.ndarray, np.ndarray]) -> Dict[str, float]:
    import onnx

    with tempfile.TemporaryDirectory(prefix="hmr-int8-sweep-") as tmp:
        variant = Path(tmp) / "variant.onnx"
        onnx.save(_float_again(q, fp32, float_nodes), str(variant))
        return int8_drift(variant, body_onnx, windows, reference)


def _quantized_nodes(model: onnx.ModelProto) -> set:
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in model.graph.node if n.op_type in OP_TYPES and any(i in dq for i in n.input)}


class _WindowReader:
    """ORT CalibrationDataReader over windows, a few at a time."""

    def __init__(self, windows: np.ndarray, batch: int = CALIBRATION_BATCH) -> None:
        self.batches = [windows[i:i + batch] for i in range(0, len(windows), batch)]
        self.index = 0

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        if self.index >= len(self.batches):
            return None
        self.index += 1
        return {"features": self.batches[self.index - 1]}

    def __iter__(self) -> _WindowReader:
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


def _check_windows(windows: np.ndarray) -> np.ndarray:
    if not isinstance(windows, np.ndarray) or windows.ndim != 3 or len(windows) == 0:
        shape = getattr(windows, "shape", type(windows).__name__)
        raise InputSpecError(f"calibration windows must be a non-empty (W, T, C) array, got {shape}")
    return np.ascontiguousarray(windows, dtype=np.float32)


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
