"""Parity of exported graphs against the PyTorch reference, in the task's unit: millimetres.

The reference is the adapter's torch model followed by SMPL through the smplx package. The
candidate is the exported model graph (the contract's role "model") followed by the exported
body-model graph, run by ONNX Runtime (or any ``runner(graph name, feed) -> outputs``); meshes come
from ``hmr_trt.mesh`` (the one mesh path). Window models with emit "middle" give T_out = 1 frame
per window on both sides. For each set of windows (random, and
features of real video frames) and each batch size, we report per-output max abs/rel error and
the mean/max drift of vertices and joints in mm, each also as a fraction of the motion spread
(how far vertex positions move across the windows: parity means little if outputs do not move).
Batch invariance: a window's outputs do not depend on what else is in the batch.

FP32 is judged against the network's own float32 noise, measured in the same run (``float32_floor``):
how far the torch reference moves from itself when its inputs, and separately its weights, are moved by
about one float32 ulp (x (1 +- 2**-23), random signs), round-off no runtime can avoid. A row passes when
the export's drift is within the goal OR within ``FLOOR_MULTIPLE`` times that floor; the per-output and
decision-tensor tiers the same way (``max(tier, FLOOR_MULTIPLE x the output's own floor)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from hmr_trt.contract import GraphSpec, ModelContract
from hmr_trt.mesh import drift_mm, meshes, motion_spread_mm
from hmr_trt.metrics import GOALS_MM

from .features import features_from_video_tiles

__all__ = ["GOALS_MM", "drift_mm", "motion_spread_mm", "compare", "reference_outputs"]

# The tight per-output tier for FP32, every model-graph output (the mm goals are the contract's).
FP32_MAX_ABS = 1e-3
# Decision tensors (contract ``decisions``) are held tighter: an error under 1e-3 in u still moves pixels of a
# 64-cell grid across edges, and pinning forgives only flips within round-off (DecoMR ORT vs torch: 1.6e-5).
DECISION_MAX_ABS = 1e-4
# The exported file itself against the copy with the decision outputs (the same arithmetic: equal to the bit
# unless ONNX Runtime fuses differently), on the first chunk of every set.
COPY_MAX_ABS = 1e-5
# Float32 kernels block differently per batch size (seen: ~1e-4); mixing samples gives O(0.1-1).
BATCH_INVARIANCE_ATOL = 1e-3
MIN_SPREAD_MM = 50.0
# The float32 floor (``float32_floor``): inputs or weights x (1 +- FLOOR_REL), random signs: one ulp of float32
# at the bottom of each binade (half an ulp at the top), what one rounding of another runtime moves.
FLOOR_REL = 2.0 ** -23
# FP32 passes within FLOOR_MULTIPLE x the floor. An export computes every layer in another order, so it sits a few
# times above one perturbation; the wrong graphs of tests/export/test_floor.py (a weight 1% off, a biased head, a
# wrong decision tensor) sit 1e3-1e6 times above it, on seeded and on sensitive weights alike.
FLOOR_MULTIPLE = 10.0

Runner = Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]]
Windows = Any  # one set: an array for single-input graphs (window features), or {input name: array}


def default_graph() -> GraphSpec:
    from hmr_trt import registry

    return registry.contract(registry.DEFAULT_MODEL).model_graph


def _feed(graph: GraphSpec, windows: Windows) -> dict[str, np.ndarray]:
    return dict(windows) if isinstance(windows, dict) else {graph.input_names[0]: windows}


def _count(feed: dict[str, np.ndarray]) -> int:
    return len(next(iter(feed.values())))


def _torch_body(body_ref: Any) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            verts, joints = body_ref(torch.from_numpy(feed["pose_rotmat"]), torch.from_numpy(feed["betas"]))
        return {"vertices": verts.numpy(), "joints3d": joints.numpy()}
    return run


@dataclass
class Reference:
    """Torch outputs for one set of windows: temporal outputs and the body model's (frames flattened)."""

    outputs: dict[str, np.ndarray]  # pose_rotmat (W, T, 24, 3, 3), betas, cam
    vertices: np.ndarray  # (W, T, V, 3) metres
    joints: np.ndarray  # (W, T, J, 3) metres


