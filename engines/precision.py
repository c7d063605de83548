"""FP16 ONNX of the temporal graph: the graph a TensorRT strongly-typed build runs, and its CPU stand-in.

TensorRT 10+ builds strongly typed networks (11: only those), so precision lives in the ONNX:
``fp16_onnx_from_fp32`` stores the weights in FP16 and types every tensor FP16, except the nodes the
model contract's FP16 recipe keeps (``KeepRule``s: op types and a node-name regex, one per reason,
e.g. ``export/models/coseg/contract.py``), which stay FP32 behind Cast nodes; inputs and outputs
stay FP32. onnxconverter-common's ``convert_float_to_float16`` does the work, or ModelOpt AutoCast
when ``modelopt`` is importable (optional; same block list, passed as node names).

Only the model graph is converted (a contract graph with ``precision_passes``). The body model (SMPL blend shapes and skinning: sums of
thousands of small terms, vertices in metres) and the backbone are never passed through here:
they stay FP32 whole, and ``fp16_onnx_from_fp32`` refuses them.

Parity on a CPU (CI has no GPU). ONNX Runtime's CPU provider has FP16 kernels only for data
movement and Clip (probed on 1.31: MatMul, Gemm, GRU, Add, Mul, Softmax, Reduce*, Sigmoid ... have
none). It still runs the FP16 ONNX: it inserts Casts to FP32 around such nodes, but then removes the
Cast pairs between neighbouring FP32-computed nodes, so whole chains run in FP32 with no FP16
rounding in between. Measured that way, FP16 looks better than it is. ``emulation_onnx_from_fp16``
therefore derives, from the FP16 ONNX itself, a stand-in that ORT cannot simplify: the same FP16
weights (cast to FP32 on load), every op computed in FP32, and every tensor the FP16 ONNX types
FP16 rounded to FP16 by an explicit Cast pair after the op that makes it (skipped where rounding
is a no-op: data movement, Relu). That is TensorRT's FP16 storage with FP32 accumulation, op by op.
Known gaps, both small: TensorRT fuses some ops (fewer roundings: the stand-in is pessimistic) and
keeps a GRU's hidden state in FP16 between time steps, which the stand-in's GRU kernel keeps in FP32.

Between two FP32-kept nodes the tensor stays FP32: onnxconverter-common casts each kept node's
output to FP16 and back in front of the next kept node, a rounding a strongly-typed TensorRT build
would honour; ``drop_fp32_round_trips`` removes those pairs, so a recipe keeping every node gives the
FP32 outputs bit for bit (the stand-in's floor is 0 mm; before, 0.2 mm on GLoT).

``reduced_precision_share`` counts what a recipe leaves in reduced precision: the share of weights
and of MatMul/Gemm/Conv/GRU FLOPs in FP16 (or INT8 in a Q/DQ graph). The measured recipes of every
model are in the README (``tools/precision_table.py``).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from hmr_trt.contract import KeepRule
from hmr_trt.errors import ConfigError, ExportError
from hmr_trt.fileio import save_onnx_atomic

if TYPE_CHECKING:
    import onnx

PathLike = Union[str, Path]
METHODS = ("auto", "onnxconverter", "modelopt")
GRAPH_KEY = "hmr_trt.graph"  # metadata the exporter stamps on every graph
MODEL_KEY = "hmr_trt.model"
FP16_MAX = 65504.0


def rule_matches(rule: KeepRule, node: onnx.NodeProto) -> bool:
    """A keep rule matches a node: its op type is one of ``rule.ops`` and its name matches ``rule.scope``."""
    return node.op_type in rule.ops and re.search(rule.scope, node.name) is not None


def _precision_passes(model: Optional[str], graph: str) -> bool:
    """Whether the exporting model's contract lets precision passes convert ``graph`` (its
    ``precision_passes``); graphs of unknown models: every graph but the body model and the backbone."""
    from hmr_trt import registry

    if model in registry.names():
        spec = next((g for g in registry.contract(model).graphs if g.name == graph), None)
        if spec is not None:
            return spec.precision_passes
    return graph not in ("body_model", "backbone")


def contract_keep_rules(model: onnx.ModelProto, recipe: str = "") -> Tuple[KeepRule, ...]:
    """The FP16 keep-list of the model that exported ``model`` (its ``hmr_trt.model`` metadata), from its
    registered contract: the named recipe or the contract's default FP16 recipe."""
    from hmr_trt import registry

    meta = {p.key: p.value for p in model.metadata_props}
    name = meta.get(MODEL_KEY)
    if not name:
        raise ConfigError("this ONNX does not name its model (no hmr_trt.model metadata): pass the keep rules "
                          "of its contract's FP16 recipe")
    return registry.contract(name).recipe_for("fp16", recipe or None).keep


