"""The model contract: what a model takes, what it gives, and how to deploy it, without torch.

Every consumer (the exporter, the engine builder, calibration, the runtime, benchmarks, the GPU
tests) learns a model from its contract, never from literals. ``trt-export`` writes the contract
into ``manifest.json`` (``Manifest.contract``), so an export made on one machine runs anywhere
without the reader knowing the model's name; ``ModelContract.from_dict`` reads it back.

Three families:
- ``window``: per-frame features (B, T, C) of one track -> per-frame SMPL parameters for the window
  positions in ``emit`` ("all": every position, e.g. coseg; "middle": position T // 2, e.g. GLoT,
  TCMR, MPS-Net). ``causal`` models (VIBE) use no future frame, so position t only reads frames <= t.
- ``frame``: one crop per person per frame (e.g. DecoMR).
- ``scene``: one whole image, many people (e.g. the instance-aware network).
- ``track``: a causal recurrent model over a track's per-frame inputs, run as an ``init`` graph (a
  track's first frame -> its state) and a one-frame ``model`` graph carrying the state (WHAM).

The contracts themselves live beside each model's torch code (``export/models/<name>/contract.py``,
torch-free); ``hmr_trt.registry`` finds them by name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from .errors import ConfigError

FAMILIES = ("window", "frame", "scene", "track")
EMITS = ("all", "middle")
ROLES = ("model", "body_model", "feature_extractor", "step", "init")  # init: a recurrent track's first state (WHAM)
PRECISIONS = ("fp32", "fp16", "int8")
# Written-down goals (mean vertex drift vs the torch FP32 reference, mm) unless a contract says otherwise.
DEFAULT_GOALS_MM = {"fp32": 0.01, "fp16": 0.1, "int8": 0.4}

Dim = Union[int, str]  # a static size, or the name of the dynamic (batch) axis


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: every dimension static except the named batch axis."""

    name: str
    shape: Tuple[Dim, ...]
    dtype: str = "float32"

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        return cls(d["name"], tuple(d["shape"]), d.get("dtype", "float32"))


@dataclass(frozen=True)
class GraphSpec:
    """One exported graph: its role in the pipeline, inputs and outputs (names, shapes, dynamic axis)."""

    name: str  # file stem and manifest artifact name: "temporal", "body_model", "backbone", "step", ...
    role: str  # one of ROLES
    inputs: Tuple[TensorSpec, ...]
    outputs: Tuple[TensorSpec, ...]
    batch_axis: str = "batch"  # the one dynamic axis (always axis 0)
    precision_passes: bool = True  # False: stays FP32 whole (body models, feature extractors)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigError(f"graph {self.name}: role must be one of {', '.join(ROLES)}, got {self.role!r}")

    @property
    def input_names(self) -> Tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> Tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def dynamic_axes(self) -> Dict[str, Dict[int, str]]:
        return {n: {0: self.batch_axis} for n in self.input_names + self.output_names}

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["inputs"] = [t.to_dict() for t in self.inputs]
        d["outputs"] = [t.to_dict() for t in self.outputs]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GraphSpec:
        d = dict(d)
        d["inputs"] = tuple(TensorSpec.from_dict(t) for t in d.get("inputs", ()))
        d["outputs"] = tuple(TensorSpec.from_dict(t) for t in d.get("outputs", ()))
        return cls(**d)


@dataclass(frozen=True)
class KeepRule:
    """ONNX nodes a reduced-precision pass leaves in FP32: op type in ``ops`` and node name matching
    the regex ``scope`` (the exporter's module scope, e.g. ``^/stage1/dem/Softmax$``)."""

    name: str
    ops: Tuple[str, ...]
    scope: str
    why: str

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "ops": list(self.ops), "scope": self.scope, "why": self.why}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> KeepRule:
        return cls(d["name"], tuple(d["ops"]), d["scope"], d.get("why", ""))


# Op types an INT8 recipe quantizes unless it says otherwise: the GEMMs of temporal graphs.
INT8_OPS = ("MatMul", "Gemm")
# Op types calibration/quantize.py can quantize the way TensorRT reads them (symmetric, per-channel weights).
INT8_QUANTIZABLE = ("MatMul", "Gemm", "Conv")


