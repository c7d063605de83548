"""FP16 pass: FP32 IO, the block list stays FP32 and matches real nodes, ORT CPU runs it, mm parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxconverter_common")

from onnx import TensorProto, helper  # noqa: E402

from hmr_trt import registry  # noqa: E402
from hmr_trt.engines.precision import (  # noqa: E402
    blocked_nodes,
    emulation_onnx_from_fp16,
    fp16_onnx_from_fp32,
    fp16_problems,
    tensor_types,
    unmatched_entries,
)
from hmr_trt.errors import ConfigError, ExportError  # noqa: E402
from hmr_trt.metrics import GOALS_MM, mesh_drift, meshes  # noqa: E402
from hmr_trt.runtime.backends import OnnxRuntimeBackend  # noqa: E402

F16, F32 = TensorProto.FLOAT16, TensorProto.FLOAT
KEEP = registry.contract("coseg").recipe_for("fp16").keep  # coseg's FP16 keep-list, from its contract
# Rounding the input features alone to FP16 moves this seeded model's vertices by ~0.09 mm (measured on
# sample-video windows); the FP16 graph must stay within a few times that.
FP16_REGRESSION_BOUND_MM = 2.0


def _run(path: Path, feed: dict) -> dict:
    with OnnxRuntimeBackend(path) as backend:
        return backend.infer(feed)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path, Path, dict]:
    """The TINY model's temporal graph (same module scopes as the full one), FP16 and its CPU stand-in."""
    pytest.importorskip("torch")
    from hmr_trt.export.models.coseg.config import TINY
    from hmr_trt.export.models.coseg.export import export_temporal
    from hmr_trt.export.models.coseg.model import build_model
    from hmr_trt.profile import ShapeProfile

    d = tmp_path_factory.mktemp("tiny_fp16")
    fp32, fp16, emu = d / "temporal_fp32.onnx", d / "temporal_fp16.onnx", d / "temporal_fp16_emulation.onnx"
    export_temporal(build_model(TINY.with_(fde_mode="matrix")), fp32, ShapeProfile(1, 4, 8),
                    metadata={"model": "coseg"})
    info = fp16_onnx_from_fp32(fp32, fp16)
    emulation_onnx_from_fp16(fp16, emu)
    return fp32, fp16, emu, info


def test_fp16_graph_has_fp32_io_fp16_weights_and_fp32_blocked_nodes(tiny) -> None:
    fp32, fp16, _, info = tiny
    model = onnx.load(str(fp16))
    assert {v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.output)} == {F32}
    assert all(info["blocked"][rule.name] for rule in KEEP), info["blocked"]
    assert not unmatched_entries(onnx.load(str(fp32)), KEEP)
    types = tensor_types(model)
    blocked = {n for nodes in info["blocked"].values() for n in nodes}
    for node in model.graph.node:
        if node.name in blocked:
            assert F16 not in {types.get(t) for t in list(node.input) + list(node.output)}, node.name
        if node.op_type == "GRU":  # the bulk of the network runs in FP16 ...
            assert types[node.input[0]] == F16 and types[node.input[1]] == F16, node.name
    assert not fp16_problems(model, blocked)
    assert info["converted_nodes"] > 50 and info["method"] in ("onnxconverter-common", "modelopt-autocast")


def test_ort_cpu_runs_the_fp16_graph_and_its_stand_in(tiny) -> None:
    fp32, fp16, emu, _ = tiny
    x = np.random.default_rng(0).standard_normal((3, 16, 64)).astype(np.float32)
    ref = _run(fp32, {"features": x})
    for path in (fp16, emu):
        out = _run(path, {"features": x})
        for name, value in ref.items():
            assert out[name].dtype == np.float32
            np.testing.assert_allclose(out[name], value, atol=0.05, err_msg=f"{path.name} {name}")
    rounds = [n for n in onnx.load(str(emu)).graph.node if n.op_type == "Cast" and n.name.endswith("__round")]
    assert len(rounds) > 20


def _chain(tmp_path: Path) -> Path:
    """y = sigmoid(x * x * x) in FP16 with FP32 IO, as the converter writes it."""
    nodes = [helper.make_node("Cast", ["x"], ["x16"], name="in", to=F16),
             helper.make_node("Mul", ["x16", "x16"], ["a"], name="mul1"),
             helper.make_node("Mul", ["a", "x16"], ["b"], name="mul2"),
             helper.make_node("Sigmoid", ["b"], ["y16"], name="sig"),
             helper.make_node("Cast", ["y16"], ["y"], name="out", to=F32)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", F32, [4096])],
                              [helper.make_tensor_value_info("y", F32, [4096])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "chain.onnx"))
    return tmp_path / "chain.onnx"