# Ops whose FP16 output equals their FP16 input values: the stand-in needs no rounding after them.
EXACT_OPS = {"Reshape", "Transpose", "Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Expand",
             "Identity", "Split", "Flatten", "Relu", "Shape"}


def blocked_nodes(model: onnx.ModelProto, keep: Sequence[KeepRule]) -> Dict[str, List[str]]:
    """Node names each keep rule matches in ``model`` (a rule matching nothing is a bug)."""
    return {rule.name: [n.name for n in model.graph.node if rule_matches(rule, n)] for rule in keep}


def unmatched_entries(model: onnx.ModelProto, keep: Sequence[KeepRule]) -> List[str]:
    """'rule: OpType' for every op type of a keep rule that matches no node (each one is a bug)."""
    return [f"{rule.name}: {op}" for rule in keep for op in rule.ops
            if not any(n.op_type == op and rule_matches(rule, n) for n in model.graph.node)]


def fp16_onnx_from_fp32(src: PathLike, dst: PathLike, keep: Optional[Sequence[KeepRule]] = None, *,
                        recipe: str = "", method: str = "auto") -> Dict[str, Any]:
    """Write the FP16 model graph (FP32 inputs/outputs, the ``keep`` rules' nodes FP32) to ``dst``.

    ``keep``: the contract recipe's rules (``contract.recipe_for("fp16", name).keep``); None: the
    rules of the registered contract of the model named in the ONNX metadata (``recipe`` or its
    default FP16 recipe). Returns the conversion info: the method, node counts (``converted_nodes``
    make FP16 tensors; ``blocked_nodes`` stay FP32, with the Constants feeding only them) and, under
    ``blocked``, the node names each keep rule matched.
    """
    import onnx

    if method not in METHODS:
        raise ConfigError(f"FP16 method must be one of {', '.join(METHODS)}, got {method!r}")
    model, external = _load_with_shapes(Path(src))
    meta = {p.key: p.value for p in model.metadata_props}
    graph = meta.get(GRAPH_KEY, "temporal")
    if not _precision_passes(meta.get(MODEL_KEY), graph):
        raise ConfigError(f"{src} is the {graph} graph; precision passes apply to the model graph only "
                          "(the body model and the backbone stay FP32)")
    keep = tuple(keep) if keep is not None else contract_keep_rules(model, recipe)
    unmatched = unmatched_entries(model, keep)
    if unmatched:
        raise ExportError(f"{src}: FP16 keep rules match no node for {unmatched}; "
                          "the graph's node names changed (update the model contract's FP16 recipe)")
    by_rule = blocked_nodes(model, keep)
    names = {n for nodes in by_rule.values() for n in nodes}
    names |= _constants_feeding_only(model, names)  # eps and scales of FP32 nodes stay FP32 too
    unshared = _unshare_initializers(model, names)

    if method == "modelopt" or (method == "auto" and _modelopt_available()):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="hmr-fp16-") as tmp:
            source = src
            if unshared:  # ModelOpt reads a file: give it the graph with the kept nodes' own initializers
                source = Path(tmp) / "unshared.onnx"
                onnx.save(model, str(source))
            used, fp16 = "modelopt-autocast", _autocast(source, names)
    else:
        from onnxconverter_common import float16

        used = "onnxconverter-common"
        with warnings.catch_warnings():  # it warns for every weight that rounds to 0 in FP16
            warnings.simplefilter("ignore", UserWarning)
            fp16 = float16.convert_float_to_float16(
                model, keep_io_types=True, op_block_list=[], node_block_list=sorted(names),
                min_positive_val=0.0, max_finite_val=FP16_MAX,  # IEEE rounding; clamp to the FP16 range
                disable_shape_infer=external)  # a graph with external data: its shapes were inferred without weights
        _fp32_graph_outputs(fp16)
    dropped = drop_fp32_round_trips(fp16)  # either method: no FP16 round trip between two FP32 nodes
    types = tensor_types(fp16)
    problems = fp16_problems(fp16, names, types)
    if problems:
        raise ExportError(f"FP16 conversion of {src} is wrong: " + "; ".join(problems[:5]))
    for key, value in (("hmr_trt.precision", "fp16"), ("hmr_trt.fp16_method", used)):
        entry = fp16.metadata_props.add()
        entry.key, entry.value = key, value
    save_onnx_atomic(fp16, dst)
    fp16_nodes = sum(any(types.get(o) == onnx.TensorProto.FLOAT16 for o in n.output) for n in fp16.graph.node)
    return {"method": used, "nodes": len(fp16.graph.node), "converted_nodes": fp16_nodes,
            "blocked_nodes": len(names), "blocked": by_rule, "round_trips_dropped": dropped,
            "casts_added": sum(n.op_type == "Cast" for n in fp16.graph.node)
            - sum(n.op_type == "Cast" for n in model.graph.node)}