@dataclass(frozen=True)
class Recipe:
    """A named precision recipe: which precision, and which nodes stay FP32 (``keep``) on top of the
    graph's inputs and outputs. INT8 recipes also name the nodes never quantized (``int8_exclude``)
    and the op types that get Q/DQ inputs (``int8_ops``: MatMul/Gemm by default, Conv for CNNs)."""

    name: str  # "fp16", "fp16-rnn32", "int8", ...
    precision: str  # "fp16" | "int8"
    keep: Tuple[KeepRule, ...] = ()
    int8_exclude: Tuple[KeepRule, ...] = ()
    description: str = ""
    int8_ops: Tuple[str, ...] = INT8_OPS

    def __post_init__(self) -> None:
        if self.precision not in ("fp16", "int8"):
            raise ConfigError(f"recipe {self.name}: precision must be fp16 or int8, got {self.precision!r}")
        bad = [op for op in self.int8_ops if op not in INT8_QUANTIZABLE]
        if bad or not self.int8_ops:
            raise ConfigError(f"recipe {self.name}: int8_ops must be a non-empty subset of "
                              f"{', '.join(INT8_QUANTIZABLE)}, got {list(self.int8_ops)}")

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "precision": self.precision, "keep": [k.to_dict() for k in self.keep],
                "int8_exclude": [k.to_dict() for k in self.int8_exclude], "description": self.description,
                "int8_ops": list(self.int8_ops)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Recipe:
        return cls(d["name"], d["precision"], tuple(KeepRule.from_dict(k) for k in d.get("keep", ())),
                   tuple(KeepRule.from_dict(k) for k in d.get("int8_exclude", ())), d.get("description", ""),
                   tuple(d.get("int8_ops", INT8_OPS)))  # manifests written before int8_ops: MatMul/Gemm


@dataclass(frozen=True)
class Decision:
    """A discrete decision inside the model graph (a threshold, a rounding to a cell) and the tensor it is
    taken from: the output of the one node of type ``op`` whose name matches the regex ``scope``.

    Two FP32 implementations agree on a continuous value to round-off, not on which side of a threshold
    it falls when it sits within round-off of it; one flipped decision can move a mesh by centimetres.
    FP32 parity of such a model is therefore judged with the decisions pinned: the decision tensor must
    match the reference to the FP32 tier, and the outputs must match a reference that takes the export's
    decisions (the adapter's ``pinned_reference``); the unpinned drift and the flips are reported beside.
    """

    name: str
    op: str
    scope: str
    why: str

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "op": self.op, "scope": self.scope, "why": self.why}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Decision:
        return cls(d["name"], d["op"], d["scope"], d.get("why", ""))