def test_stand_in_rounds_every_op_like_fp16_storage(tmp_path: Path) -> None:
    """ORT CPU computes the chain in FP32 (no FP16 kernels, Cast pairs removed); the stand-in rounds per op."""
    src = _chain(tmp_path)
    emulation_onnx_from_fp16(src, tmp_path / "emu.onnx")
    x = np.random.default_rng(0).uniform(0, 3, 4096).astype(np.float32)
    h = x.astype(np.float16).astype(np.float32)
    a = (h * h).astype(np.float16).astype(np.float32)
    b = (a * h).astype(np.float16).astype(np.float32)
    per_op = (1 / (1 + np.exp(-b))).astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(_run(tmp_path / "emu.onnx", {"x": x})["y"], per_op, atol=1e-3)
    direct = _run(src, {"x": x})["y"]
    assert np.abs(direct - per_op).max() > 0  # ORT alone skips the intermediate roundings


def test_body_model_and_foreign_graphs_are_refused(tmp_path: Path) -> None:
    src = _chain(tmp_path)
    model = onnx.load(str(src))
    entry = model.metadata_props.add()
    entry.key, entry.value = "hmr_trt.graph", "body_model"
    onnx.save(model, str(tmp_path / "body.onnx"))
    with pytest.raises(ConfigError, match="body_model graph; precision passes apply to the model graph only"):
        fp16_onnx_from_fp32(tmp_path / "body.onnx", tmp_path / "out.onnx", KEEP)
    with pytest.raises(ExportError, match=r"keep rules match no node for \['attention-logits: MatMul'"):
        fp16_onnx_from_fp32(src, tmp_path / "out.onnx", KEEP)
    with pytest.raises(ConfigError, match="does not name its model"):  # no rules given, none findable
        fp16_onnx_from_fp32(src, tmp_path / "out.onnx")
    with pytest.raises(ConfigError, match="FP16 method must be one of"):
        fp16_onnx_from_fp32(src, tmp_path / "out.onnx", KEEP, method="bf16")
    assert not (tmp_path / "out.onnx").exists()


# --- the full model -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def full_fp16(full_export, tmp_path_factory) -> tuple[Path, Path, dict]:
    out, _ = full_export
    d = tmp_path_factory.mktemp("full_fp16")
    info = fp16_onnx_from_fp32(out / "coseg_temporal_fp32.onnx", d / "fp16.onnx")
    emulation_onnx_from_fp16(d / "fp16.onnx", d / "fp16_emulation.onnx")
    return d / "fp16.onnx", d / "fp16_emulation.onnx", info


def test_every_block_list_entry_matches_the_real_export(full_export, full_fp16) -> None:
    out, _ = full_export
    model = onnx.load(str(out / "coseg_temporal_fp32.onnx"))
    assert not unmatched_entries(model, KEEP)  # every op type of every entry matches a node
    matched = blocked_nodes(model, KEEP)
    assert len(matched["softmax"]) == 5 and len(matched["dis-logits"]) == 4  # DEM + 4 DIS
    assert "/ReduceL2" in matched["rot6d"] and "/Div_1" in matched["rot6d"]


def test_fp16_mm_parity_on_real_video_windows(full_export, full_fp16, eval_windows) -> None:
    out, _ = full_export
    _, emu, _ = full_fp16
    with OnnxRuntimeBackend(out / "body_model_fp32.onnx") as body:
        ref = meshes(body.infer, _run(out / "coseg_temporal_fp32.onnx", {"features": eval_windows}))
        got = meshes(body.infer, _run(emu, {"features": eval_windows}))
    drift = mesh_drift(*got, *ref)
    print("FP16 (CPU stand-in) vs FP32:", drift)
    assert drift["spread_mm"] > 50
    assert drift["vertices_mean_mm"] < FP16_REGRESSION_BOUND_MM, drift
    if drift["vertices_mean_mm"] > GOALS_MM["fp16"]:
        pytest.xfail(f"FP16 mean vertex drift {drift['vertices_mean_mm']:.3f} mm > goal {GOALS_MM['fp16']} mm: "
                     "this seeded model moves ~0.09 mm from rounding its input features to FP16 alone")


@pytest.fixture(scope="module")
def eval_windows(full_export, sample_video) -> np.ndarray:
    """Sample-video windows from frame 400 on (calibration uses frames 0-127), shared via the session temp."""
    from hmr_trt.calibration.windows import windows_from_videos

    out, _ = full_export
    cached = out.parent / "eval_windows_400.npy"
    if not cached.exists():
        np.save(cached, windows_from_videos(sample_video, out / "backbone_fp32.onnx", window=16, max_windows=6,
                                            start_frame=400))
    return np.load(cached)