def _load_with_shapes(src: Path) -> Tuple[onnx.ModelProto, bool]:
    """The graph with its weights in memory, and whether they came from an external data file. For such a
    graph (over protobuf's 2 GB: an FP32 ViT-H) the shapes are inferred first, on the graph without its
    weights: ONNX's in-memory shape inference serializes the model, which fails past 2 GB; the converter
    then uses those shapes (value_info) instead of inferring its own."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    model = onnx.load(str(src), load_external_data=False)
    if not any(uses_external_data(t) for t in model.graph.initializer):
        return onnx.load(str(src)), False
    model = onnx.shape_inference.infer_shapes(model)
    load_external_data_for_model(model, str(src.parent))
    return model, True


def fp16_problems(model: onnx.ModelProto, fp32_nodes: Set[str], types: Dict[str, int] | None = None) -> List[str]:
    """Every way ``model`` breaks the FP16 contract: FP16 graph IO, or an FP16 tensor at a blocked node."""
    import onnx

    f16 = onnx.TensorProto.FLOAT16
    types = types if types is not None else tensor_types(model)
    problems = [f"graph {kind} '{v.name}' is FP16" for kind, vs in (("input", model.graph.input),
                                                                     ("output", model.graph.output))
                for v in vs if v.type.tensor_type.elem_type == f16]
    for node in model.graph.node:
        if node.name in fp32_nodes:
            bad = [t for t in list(node.input) + list(node.output) if types.get(t) == f16]
            if bad:
                problems.append(f"{node.op_type} '{node.name}' should stay FP32 but has FP16 tensors {bad}")
    everything_kept = all(n.name in fp32_nodes or n.op_type == "Cast" for n in model.graph.node)
    if not everything_kept and not any(t == f16 for t in types.values()):  # all kept: the FP32 floor, on purpose
        problems.append("no tensor is FP16")
    return problems


def tensor_types(model: onnx.ModelProto) -> Dict[str, int]:
    """Element type of every tensor of the main graph (after ONNX shape inference)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {t.name: t.data_type for t in g.initializer}
    types.update({v.name: v.type.tensor_type.elem_type for v in list(g.input) + list(g.value_info) + list(g.output)})
    for node in g.node:  # Constant outputs are not always in value_info
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def emulation_onnx_from_fp16(src: PathLike, dst: PathLike) -> Dict[str, Any]:
    """The CPU stand-in of an FP16 ONNX (see the module docstring): FP32 compute, FP16 storage."""
    import onnx
    from onnx import helper, numpy_helper

    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    model = onnx.load(str(src))
    types = tensor_types(model)
    g = model.graph
    nodes: List[onnx.NodeProto] = []
    for init in g.initializer:  # the FP16 weights themselves, cast to FP32 (ORT folds this on load)
        if init.data_type == f16:
            name = init.name
            init.name = f"{name}__fp16"
            nodes.append(helper.make_node("Cast", [init.name], [name], name=f"{name}__to_fp32", to=f32))
    rounded = 0
    for node in g.node:
        for attr in node.attribute:  # Constant / ConstantOfShape values
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == f16:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype("float32"), attr.t.name))
        if node.op_type == "Cast" and _attr(node, "to") == f16:  # a rounding: keep it, come back to FP32
            out = node.output[0]
            node.output[0] = f"{out}__fp16"
            nodes += [node, helper.make_node("Cast", [node.output[0]], [out], name=f"{node.name}__to_fp32", to=f32)]
            continue
        nodes.append(node)
        if node.op_type in EXACT_OPS:
            continue
        for i, out in enumerate(node.output):
            if types.get(out) == f16:
                node.output[i] = f"{out}__fp32"
                nodes += [helper.make_node("Cast", [node.output[i]], [f"{out}__fp16"], name=f"{out}__round", to=f16),
                          helper.make_node("Cast", [f"{out}__fp16"], [out], name=f"{out}__unround", to=f32)]
                rounded += 1
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    for v in list(g.input) + list(g.output):
        if v.type.tensor_type.elem_type == f16:
            v.type.tensor_type.elem_type = f32
    entry = model.metadata_props.add()
    entry.key, entry.value = "hmr_trt.fp16_emulation", "FP32 compute, FP16 storage: CPU stand-in for parity"
    save_onnx_atomic(model, dst)
    return {"rounded_tensors": rounded, "nodes": len(nodes)}