@dataclass
class ParityReport:
    precision: str
    goal_mean_vertex_mm: float
    spread_mm: dict[str, float] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    batch_invariance: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    conditioning: dict[str, Any] = field(default_factory=dict)  # the FP32 network's own (``conditioning``)
    share: dict[str, Any] = field(default_factory=dict)  # weights/FLOPs in reduced precision (engines/precision.py)
    floor: dict[str, dict[str, Any]] = field(default_factory=dict)  # per set: the float32 floor (``float32_floor``)

    @property
    def passed(self) -> bool:
        return not self.failures

    def worst(self, key: str = "vertices_mean_mm") -> float:
        return max((r[key] for r in self.rows), default=float("nan"))

    def worst_judged(self) -> dict[str, Any]:
        """The judged row with the largest mean vertex drift: {"mm", "set", "batch"} (all rows if none judged)."""
        rows = [r for r in self.rows if r.get("judged", True)] or self.rows
        if not rows:
            return {"mm": float("nan"), "set": "", "batch": 0}
        row = max(rows, key=lambda r: r["vertices_mean_mm"])
        return {"mm": row["vertices_mean_mm"], "max_mm": row["vertices_max_mm"], "set": row["set"],
                "batch": row["batch"]}

    def verdict(self, recipe: str = "", limit_mm: float | None = None) -> dict[str, Any]:
        """PASS/MISS against the goal, the worst case, and (with a limit) whether it is refused."""
        worst = self.worst_judged()
        floor = self.floor.get(worst["set"], {})
        return {"precision": self.precision, "recipe": recipe, "goal_mm": self.goal_mean_vertex_mm,
                "floor_mean_vertex_mm": floor.get("vertices_mean_mm"), "floor_multiple": FLOOR_MULTIPLE if floor else None,
                "floor_by_set": {k: {"mean_vertex_mm": f["vertices_mean_mm"], "max_vertex_mm": f["vertices_max_mm"]}
                                 for k, f in self.floor.items()},
                "passed_within": self.passed_within() if self.passed else None,
                "worst_mean_vertex_mm": worst["mm"], "worst_max_vertex_mm": worst.get("max_mm", float("nan")),
                "worst_case": f"{worst['set']} windows, batch {worst['batch']}",
                "verdict": "PASS" if self.passed else "MISS", "failures": list(self.failures),
                "limit_mm": limit_mm, "drift_by_set": self.drift_by_set(), "decisions": self.decisions_by_set(),
                "judged_on": self.judged_on(),
                "conditioning": dict(self.conditioning), "share": dict(self.share)}

    def passed_within(self) -> str:
        """"goal" when every judged row is within the goal, else "floor" (within FLOOR_MULTIPLE x the floor)."""
        rows = [r for r in self.rows if r.get("judged", True)]
        return "goal" if all(r["vertices_mean_mm"] <= self.goal_mean_vertex_mm for r in rows) else "floor"

    def judged_on(self) -> str:
        """"pinned" when the rows are judged with the export's decisions pinned, else "end to end"."""
        return "pinned" if any(r.get("decisions", {}).get("judged_on") == "pinned" for r in self.rows) else "end to end"

    def decisions_by_set(self) -> dict[str, dict[str, Any]]:
        """Models with discrete decisions: per set, the largest batch's decision figures (``compare``)."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.rows:
            if "decisions" in r and r["batch"] >= out.get(r["set"], {}).get("batch", 0):
                out[r["set"]] = {"batch": r["batch"], **r["decisions"]}
        for name, d in out.items():  # any batch size: the most inputs decided otherwise
            d["items_decided_otherwise_any_batch"] = max(r["decisions"]["items_decided_otherwise"]
                                                         for r in self.rows if r["set"] == name and "decisions" in r)
        return out

    def drift_by_set(self) -> dict[str, dict[str, float]]:
        """Per window set: mean vertex drift averaged over the batch sizes, and the max over them (mm)."""
        out: dict[str, dict[str, float]] = {}
        for name in dict.fromkeys(r["set"] for r in self.rows):
            rows = [r for r in self.rows if r["set"] == name]
            out[name] = {"mean_vertex_mm": float(np.mean([r["vertices_mean_mm"] for r in rows])),
                         "max_vertex_mm": float(max(r["vertices_max_mm"] for r in rows))}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "goal_mean_vertex_mm": self.goal_mean_vertex_mm,
            "spread_mm": self.spread_mm,
            "rows": self.rows,
            "batch_invariance_max_abs": self.batch_invariance,
            "passed": self.passed,
            "failures": self.failures,
            "conditioning": self.conditioning,
            "share": self.share,
            "floor": self.floor,
            "floor_multiple": FLOOR_MULTIPLE if self.floor else None,
        }


def output_errors(candidate: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """max |a - b| and that over max |b| (relative to the output's scale, not element-wise)."""
    errs = {}
    for name, ref in reference.items():
        diff = float(np.abs(candidate[name].astype(np.float64) - ref).max())
        errs[name] = {"max_abs": diff, "max_rel": diff / max(float(np.abs(ref).max()), 1e-12)}
    return errs


def reference_outputs(model: torch.nn.Module, body_ref: Any, windows: Windows, graph: GraphSpec | None = None,
                      contract: ModelContract | None = None) -> Reference:
    """The torch model's outputs (named by the model graph) and their meshes through the torch body model."""
    graph = graph or default_graph()
    feed = _feed(graph, windows)
    with torch.no_grad():
        outs = model(*(torch.from_numpy(feed[n]) for n in graph.input_names))
    outputs = {name: t.numpy() for name, t in zip(graph.output_names, outs)}
    verts, joints = meshes(_torch_body(body_ref) if body_ref is not None else None, outputs, contract)
    return Reference(outputs, verts, joints)


def run_pipeline(run: Runner, windows: Windows, batch: int, graph: GraphSpec | None = None,
                 contract: ModelContract | None = None) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The model graph in chunks of ``batch`` windows, then the body-model graph on all emitted frames."""
    graph = graph or default_graph()
    feed = _feed(graph, windows)
    n = _count(feed)
    chunks = [run(graph.name, {k: v[i:i + batch] for k, v in feed.items()}) for i in range(0, n, batch)]
    outs = {k: np.concatenate([c[k] for c in chunks]) for k in graph.output_names}
    body_name = (contract.graph_for("body_model").name if contract is not None and contract.graph_for("body_model")
                 else "body_model")
    verts, joints = meshes(lambda f: run(body_name, f), outs, contract)
    return outs, verts, joints


def torch_batch_invariance(model: torch.nn.Module, windows: Windows, graph: GraphSpec | None = None) -> float:
    """Max abs change of any output when each window runs alone instead of in one batch."""
    graph = graph or default_graph()
    feed = {k: torch.from_numpy(v) for k, v in _feed(graph, windows).items()}
    names = graph.input_names
    with torch.no_grad():
        together = model(*(feed[k] for k in names))
        alone = [model(*(feed[k][i:i + 1] for k in names)) for i in range(len(feed[names[0]]))]
    return max(
        float((together[k][i] - alone[i][k]).abs().max()) for i in range(len(alone)) for k in range(len(together))
    )


def compare(
    run: Runner,
    references: dict[str, Reference],
    windows: dict[str, np.ndarray],
    *,
    precision: str = "fp32",
    batch_sizes: tuple[int, ...] = (1, 2, 7),
    check_outputs: bool = True,
    judged: set[str] | None = None,
    graph: GraphSpec | None = None,
    contract: ModelContract | None = None,
    goal_mm: float | None = None,
    pinning: Pinning | None = None,
    floor: dict[str, dict[str, Any]] | None = None,
) -> ParityReport:
    """The parity report of ``run`` against the references, for every set and batch size.

    ``judged``: the window sets held to the goal (default: all). FP16/INT8 goals apply to real
    feature windows; random Gaussian windows lie outside an INT8 calibration's ranges (real
    features are non-negative), so for those precisions they are reported, not judged.
    ``pinning``: for models with discrete decisions (contract ``decisions``). FP32 rows are then judged
    against the reference with the export's decisions pinned, and the decision tensors must match the
    reference's to the FP32 tier: FP32 parity asks whether the export computes the same function, and
    two FP32 implementations may send a value within round-off of a threshold to either side. FP16/INT8
    rows stay judged end to end (a flip caused by reduced precision is drift the user sees). Each row's
    ``decisions`` holds both figures and how many items were decided otherwise.
    ``floor``: FP32 only, per set, the torch reference's own float32 floor (``float32_floor``): a row passes
    within the goal or within FLOOR_MULTIPLE x the floor; the output and decision tiers likewise.
    """
    goal = goal_mm if goal_mm is not None else (contract.goal_mm(precision) if contract else GOALS_MM[precision])
    graph = graph or (contract.model_graph if contract else default_graph())
    report = ParityReport(precision, goal)
    floor = floor if precision == "fp32" and floor else {}
    report.floor = dict(floor)
    per_batch_outputs: dict[int, dict[str, np.ndarray]] = {}
    for set_name, ref in references.items():
        pinned_cache: dict[str, Any] = {}
        spread = motion_spread_mm(ref.vertices)
        report.spread_mm[set_name] = spread
        for batch in batch_sizes:
            decisions = None
            target = ref
            if pinning is None:
                outs, verts, joints = run_pipeline(run, windows[set_name], batch, graph, contract)
            else:
                outs, verts, joints, pinned, decisions = pinned_pipeline(run, pinning, windows[set_name], ref,
                                                                         batch, graph, contract, pinned_cache)
                decisions["pinned_vertices_mean_mm"], decisions["pinned_vertices_max_mm"] = \
                    drift_mm(verts, pinned.vertices)
                decisions["judged_on"] = "pinned" if precision == "fp32" else "unpinned"
                if precision == "fp32":
                    target = pinned
            keypoints = None
            if contract is not None and contract.body_model == "keypoints":  # FP32 pinned, as decisions are
                points, _, keypoints = pinned_keypoints(outs, verts, target)
                keypoints["judged_on"] = "pinned" if precision == "fp32" else "end to end"
                if precision == "fp32":
                    verts = joints = points
            if set_name == "video" or len(references) == 1:
                per_batch_outputs[batch] = outs
            v_mean, v_max = drift_mm(verts, target.vertices)
            j_mean, j_max = drift_mm(joints, target.joints)
            row = {
                "set": set_name, "batch": batch,
                "vertices_mean_mm": v_mean, "vertices_max_mm": v_max,
                "joints_mean_mm": j_mean, "joints_max_mm": j_max,
                "vertices_mean_of_spread": v_mean / spread if spread > 0 else float("inf"),
                "outputs": output_errors(outs, target.outputs),
                "judged": judged is None or set_name in judged,
            }
            if decisions is not None:
                row["decisions"] = decisions
            if keypoints is not None:
                row["keypoints"] = keypoints
            set_floor = floor.get(set_name)
            if set_floor is not None:
                row["floor_mean_mm"] = set_floor["vertices_mean_mm"]
                row["limit_mm"] = max(goal, FLOOR_MULTIPLE * set_floor["vertices_mean_mm"])
            report.rows.append(row)
            if not row["judged"]:
                continue
            if decisions is not None and precision == "fp32":
                for name, err in decisions["decision_input_max_abs"].items():
                    tol = tier(DECISION_MAX_ABS, set_floor, "decisions", name)
                    if err > tol:
                        report.failures.append(f"{set_name} batch {batch}: decision tensor {name} max abs "
                                               f"{err:.3g} > {tol:.3g}{_floor_note(set_floor, 'decisions', name)} "
                                               "(pinning forgives round-off only)")
                if decisions["artifact_vs_copy_max_abs"] > COPY_MAX_ABS:
                    report.failures.append(f"{set_name} batch {batch}: the exported graph and its copy with decision "
                                           f"outputs differ by {decisions['artifact_vs_copy_max_abs']:.3g}")
            if v_mean > row.get("limit_mm", goal):
                within = (f" and > {FLOOR_MULTIPLE:g} x the float32 floor {set_floor['vertices_mean_mm']:.3g} mm"
                          if set_floor is not None else "")
                report.failures.append(f"{set_name} batch {batch}: mean vertex drift {v_mean:.4g} mm > goal {goal} mm"
                                       + within)
            if check_outputs and precision == "fp32":
                for name, err in row["outputs"].items():
                    tol = tier(FP32_MAX_ABS, set_floor, "outputs", name)
                    if err["max_abs"] > tol:
                        report.failures.append(f"{set_name} batch {batch}: {name} max abs {err['max_abs']:.3g} > "
                                               f"{tol:.3g}{_floor_note(set_floor, 'outputs', name)}")
    if len(per_batch_outputs) > 1:
        base = per_batch_outputs[min(per_batch_outputs)]
        report.batch_invariance["onnxruntime"] = max(
            float(np.abs(o[k] - base[k]).max()) for o in per_batch_outputs.values() for k in base
        )
    return report


def pinned_keypoints(outs: dict[str, np.ndarray], own_points: np.ndarray,
                     ref: Reference) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Keypoint models (contract ``body_model: "keypoints"``): the keypoints of ``outs``' heatmaps decoded from the
    reference's heatmap maxima, and what the maxima did. Which cell holds a heatmap's maximum is a discrete
    decision two float32 runtimes may take apart on a near-tie (the keypoint then jumps by about a cell); as for
    the contracts' ``decisions``, FP32 parity compares the continuous part (the sub-pixel refinement from the
    same cell, and the heatmaps themselves at the per-output tier) and reports the maxima decided otherwise
    and the drift end to end beside it; FP16/INT8 are judged end to end (a maximum moved by reduced precision
    is drift the user sees)."""
    from hmr_trt.mesh import keypoint_points
    from hmr_trt.runtime.keypoints import heatmap_maxima

    ref_cells = heatmap_maxima(np.asarray(ref.outputs["heatmaps"], np.float32))[0]
    own_cells = heatmap_maxima(np.asarray(outs["heatmaps"], np.float32))[0]
    points = keypoint_points(outs["heatmaps"], ref_cells)
    mean, worst = drift_mm(own_points, ref.vertices)
    info = {"keypoints": int(np.prod(ref_cells.shape[:-1])),
            "maxima_decided_otherwise": int((own_cells != ref_cells).any(axis=-1).sum()),
            "unpinned_mean_px": mean, "unpinned_max_px": worst}
    return points, points, info