# --- the FP32 floor: tensors between two kept nodes stay FP32 ------------------------------------------

def _fp32_chain(tmp_path: Path) -> Path:
    """y = (x*x + x)^2 - x in FP32: a = x*x, b = a + x, c = b*b, y = c - x (exact ops in numpy and ORT)."""
    nodes = [helper.make_node("Mul", ["x", "x"], ["a"], name="/kept/Mul"),
             helper.make_node("Add", ["a", "x"], ["b"], name="/kept/Add"),
             helper.make_node("Mul", ["b", "b"], ["c"], name="/half/Mul"),
             helper.make_node("Sub", ["c", "x"], ["y"], name="/kept/Sub")]
    graph = helper.make_graph(nodes, "chain32", [helper.make_tensor_value_info("x", F32, [4096])],
                              [helper.make_tensor_value_info("y", F32, [4096])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "chain32.onnx"))
    return tmp_path / "chain32.onnx"


def _round_trips(model: onnx.ModelProto) -> list[str]:
    """FP32 Casts reading an FP16 Cast of an FP32 tensor: a rounding no FP16 node asked for."""
    types = tensor_types(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    to = {n.name: next(a.i for a in n.attribute if a.name == "to") for n in model.graph.node if n.op_type == "Cast"}
    return [n.name for n in model.graph.node
            if n.op_type == "Cast" and to[n.name] == F32 and n.input[0] in producers
            and producers[n.input[0]].op_type == "Cast" and to[producers[n.input[0]].name] == F16
            and types.get(producers[n.input[0]].input[0]) == F32]


def test_only_tensors_an_fp16_node_reads_or_writes_are_rounded(tmp_path: Path) -> None:
    """Kept Mul -> kept Add -> FP16 Mul -> kept Sub: the stand-in rounds b (read by the FP16 Mul) and c (its
    output), nothing else; no Cast pair between the two kept nodes, as a strongly-typed TensorRT build would
    then store a = x*x in FP16 for nothing."""
    from hmr_trt.contract import KeepRule

    src = _fp32_chain(tmp_path)
    keep = (KeepRule("kept", ("Mul", "Add", "Sub"), r"^/kept/", "test"),)
    info = fp16_onnx_from_fp32(src, tmp_path / "fp16.onnx", keep)
    fp16 = onnx.load(str(tmp_path / "fp16.onnx"))
    assert not _round_trips(fp16) and info["round_trips_dropped"] >= 1
    types = tensor_types(fp16)
    half = next(n for n in fp16.graph.node if n.name == "/half/Mul")
    assert types[half.input[0]] == F16 and types[half.output[0]] == F16
    add = next(n for n in fp16.graph.node if n.name == "/kept/Add")
    assert types[add.input[0]] == F32  # a = x*x goes from one kept node to the next in FP32
    emulation_onnx_from_fp16(tmp_path / "fp16.onnx", tmp_path / "emu.onnx")
    x = np.random.default_rng(1).uniform(-2, 2, 4096).astype(np.float32)
    b = x * x + x
    b16 = b.astype(np.float16).astype(np.float32)
    c16 = (b16 * b16).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(_run(tmp_path / "emu.onnx", {"x": x})["y"], c16 - x)
    assert np.abs(c16 - x - (b * b - x)).max() > 0  # the rounding is visible: the test can fail


def test_every_node_kept_gives_exactly_the_fp32_outputs(tmp_path: Path, tiny) -> None:
    """The stand-in's floor: with every node kept FP32 the coseg graph's outputs equal the FP32 ones bit for bit
    (the converter alone casts each kept node's output to FP16 and back: 0.2 mm on GLoT before)."""
    from hmr_trt.contract import KeepRule

    fp32 = tiny[0]
    model = onnx.load(str(fp32))
    keep = (KeepRule("all", tuple(sorted({n.op_type for n in model.graph.node})), r".*", "the FP32 floor"),)
    fp16_onnx_from_fp32(fp32, tmp_path / "all.onnx", keep)
    assert not any(n.op_type == "Cast" and n.name not in {m.name for m in model.graph.node}
                   for n in onnx.load(str(tmp_path / "all.onnx")).graph.node)
    emulation_onnx_from_fp16(tmp_path / "all.onnx", tmp_path / "all_emu.onnx")
    x = np.random.default_rng(2).standard_normal((2, 16, 64)).astype(np.float32)
    ref = _run(fp32, {"features": x})
    for path in (tmp_path / "all.onnx", tmp_path / "all_emu.onnx"):
        out = _run(path, {"features": x})
        for name, value in ref.items():
            np.testing.assert_array_equal(out[name], value, err_msg=f"{path.name} {name}")


def test_the_coseg_recipe_rounds_no_tensor_between_kept_nodes(tiny) -> None:
    _, fp16, emu, info = tiny
    model = onnx.load(str(fp16))
    assert not _round_trips(model) and info["round_trips_dropped"] > 0
    types = tensor_types(model)
    rounded = {n.input[0].removesuffix("__fp32") for n in onnx.load(str(emu)).graph.node
               if n.op_type == "Cast" and n.name.endswith("__round")}
    assert rounded and all(types.get(t) == F16 for t in rounded)


def test_share_of_weights_and_flops_in_fp16(tmp_path: Path) -> None:
    """x (B, 4, 8) @ W1 (8, 16) -> @ W2 (16, 2) with the second MatMul kept FP32: FLOPs 2*4*16*8 = 1024 FP16 and
    2*4*2*16 = 256 FP32 per window; weights 128 FP16 and 32 FP32 elements."""
    from onnx import numpy_helper

    from hmr_trt.contract import KeepRule
    from hmr_trt.engines.precision import reduced_precision_share

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "W1"),
             numpy_helper.from_array(rng.standard_normal((16, 2)).astype(np.float32), "W2")]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="/a/MatMul"),
             helper.make_node("MatMul", ["h", "W2"], ["y"], name="/b/MatMul")]
    graph = helper.make_graph(nodes, "mm", [helper.make_tensor_value_info("x", F32, ["batch", 4, 8])],
                              [helper.make_tensor_value_info("y", F32, ["batch", 4, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "mm.onnx"))
    fp32 = reduced_precision_share(tmp_path / "mm.onnx", batch=3)
    assert fp32["flops"] == 3 * (1024 + 256) and fp32["weights"] == 160 and fp32["flops_fp16"] == 0
    fp16_onnx_from_fp32(tmp_path / "mm.onnx", tmp_path / "mm16.onnx", (KeepRule("b", ("MatMul",), "^/b/", "t"),))
    share = reduced_precision_share(tmp_path / "mm16.onnx")
    assert share["flops"] == 1024 + 256 and share["flops_fp16"] == pytest.approx(1024 / 1280)
    assert share["weights_fp16"] == pytest.approx(128 / 160) and share["weights_int8"] == 0


def test_glot_fp16_recipe_with_layer_norms_kept_validates(tmp_path: Path) -> None:
    """GLoT's exporter copies shared LayerNorm weights with Identity nodes; kept with their FP32 readers, the
    FP16 graph passes onnx.checker (they were typed FP16 around an FP32 initializer before)."""
    pytest.importorskip("torch")
    from hmr_trt.engines.preflight import validate_onnx
    from hmr_trt.export.onnx_export import onnx_from_module

    adapter = registry.adapter("glot")
    cfg = adapter.tiny_config()
    contract = adapter.contract_for(cfg)
    graph = contract.model_graph
    src = tmp_path / "glot.onnx"
    onnx_from_module(adapter.exportable(adapter.reference(cfg), graph.name), graph,
                     adapter.example_inputs(cfg, graph.name, 2), src, metadata={"model": "glot"})
    assert any(n.op_type == "Identity" for n in onnx.load(str(src)).graph.node)
    fp16_onnx_from_fp32(src, tmp_path / "glot16.onnx", contract.recipe_for("fp16").keep)
    validate_onnx(tmp_path / "glot16.onnx")
    emulation_onnx_from_fp16(tmp_path / "glot16.onnx", tmp_path / "emu.onnx")
    (x,) = adapter.example_inputs(cfg, graph.name, 2, seed=3)
    ref = _run(src, {"features": x.numpy()})
    out = _run(tmp_path / "emu.onnx", {"features": x.numpy()})
    for name, value in ref.items():
        np.testing.assert_allclose(out[name], value, atol=0.05, err_msg=name)


def test_share_needs_no_torch(tmp_path: Path) -> None:
    """engines/ never imports torch: the FLOP count's shape inference (ONNX Runtime's symbolic one, whose
    package __init__ would import torch) runs in a process where torch never loads."""
    import subprocess
    import sys

    src = _fp32_chain(tmp_path)
    code = ("import sys; from hmr_trt.engines.precision import reduced_precision_share as share; "
            f"share({str(src)!r}); print('hmr_trt_ort_symbolic_shape_infer' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False"]  # the symbolic inference ran, torch did not load