def _attr(node: onnx.NodeProto, name: str) -> Any:
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


def _fp32_graph_outputs(model: onnx.ModelProto) -> None:
    """Make FP16 graph outputs FP32 again (keep_io_types).

    onnxconverter-common casts a blocked node's FP32 result to FP16 even when it is a graph
    output: drop that Cast so the FP32 result is the output; any other FP16 output gets a Cast.
    """
    import onnx
    from onnx import helper

    g = model.graph
    producers = {o: n for n in g.node for o in n.output}
    for out in g.output:
        if out.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16:
            continue
        node = producers[out.name]
        if node.op_type == "Cast" and _attr(node, "to") == onnx.TensorProto.FLOAT16:
            src = node.input[0]
            g.node.remove(node)
            for n in g.node:
                n.output[:] = [out.name if o == src else o for o in n.output]
                n.input[:] = [out.name if i == src else i for i in n.input]
        else:
            i = list(node.output).index(out.name)
            node.output[i] = f"{out.name}__fp16"
            g.node.append(helper.make_node("Cast", [node.output[i]], [out.name], name=f"{out.name}__to_fp32",
                                           to=onnx.TensorProto.FLOAT))
        out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
        kept = [v for v in g.value_info if v.name != out.name]
        del g.value_info[:]
        g.value_info.extend(kept)


def drop_fp32_round_trips(model: onnx.ModelProto) -> int:
    """Remove every FP32 -> FP16 -> FP32 Cast pair: the tensor reaches its reader in FP32, unrounded.

    onnxconverter-common casts each blocked node's FP32 output to FP16 and back to FP32 in front of
    the next blocked node, so a tensor between two FP32 nodes would be rounded anyway; a TensorRT
    strongly-typed build honours those Casts. After this pass a tensor is FP16 only where an FP16
    node reads it. The FP16 Cast itself goes when nothing else reads its output. Returns the number of
    FP32 Casts removed.
    """
    import onnx

    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    g = model.graph
    outputs = {o.name for o in g.output}
    producers = {o: n for n in g.node for o in n.output}
    fp32 = {name for name, t in tensor_types(model).items() if t == f32}
    replace: Dict[str, str] = {}
    dead: List[onnx.NodeProto] = []
    for node in g.node:
        if node.op_type != "Cast" or _attr(node, "to") != f32 or node.output[0] in outputs:
            continue
        up = producers.get(node.input[0])
        if up is None or up.op_type != "Cast" or _attr(up, "to") != f16 or up.input[0] not in fp32:
            continue
        replace[node.output[0]] = up.input[0]
        dead.append(node)
    if not replace:
        return 0
    for node in dead:
        g.node.remove(node)
    for node in g.node:
        node.input[:] = [replace.get(i, i) for i in node.input]
    read = {i for n in g.node for i in n.input} | outputs
    for node in [n for n in g.node if n.op_type == "Cast" and _attr(n, "to") == f16 and n.output[0] not in read]:
        g.node.remove(node)
    live = {t for n in g.node for t in list(n.input) + list(n.output)}
    kept = [v for v in g.value_info if v.name in live]  # stale FP16 types of the removed Casts' outputs go
    del g.value_info[:]
    g.value_info.extend(kept)
    return len(dead)