def tier(base: float, set_floor: dict[str, Any] | None, kind: str, name: str) -> float:
    """A max-abs tier for one output or decision tensor: ``base``, or FLOOR_MULTIPLE x its own float32 floor."""
    own = (set_floor or {}).get(kind, {}).get(name)
    return base if own is None else max(base, FLOOR_MULTIPLE * own)


def _floor_note(set_floor: dict[str, Any] | None, kind: str, name: str) -> str:
    own = (set_floor or {}).get(kind, {}).get(name)
    return "" if own is None else f" (the tier, or {FLOOR_MULTIPLE:g} x its float32 floor {own:.3g})"


REL_PERTURBATION = 1e-4


# --- models with discrete decisions (contract ``decisions``) -------------------------------------------

@dataclass
class Pinning:
    """What FP32 parity needs for a model whose graph takes discrete decisions (``Decision``).

    ``run``: the model graph with each decision tensor as an extra output (``decision_graph``), on a feed;
    ``outputs``: decision name -> that extra output's name; ``reference``: the torch reference with the
    given decisions ({name: array}) pinned, as a ``Reference``; ``describe``: optional, the reference's
    and the export's decision tensors -> a few model-specific figures (e.g. pixels that changed side)."""

    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    outputs: dict[str, str]
    reference: Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], Reference]
    own: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    describe: Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], dict[str, Any]] | None = None