@dataclass(frozen=True)
class ModelContract:
    """Everything a consumer needs to know about one model; JSON-round-trippable."""

    name: str  # the registry key and --model value
    family: str  # one of FAMILIES
    description: str
    graphs: Tuple[GraphSpec, ...]
    checkpoint: str = ""  # the official released file users hold (e.g. "table1_3dpw_weights.pth.tar"), "" if none
    # window family
    window: int = 0  # T
    feature_dim: int = 0  # C of the per-frame features
    emit: str = "all"  # which window positions a window emits: "all" or "middle" (T // 2)
    causal: bool = False  # position t reads frames <= t only (true streaming possible)
    # inputs: crops (window/frame) or whole images (scene)
    feature_extractor: str = "spin_resnet50"  # the graph that makes the model's input; "none" for image models
    crop_size: int = 224  # crop side in pixels (window/frame families)
    bbox_scale: float = 1.2  # square box scale around a detection (the official demo's value)
    crop_aspect: float = 0.0  # > 0: the box is first widened/heightened to this width:height ratio (HMR 2.0: 0.75)
    crop_antialias: bool = False  # blur the frame before a crop that downsamples over 2.2x (HMR 2.0's demo)
    focal_length: float = 0.0  # > 0: the crop camera is perspective, this focal length at crop_size (HMR 2.0: 5000)
    image_size: int = 0  # scene family: padded square input side
    body_model: str = "smpl"  # "smpl" (body_model graph applied to pose_rotmat/betas) or "none" (vertices out)
    recipes: Tuple[Recipe, ...] = ()
    default_recipe: Dict[str, str] = field(default_factory=dict)  # precision -> recipe name
    goals_mm: Dict[str, float] = field(default_factory=lambda: dict(DEFAULT_GOALS_MM))
    decisions: Tuple[Decision, ...] = ()  # discrete decisions FP32 parity pins (``Decision``)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(f"model {self.name}: family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        if self.emit not in EMITS:
            raise ConfigError(f"model {self.name}: emit must be one of {', '.join(EMITS)}, got {self.emit!r}")
        if self.family == "window" and (self.window < 1 or self.feature_dim < 1):
            raise ConfigError(f"model {self.name}: a window model needs window and feature_dim")
        names = [g.name for g in self.graphs]
        if len(set(names)) != len(names):
            raise ConfigError(f"model {self.name}: graph names repeat: {names}")
        if sum(g.role == "model" for g in self.graphs) != 1:
            raise ConfigError(f"model {self.name}: exactly one graph must have role 'model'")
        for precision, recipe in self.default_recipe.items():
            if self.recipe(recipe).precision != precision:
                raise ConfigError(f"model {self.name}: default {precision} recipe {recipe!r} is not {precision}")

    # --- lookups ---------------------------------------------------------------------------
    def graph(self, name: str) -> GraphSpec:
        for g in self.graphs:
            if g.name == name:
                return g
        raise ConfigError(f"model {self.name} has no graph {name!r}; it has {', '.join(g.name for g in self.graphs)}")

    def graph_for(self, role: str) -> Optional[GraphSpec]:
        return next((g for g in self.graphs if g.role == role), None)

    @property
    def model_graph(self) -> GraphSpec:
        g = self.graph_for("model")
        assert g is not None  # checked in __post_init__
        return g

    def recipe(self, name: str) -> Recipe:
        for r in self.recipes:
            if r.name == name:
                return r
        raise ConfigError(f"model {self.name} has no precision recipe {name!r}; "
                          f"it has {', '.join(r.name for r in self.recipes) or 'none'}")

    def recipe_for(self, precision: str, name: Optional[str] = None) -> Recipe:
        """The named recipe, else this precision's default."""
        if name is None:
            if precision not in self.default_recipe:
                raise ConfigError(f"model {self.name} has no default {precision} recipe")
            name = self.default_recipe[precision]
        recipe = self.recipe(name)
        if recipe.precision != precision:
            raise ConfigError(f"recipe {name!r} is {recipe.precision}, not {precision}")
        return recipe

    def goal_mm(self, precision: str) -> float:
        return float(self.goals_mm[precision])

    def emit_positions(self, window: Optional[int] = None) -> Tuple[int, ...]:
        """Window positions whose frames a window's outputs hold, in output order."""
        t = window or self.window
        return tuple(range(t)) if self.emit == "all" else (t // 2,)

    def rows_per_item(self, graph: Union[GraphSpec, str]) -> int:
        """How many rows of ``graph``'s batch axis one item of the model graph's batch axis makes.

        The one rule every batch size of a non-model graph comes from (export, engine profiles,
        ONNX Runtime's TensorRT EP profiles, Triton's max_batch_size): a window makes T frames for the
        feature extractor and ``len(emit_positions())`` frames for the body model (T for ``emit=all``,
        1 for ``emit=middle``: GLoT, TCMR, MPS-Net); everything else, and every non-window model, 1.
        """
        spec = self.graph(graph) if isinstance(graph, str) else graph
        if self.family != "window" or spec.role in ("model", "step"):
            return 1
        if spec.role == "body_model":
            return len(self.emit_positions())
        if spec.role == "feature_extractor":
            return self.window
        return 1

    # --- manifest round trip ---------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["graphs"] = [g.to_dict() for g in self.graphs]
        d["recipes"] = [r.to_dict() for r in self.recipes]
        d["decisions"] = [x.to_dict() for x in self.decisions]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelContract:
        d = dict(d)
        d["graphs"] = tuple(GraphSpec.from_dict(g) for g in d.get("graphs", ()))
        d["recipes"] = tuple(Recipe.from_dict(r) for r in d.get("recipes", ()))
        d["decisions"] = tuple(Decision.from_dict(x) for x in d.get("decisions", ()))
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        try:
            return cls(**known)
        except TypeError as exc:
            raise ConfigError(f"not a valid model contract: {exc}") from exc


# --- helpers for writing contracts ---------------------------------------------------------------

def window_outputs(batch: str, frames: int, joints: int = 24, betas: int = 10) -> Tuple[TensorSpec, ...]:
    """The SMPL-parameter outputs of a window graph that emits ``frames`` frames per window."""
    return (TensorSpec("pose_rotmat", (batch, frames, joints, 3, 3)),
            TensorSpec("betas", (batch, frames, betas)),
            TensorSpec("cam", (batch, frames, 3)))


def smpl_body_graph(vertices: int = 6890, joints: int = 24, betas: int = 10) -> GraphSpec:
    """pose_rotmat (N, 24, 3, 3), betas (N, 10) -> vertices (N, V, 3), joints3d (N, J, 3); stays FP32."""
    return GraphSpec("body_model", "body_model",
                     (TensorSpec("pose_rotmat", ("frames", 24, 3, 3)), TensorSpec("betas", ("frames", betas))),
                     (TensorSpec("vertices", ("frames", vertices, 3)), TensorSpec("joints3d", ("frames", joints, 3))),
                     batch_axis="frames", precision_passes=False)


def spin_backbone_graph(crop: int = 224, dim: int = 2048) -> GraphSpec:
    """The SPIN ResNet-50 feature extractor: crops (N, 3, 224, 224) -> features (N, 2048); stays FP32."""
    return GraphSpec("backbone", "feature_extractor", (TensorSpec("images", ("images", 3, crop, crop)),),
                     (TensorSpec("features", ("images", dim)),), batch_axis="images", precision_passes=False)