def _constants_feeding_only(model: onnx.ModelProto, names: Set[str]) -> Set[str]:
    """Constant nodes, and Identity copies of an initializer (the exporter's de-duplicated LayerNorm
    weights), whose every consumer is in ``names``: they stay FP32 with their readers."""
    consumers: Dict[str, Set[str]] = {}
    for node in model.graph.node:
        for t in node.input:
            consumers.setdefault(t, set()).add(node.name)
    inits = {t.name for t in model.graph.initializer}
    return {n.name for n in model.graph.node
            if (n.op_type == "Constant" or (n.op_type == "Identity" and n.input[0] in inits))
            and consumers.get(n.output[0]) and consumers[n.output[0]] <= names}


def _unshare_initializers(model: onnx.ModelProto, names: Set[str]) -> int:
    """Give the FP32 nodes their own copy of every initializer they share with FP16 nodes.

    The exporter de-duplicates equal initializers across the whole graph (seeded zero biases of a
    GroupNorm kept FP32 and of a BatchNorm converted to FP16 become one tensor, read directly and
    through Identity copies); a converter then keeps it FP32 for the first and the second reads the
    wrong type. Returns the number of copies made."""
    import copy

    readers: Dict[str, Set[str]] = {}
    for node in model.graph.node:
        for t in node.input:
            readers.setdefault(t, set()).add(node.name)
    copies = 0
    for init in list(model.graph.initializer):
        users = readers.get(init.name, set())
        if not (users & names and users - names):
            continue
        twin = copy.deepcopy(init)
        twin.name = f"{init.name}__fp32"
        model.graph.initializer.append(twin)
        for node in model.graph.node:
            if node.name in names:
                node.input[:] = [twin.name if i == init.name else i for i in node.input]
        copies += 1
    return copies


def _modelopt_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("modelopt.onnx.autocast") is not None
    except (ImportError, ValueError):
        return False


def _autocast(src: PathLike, names: Set[str]) -> onnx.ModelProto:
    """ModelOpt AutoCast with the block list as exact node-name patterns (its own heuristics may add more)."""
    from modelopt.onnx.autocast import convert_to_mixed_precision

    return convert_to_mixed_precision(onnx_path=str(src), low_precision_type="fp16", keep_io_types=True,
                                      nodes_to_exclude=[f"^{re.escape(n)}$" for n in sorted(names)])




# --- how much of the graph runs in reduced precision ----------------------------------------------------

COMPUTE_OPS = ("MatMul", "Gemm", "Conv", "GRU", "LSTM", "RNN")


