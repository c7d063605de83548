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

Measured on the seeded model (sample-video windows, ORT CPU, against the FP32 ONNX): the stand-in
drifts 0.82-0.86 mm mean / ~20 mm max vertex, over the 0.1 mm goal, and no block list reaches it:
rounding only the input features to FP16 already costs 0.34 mm (the GRUs read them), every
node but the GRUs in FP32 still 0.62 mm. ORT running the FP16 ONNX directly reports 0.66 mm.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Set, Tuple, Union

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
    model = onnx.load(str(src))
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

    if method == "modelopt" or (method == "auto" and _modelopt_available()):
        used, fp16 = "modelopt-autocast", _autocast(src, names)
    else:
        from onnxconverter_common import float16

        used = "onnxconverter-common"
        with warnings.catch_warnings():  # it warns for every weight that rounds to 0 in FP16
            warnings.simplefilter("ignore", UserWarning)
            fp16 = float16.convert_float_to_float16(
                model, keep_io_types=True, op_block_list=[], node_block_list=sorted(names),
                min_positive_val=0.0, max_finite_val=FP16_MAX)  # IEEE rounding; clamp to the FP16 range
        _fp32_graph_outputs(fp16)
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
            "blocked_nodes": len(names), "blocked": by_rule,
            "casts_added": sum(n.op_type == "Cast" for n in fp16.graph.node)
            - sum(n.op_type == "Cast" for n in model.graph.node)}


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
    if not any(t == f16 for t in types.values()):
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


def _constants_feeding_only(model: onnx.ModelProto, names: Set[str]) -> Set[str]:
    """Constant nodes whose every consumer is in ``names``."""
    consumers: Dict[str, Set[str]] = {}
    for node in model.graph.node:
        for t in node.input:
            consumers.setdefault(t, set()).add(node.name)
    return {n.name for n in model.graph.node
            if n.op_type == "Constant" and consumers.get(n.output[0]) and consumers[n.output[0]] <= names}


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