def decision_tensors(model: Any, contract: ModelContract) -> dict[str, str]:
    """Decision name -> the ONNX tensor it is taken from (output 0 of the one node its rule matches)."""
    import re

    from hmr_trt.errors import ExportError

    found = {}
    for d in contract.decisions:
        nodes = [n for n in model.graph.node if n.op_type == d.op and re.search(d.scope, n.name)]
        if len(nodes) != 1:
            raise ExportError(f"model {contract.name}: decision {d.name} ({d.op} {d.scope}) matches {len(nodes)} "
                              "nodes of the exported graph, not one; the node names changed (update the contract)")
        found[d.name] = nodes[0].output[0]
    return found


def decision_graph(src: Any, dst: Any, contract: ModelContract) -> dict[str, str]:
    """Write a copy of the model graph ``src`` with every decision tensor as an extra graph output;
    returns decision name -> output name."""
    import onnx

    model = onnx.load(str(src))
    found = decision_tensors(model, contract)
    present = {o.name for o in model.graph.output}
    typed = {v.name: v.type.tensor_type.elem_type
             for v in onnx.shape_inference.infer_shapes(model).graph.value_info}  # FP16 graphs: float16
    for tensor in found.values():
        if tensor not in present:
            elem = typed.get(tensor, onnx.TensorProto.FLOAT)
            model.graph.output.append(onnx.helper.make_tensor_value_info(tensor, elem, None))
    onnx.save(model, str(dst))
    return found