def reduced_precision_share(path: PathLike, batch: int = 1) -> Dict[str, Any]:
    """Share of weights and of FLOPs in FP16 / INT8 / FP8 in a mixed-precision ONNX (FP16 pass, Q/DQ INT8 or FP8).

    Weights: elements of the float initializers (FP32 bytes), FP16 where stored FP16, INT8 where an
    INT8 initializer feeds a DequantizeLinear (its scale and zero point are not counted). FLOPs:
    multiply-adds x 2 of MatMul/Gemm/Conv/GRU/LSTM/RNN at batch ``batch`` (symbolic dims set to it), a
    node FP16 when its data input is FP16, INT8 when every data input comes from a DequantizeLinear.
    """
    import onnx

    model = onnx.load(str(path))
    for v in model.graph.input:  # concrete dims so that shape inference gives every matmul's shape
        for d in v.type.tensor_type.shape.dim:
            if d.HasField("dim_param") or not d.HasField("dim_value"):
                d.dim_value = batch
    g = _inferred(model).graph
    shapes: Dict[str, List[int]] = {t.name: list(t.dims) for t in g.initializer}
    types = {t.name: t.data_type for t in g.initializer}
    for v in list(g.input) + list(g.value_info) + list(g.output):
        shapes[v.name] = [d.dim_value if d.HasField("dim_value") else 0 for d in v.type.tensor_type.shape.dim]
        types[v.name] = v.type.tensor_type.elem_type
    f16, f32, i8, f8 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT, onnx.TensorProto.INT8, \
        onnx.TensorProto.FLOAT8E4M3FN
    dq_data = {n.input[0] for n in g.node if n.op_type == "DequantizeLinear"}
    dq_side = {i for n in g.node if n.op_type == "DequantizeLinear" for i in n.input[1:]}
    dq_out = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear"}
    # FP8 Q/DQ (calibration/fp8.py): a DQ whose zero point is float8
    zero_types = {t.name: t.data_type for t in g.initializer}
    fp8_out = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear" and len(n.input) > 2
               and zero_types.get(n.input[2]) == f8}

    weights = {"fp32": 0, "fp16": 0, "int8": 0, "fp8": 0}
    for t in g.initializer:
        n = int(np.prod(t.dims)) if t.dims else 1
        if t.name in dq_side:
            continue
        if t.data_type == f16:
            weights["fp16"] += n
        elif t.data_type == i8 and t.name in dq_data:
            weights["int8"] += n
        elif t.data_type == f8 and t.name in dq_data:
            weights["fp8"] += n
        elif t.data_type == f32:
            weights["fp32"] += n
    flops = {"fp32": 0, "fp16": 0, "int8": 0, "fp8": 0}
    for node in g.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        count = _flops(node, shapes)
        data = node.input[:1] if node.op_type in ("GRU", "LSTM", "RNN") else node.input[:2]
        if types.get(node.input[0]) == f16:
            flops["fp16"] += count
        elif all(i in dq_out for i in data):
            flops["fp8" if any(i in fp8_out for i in data) else "int8"] += count
        else:
            flops["fp32"] += count
    total_w, total_f = sum(weights.values()), sum(flops.values())
    return {"weights": total_w, "flops": total_f, "batch": batch,
            "weights_fp16": weights["fp16"] / max(total_w, 1), "weights_int8": weights["int8"] / max(total_w, 1),
            "flops_fp16": flops["fp16"] / max(total_f, 1), "flops_int8": flops["int8"] / max(total_f, 1),
            "weights_fp8": weights["fp8"] / max(total_w, 1), "flops_fp8": flops["fp8"] / max(total_f, 1)}


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shapes of every tensor: ONNX Runtime's symbolic shape inference, which follows shapes computed at run
    time (DecoMR's UV warp reshapes by Shape/Gather/Concat, where ONNX's own inference loses the channels and
    every convolution after it would count 0 FLOPs); ONNX's when that one cannot read the graph."""
    import onnx

    try:
        SymbolicShapeInference = _symbolic_shape_inference()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
        if inferred is not None:
            return inferred
    except Exception:  # noqa: BLE001 - any failure of the optional pass falls back to ONNX's inference
        pass
    return onnx.shape_inference.infer_shapes(model)


def _symbolic_shape_inference() -> Any:
    """ONNX Runtime's ``SymbolicShapeInference``, loaded from its file alone: importing it as
    ``onnxruntime.tools.symbolic_shape_infer`` runs ``onnxruntime/tools/__init__.py``, which imports torch
    whenever torch is installed (engines/ never imports torch); the module itself needs numpy, onnx and
    packaging only."""
    import importlib.util
    import sys

    import onnxruntime

    name = "hmr_trt_ort_symbolic_shape_infer"
    if name not in sys.modules:
        path = Path(onnxruntime.__file__).parent / "tools" / "symbolic_shape_infer.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name].SymbolicShapeInference


def _flops(node: onnx.NodeProto, shapes: Dict[str, List[int]]) -> int:
    """2 x multiply-adds of one compute node from the inferred shapes (0 where a shape is unknown)."""
    def prod(dims: Sequence[int]) -> int:
        return int(np.prod(dims)) if dims else 1

    out = shapes.get(node.output[0], []) if node.output else []
    if node.op_type == "MatMul":
        a = shapes.get(node.input[0], [])
        return 2 * prod(out) * a[-1] if a and out else 0
    if node.op_type == "Gemm":
        a = shapes.get(node.input[0], [])
        return 2 * prod(out) * (a[0] if _attr(node, "transA") else a[-1]) if len(a) == 2 and out else 0
    if node.op_type == "Conv":
        w = shapes.get(node.input[1], [])
        return 2 * prod(out) * prod(w[1:]) if w and out else 0
    x, w, r = (shapes.get(node.input[i], []) for i in range(3))  # GRU/LSTM/RNN: X (T, B, I) or (B, T, I)
    if len(x) != 3 or not w or not r:
        return 0
    return 2 * x[0] * x[1] * (prod(w) + prod(r))