def pinned_reference_outputs(adapter: Any, model: torch.nn.Module, body_ref: Any, feed: dict[str, np.ndarray],
                             taken: dict[str, np.ndarray], graph: GraphSpec,
                             contract: ModelContract | None) -> Reference:
    """The torch reference on ``feed`` with the decisions ``taken`` (the export's) pinned."""
    inputs = tuple(torch.from_numpy(np.ascontiguousarray(feed[n])) for n in graph.input_names)
    pinned = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in taken.items()}
    with torch.no_grad():
        outs = adapter.pinned_reference(model, inputs, pinned)
    outputs = {name: t.numpy() for name, t in zip(graph.output_names, outs)}
    verts, joints = meshes(_torch_body(body_ref) if body_ref is not None else None, outputs, contract)
    return Reference(outputs, verts, joints)


def own_decisions(adapter: Any, model: torch.nn.Module, feed: dict[str, np.ndarray],
                  graph: GraphSpec) -> dict[str, np.ndarray]:
    """The torch reference's own decision tensors on ``feed``."""
    inputs = tuple(torch.from_numpy(np.ascontiguousarray(feed[n])) for n in graph.input_names)
    with torch.no_grad():
        return {k: v.numpy() for k, v in adapter.decision_values(model, inputs).items()}


def pinned_pipeline(run: Runner, pinning: Pinning, windows: Windows, ref: Reference, batch: int,
                    graph: GraphSpec, contract: ModelContract | None,
                    cache: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray,
                                                                  Reference, dict[str, Any]]:
    """``run_pipeline`` through the decision graph; returns its outputs and meshes, the reference with the
    export's decisions pinned, and what the decisions did (items decided otherwise, the unpinned drift).
    ``cache``: one dict per window set, so the torch runs are not repeated for every batch size."""
    import hashlib

    cache = {} if cache is None else cache
    taken_chunks: list[dict[str, np.ndarray]] = []
    copy_err: list[float] = []

    def run_with_decisions(name: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if name != graph.name:
            return run(name, feed)
        out = pinning.run(feed)
        if not taken_chunks:  # the artifact itself computes what the copy computes
            artifact = run(name, feed)
            copy_err.append(max(float(np.abs(artifact[k].astype(np.float64) - out[k]).max())
                                for k in graph.output_names))
        taken_chunks.append({d: out[t] for d, t in pinning.outputs.items()})
        return out

    outs, verts, joints = run_pipeline(run_with_decisions, windows, batch, graph, contract)
    feed = _feed(graph, windows)
    n = _count(feed)
    taken = {d: np.concatenate([c[d] for c in taken_chunks]) for d in pinning.outputs}
    key = hashlib.sha256(b"".join(np.ascontiguousarray(taken[d]).tobytes() for d in sorted(taken))).hexdigest()
    if key not in cache:  # the same decisions at another batch size: the same pinned reference
        cache[key] = pinning.reference(feed, taken)
    pinned = cache[key]
    if "own" not in cache:
        cache["own"] = pinning.own(feed)
    own = cache["own"]
    # identical decisions make the pinned reference compute exactly what the reference computed: the items
    # where it differs at all are those the export decided otherwise
    # (decision tensors that are graph outputs, like a scene model's center map, are the export's there)
    flipped = np.zeros(n, dtype=bool)
    for k, v in pinned.outputs.items():
        if k not in pinning.outputs.values():
            flipped |= np.abs(v - ref.outputs[k]).reshape(n, -1).max(axis=1) > 0
    flipped |= np.abs(pinned.vertices - ref.vertices).reshape(n, -1).max(axis=1) > 0
    v_mean, v_max = drift_mm(verts, ref.vertices)
    info: dict[str, Any] = {
        "items": n, "items_decided_otherwise": int(flipped.sum()), "artifact_vs_copy_max_abs": copy_err[0],
        "decision_input_max_abs": {d: float(np.abs(taken[d].astype(np.float64) - own[d]).max()) for d in taken},
        "unpinned_vertices_mean_mm": v_mean, "unpinned_vertices_max_mm": v_max,
        "unpinned_joints_mean_mm": drift_mm(joints, ref.joints)[0],
    }
    if flipped.any():
        info["unpinned_on_those_mean_mm"] = drift_mm(verts[flipped], ref.vertices[flipped])[0]
        info["unpinned_elsewhere_mean_mm"] = (drift_mm(verts[~flipped], ref.vertices[~flipped])[0]
                                              if (~flipped).any() else 0.0)
    if pinning.describe is not None:
        info.update(pinning.describe(own, taken))
    return outs, verts, joints, pinned, info


def _perturbed(arrays: dict[str, np.ndarray], rel: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every float32 array x (1 +- rel), random signs (other dtypes unchanged)."""
    sign = np.array([-1.0, 1.0])
    return {k: (v.astype(np.float64) * (1 + rel * rng.choice(sign, v.shape))).astype(np.float32)
            if v.dtype == np.float32 else v for k, v in arrays.items()}


def _perturbed_model(model: torch.nn.Module, rel: float, seed: int) -> torch.nn.Module:
    """A copy of ``model`` with every float parameter and buffer x (1 +- rel), random signs."""
    import copy

    other = copy.deepcopy(model)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for t in list(other.parameters()) + list(other.buffers()):
            if t.dtype == torch.float32 and t.numel():
                moved = _perturbed({"t": t.detach().numpy()}, rel, rng)["t"]
                t.copy_(torch.from_numpy(moved))
    return other.eval()


def float32_floor(model: torch.nn.Module, body_ref: Any, windows: dict[str, Windows], references: dict[str, Reference],
                  graph: GraphSpec | None = None, contract: ModelContract | None = None, adapter: Any = None, *,
                  rel: float = FLOOR_REL, seed: int = 0) -> dict[str, dict[str, Any]]:
    """The torch reference's own float32 noise, per set: how far it moves from itself when (a) every float
    input and (b) every weight and buffer is multiplied by 1 +- ``rel`` (random signs; about one ulp), the
    round-off any second runtime adds. The floor is the larger of the two: mean/max vertex and joint drift in
    mm, each output's max abs change, and for models with decisions (contract ``decisions``, ``adapter``
    given) each decision tensor's; those models are measured with the reference's own decisions pinned, so
    the floor holds continuous round-off only (a flipped decision is reported by the pinned parity)."""
    graph = graph or (contract.model_graph if contract else default_graph())
    pinned = adapter is not None and contract is not None and bool(contract.decisions)
    moved_model = _perturbed_model(model, rel, seed + 1)
    out: dict[str, dict[str, Any]] = {}
    for set_name, w in windows.items():
        feed = _feed(graph, w)
        ref = references[set_name]
        own = own_decisions(adapter, model, feed, graph) if pinned else {}
        moved_feed = _perturbed(feed, rel, np.random.default_rng(seed))
        figures: dict[str, dict[str, Any]] = {}
        for label, (m, f) in {"inputs": (model, moved_feed), "weights": (moved_model, feed)}.items():
            if pinned:
                got = pinned_reference_outputs(adapter, m, body_ref, f, own, graph, contract)
                dec = {k: float(np.abs(v.astype(np.float64) - own[k]).max())
                       for k, v in own_decisions(adapter, m, f, graph).items()}
            else:
                got, dec = reference_outputs(m, body_ref, f, graph, contract), {}
                if contract is not None and contract.body_model == "keypoints":
                    points = pinned_keypoints(got.outputs, got.vertices, ref)[0]
                    got = Reference(got.outputs, points, points)
            v_mean, v_max = drift_mm(got.vertices, ref.vertices)
            figures[label] = {"vertices_mean_mm": v_mean, "vertices_max_mm": v_max,
                              "joints_mean_mm": drift_mm(got.joints, ref.joints)[0],
                              "outputs": {k: e["max_abs"] for k, e in output_errors(got.outputs, ref.outputs).items()},
                              "decisions": dec}
        a, b = figures["inputs"], figures["weights"]
        out[set_name] = {
            "vertices_mean_mm": max(a["vertices_mean_mm"], b["vertices_mean_mm"]),
            "vertices_max_mm": max(a["vertices_max_mm"], b["vertices_max_mm"]),
            "joints_mean_mm": max(a["joints_mean_mm"], b["joints_mean_mm"]),
            "outputs": {k: max(a["outputs"][k], b["outputs"][k]) for k in a["outputs"]},
            "decisions": {k: max(a["decisions"][k], b["decisions"][k]) for k in a["decisions"]},
            "by": {"inputs_mean_vertex_mm": a["vertices_mean_mm"], "weights_mean_vertex_mm": b["vertices_mean_mm"]},
            "relative_perturbation": rel, "pinned": pinned,
        }
    return out


def conditioning(run: Runner, windows: dict[str, Windows], graph: GraphSpec | None = None,
                 contract: ModelContract | None = None, *, rel: float = REL_PERTURBATION, batch: int = 7,
                 seed: int = 0) -> dict[str, Any]:
    """The FP32 network's own sensitivity, to tell it from what a precision pass adds.

    On the real-video windows (else the first set), the FP32 pipeline ``run`` is fed (a) every float
    input multiplied by 1 +- ``rel`` (random signs) and (b) every float input rounded to FP16; each
    gives the mean/max vertex drift in mm against the unperturbed run. (a) is the drift per relative
    input perturbation ``rel``; (b) is what an FP16 graph drifts from storing its inputs alone.
    """
    graph = graph or (contract.model_graph if contract else default_graph())
    set_name = "video" if "video" in windows else next(iter(windows))
    feed = _feed(graph, windows[set_name])
    rng = np.random.default_rng(seed)
    floats = {k for k, v in feed.items() if v.dtype == np.float32}
    _, base, _ = run_pipeline(run, feed, batch, graph, contract)
    perturbed = {k: (v * (1 + rel * rng.choice(np.array([-1.0, 1.0], np.float32), v.shape))).astype(np.float32)
                 if k in floats else v for k, v in feed.items()}
    rounded = {k: v.astype(np.float16).astype(np.float32) if k in floats else v for k, v in feed.items()}
    out: dict[str, Any] = {"set": set_name, "windows": _count(feed), "relative_perturbation": rel}
    for label, variant in (("perturbation", perturbed), ("input_fp16", rounded)):
        _, verts, _ = run_pipeline(run, variant, batch, graph, contract)
        mean, worst = drift_mm(verts, base)
        out[f"{label}_mean_vertex_mm"], out[f"{label}_max_vertex_mm"] = mean, worst
    rel_err = [np.abs(rounded[k] - feed[k])[feed[k] != 0] / np.abs(feed[k][feed[k] != 0]) for k in floats]
    out["input_fp16_mean_relative_error"] = float(np.mean(np.concatenate(rel_err))) if rel_err else 0.0
    return out


def check_spread(report: ParityReport, minimum: float = MIN_SPREAD_MM) -> None:
    """Parity proves something only on outputs that move: the sample video's windows (the real inputs) must move
    the outputs at least ``minimum`` mm; without a video set, every set must. Random windows beside a video set are
    not held to it: a network shaped like a trained one (seeded BatchNorm measured on people) moves less on noise
    than on people, and its drift there is still judged."""
    sets = {"video": report.spread_mm["video"]} if "video" in report.spread_mm else report.spread_mm
    for set_name, spread in sets.items():
        if spread < minimum:
            report.failures.append(
                f"{set_name}: outputs barely move across windows (spread {spread:.1f} mm < {minimum} mm); "
                "parity on near-constant outputs proves nothing"
            )


def random_windows(n: int, window: int, feature_dim: int, seed: int = 0) -> np.ndarray:
    """Unit-variance Gaussian windows (W, T, C) float32."""
    return np.random.default_rng(seed).standard_normal((n, window, feature_dim)).astype(np.float32)


def parity_windows(cfg: Any, video: str | None, n: int = 7, seed: int = 0, backbone: Any = None) -> dict[str, np.ndarray]:
    """Random windows, and windows of backbone features of real video frames when a video is given.

    ``cfg``: anything with ``window`` and ``feature_dim`` (a window model's contract or config)."""
    sets = {"random": random_windows(n, cfg.window, cfg.feature_dim, seed)}
    if video is not None:
        sets["video"] = features_from_video_tiles(video, n, cfg.window, backbone=backbone)
    return sets


@dataclass
class ParityTable:
    """Rows for printing: one per (precision, set, batch)."""

    reports: list[ParityReport]

    def lines(self) -> list[list[str]]:
        out = []
        for rep in self.reports:
            for r in rep.rows:
                out.append([
                    rep.precision, r["set"] + ("" if r.get("judged", True) else "*"), str(r["batch"]),
                    f"{r['vertices_mean_mm']:.2e}", f"{r['vertices_max_mm']:.2e}",
                    f"{r['joints_mean_mm']:.2e}", f"{r['joints_max_mm']:.2e}",
                    f"{r['vertices_mean_of_spread']:.1e}", f"{rep.spread_mm[r['set']]:.0f}",
                    f"{r['floor_mean_mm']:.2e}" if "floor_mean_mm" in r else "-",
                ])
        return out

    header = ["prec", "windows", "batch", "vert mean", "vert max", "joint mean", "joint max", "mean/spread",
              "spread", "fp32 floor"]
