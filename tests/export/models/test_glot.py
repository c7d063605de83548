"""GLoT (``--model glot``): official-code equivalence, released-checkpoint loading, export, contract."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hmr_trt import registry
from hmr_trt.contract import ModelContract
from hmr_trt.errors import CheckpointError, ConfigError
from hmr_trt.export.models.glot.adapter import ADAPTER
from hmr_trt.export.models.glot.checkpoint import body_model_placeholders
from hmr_trt.export.models.glot.config import GlotConfig, tiny_config
from hmr_trt.export.models.glot.model import KTD, ancestors

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "glot_official.npz"


def run(model: torch.nn.Module, features: torch.Tensor) -> tuple:
    with torch.no_grad():
        return tuple(t.numpy() for t in model(features))


def released_checkpoint(path: Path, state: dict, with_body_model: bool = True, legacy: bool = False) -> Path:
    """The trainer's save dict, as the released ``table1_3dpw_weights.pth.tar`` is laid out
    (``legacy``: the pre-1.6 non-zip serialisation)."""
    gen = dict(state)
    if with_body_model:
        gen.update(body_model_placeholders())
    torch.save({"epoch": 30, "gen_state_dict": gen, "performance": np.float64(50.6),
                "gen_optimizer": {"state": {}, "param_groups": []}}, path,
               _use_new_zipfile_serialization=not legacy)
    return path


# --- official-code equivalence ------------------------------------------------------------------

FIXTURE_GAIN = 0.4  # the seeded weights' init_gain when the fixture was made (tools/glot_official_parity.py)


def test_seeded_full_model_equals_the_official_code_outputs(tmp_path):
    """tools/glot_official_parity.py ran the official GLoT on a released-format checkpoint of this seeded
    model; the fixture holds its outputs. Rebuild that checkpoint, load it into a model of another seed
    through the released-checkpoint reader, and compare: equal at float32 round-off."""
    fx = np.load(FIXTURE)
    cfg = GlotConfig(seed=int(fx["seed"]), init_gain=FIXTURE_GAIN, trained_like=False)  # the plain seeded draw
    path = released_checkpoint(tmp_path / "table1_3dpw_weights.pth.tar", ADAPTER.reference(cfg).state_dict())
    model = ADAPTER.reference(GlotConfig(seed=int(fx["seed"]) + 1), checkpoint=path)
    (features,) = ADAPTER.example_inputs(cfg, "temporal", int(fx["windows"]), seed=int(fx["input_seed"]))
    rotmat, betas, cam = run(model, features)
    np.testing.assert_allclose(rotmat[:, 0], fx["pose_rotmat"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(betas[:, 0], fx["betas"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(cam[:, 0], fx["cam"], atol=1e-5, rtol=0)


def test_full_config_is_the_released_one():
    cfg = ADAPTER.default_config()
    assert (cfg.seqlen, cfg.d_model, cfg.n_layers, cfg.num_head) == (16, 512, 2, 8)
    assert (cfg.short_d_model, cfg.short_n_layers, cfg.stride_short) == (256, 3, 4)


def test_ktd_feeds_joint_j_the_global_pose_elements_j_to_j_plus_5():
    """The released weights were trained with a stride-1 slice of the init pose."""
    ktd = KTD(hidden=4, num_betas=10).eval()
    seen = {}
    for j in (0, 5, 23):
        ktd.joint_regs[j].register_forward_hook(lambda m, inp, out, j=j: seen.__setitem__(j, inp[0]))
    global_pose = torch.arange(144, dtype=torch.float32).reshape(1, 1, 144)
    ktd(torch.zeros(1, 1, 4), global_pose)
    for j in (0, 5, 23):
        assert seen[j][0, 0, -6:].tolist() == list(range(j, j + 6))


def test_ktd_ancestors_follow_the_smpl_tree():
    a = ancestors()
    assert a[0] == [] and a[4] == [0, 1] and a[15] == [0, 3, 6, 9, 12]
    assert a[23] == [0, 3, 6, 9, 14, 17, 19, 21]


# --- released checkpoint ------------------------------------------------------------------------

@pytest.mark.parametrize("legacy", [False, True])
def test_released_checkpoint_loads_strictly_and_sets_every_weight(tmp_path, legacy):
    cfg = tiny_config(seed=0)
    donor = ADAPTER.reference(tiny_config(seed=1))
    path = released_checkpoint(tmp_path / "table1_3dpw_weights.pth.tar", donor.state_dict(), legacy=legacy)
    loaded = ADAPTER.reference(cfg, checkpoint=path)
    (x,) = ADAPTER.example_inputs(cfg, "temporal", 3)
    for a, b in zip(run(loaded, x), run(donor, x)):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(run(ADAPTER.reference(cfg), x)[2], run(donor, x)[2])


def test_training_only_parameters_are_in_the_state_dict():
    keys = ADAPTER.reference(tiny_config()).state_dict()
    for key in ("global_modeling.trans.mask_token_mlp.4.weight", "global_modeling.regressor.fc2.weight",
                "regressor.local_reg.decshape.weight", "regressor.local_reg.deccam.bias",
                "global_modeling.regressor.init_pose", "local_trans_de.kv_l.weight"):
        assert key in keys


def test_full_parameter_count():
    n = sum(p.numel() for p in ADAPTER.reference(GlotConfig()).parameters())
    assert 16_500_000 < n < 17_000_000, n


@pytest.mark.parametrize("case, message", [
    ("other_model", r"glot: checkpoint .* does not match the glot model; missing keys \(\d+\).*unexpected keys"),
    ("other_config", r"glot: .*shape mismatches \(\d+\): .*vs expected"),
    ("no_body_model", r"glot: .*not a released GLoT state dict; missing SMPL buffer keys \(24\)"),
    ("not_state_dict", r"glot: .* holds no state dict of tensors under gen_state_dict"),
    ("truncated", r"glot: cannot read checkpoint .* \(5000 bytes\): it is truncated or corrupt"),
    ("pickled_code", r"glot: cannot read checkpoint .*: it (holds Python objects besides tensors|is not a PyTorch "
                     r"checkpoint torch.load can read \(UnpicklingError)"),
])
def test_bad_checkpoints_fail_with_one_line(tmp_path, case, message):
    cfg = tiny_config()
    path = tmp_path / "ckpt.pth.tar"
    state = ADAPTER.reference(cfg).state_dict()
    if case == "other_model":
        released_checkpoint(path, {"stage1.dem.proj.weight": torch.zeros(4, 4), "regressor.fc1.weight": torch.zeros(2)})
    elif case == "other_config":
        released_checkpoint(path, ADAPTER.reference(GlotConfig(**{**cfg.to_dict(), "d_model": 48})).state_dict())
    elif case == "no_body_model":
        released_checkpoint(path, state, with_body_model=False)
    elif case == "not_state_dict":
        torch.save({"epoch": 3, "gen_state_dict": [1, 2, 3]}, path)
    elif case == "truncated":
        released_checkpoint(path, state)
        path.write_bytes(path.read_bytes()[:5000])
    else:
        path.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError, match=message) as info:
        ADAPTER.reference(cfg, checkpoint=path)
    assert "\n" not in str(info.value)


class Exploit:
    def __reduce__(self):
        return (print, ("pickled code ran",))


# --- seeded defaults move ---------------------------------------------------------------------------

def test_seeded_default_vertices_move_across_windows():
    from hmr_trt.export.body_model import ExportableSMPL
    from hmr_trt.export.synthetic_smpl import make_synthetic_smpl
    from hmr_trt.metrics import motion_spread_mm

    cfg = ADAPTER.default_config()
    model = ADAPTER.reference(cfg)
    (x,) = ADAPTER.example_inputs(cfg, "temporal", 8, seed=3)
    rotmat, betas, _ = run(model, x.abs())  # SPIN features are non-negative (post-ReLU average pool)
    body = ExportableSMPL(make_synthetic_smpl()).eval()
    with torch.no_grad():
        verts, _ = body(torch.from_numpy(rotmat[:, 0]), torch.from_numpy(betas[:, 0]))
    spread = motion_spread_mm(verts.numpy()[:, None])
    assert spread >= 50.0, spread
    tiny = tiny_config()
    (xt,) = ADAPTER.example_inputs(tiny, "temporal", 2)
    np.testing.assert_array_equal(run(ADAPTER.reference(tiny), xt)[0], run(ADAPTER.reference(tiny), xt)[0])


# --- config and contract ------------------------------------------------------------------------

def test_config_round_trips_and_validates():
    cfg = tiny_config(seed=4)
    assert GlotConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="not divisible by 3 heads"):
        GlotConfig(num_head=3)
    with pytest.raises(ConfigError, match="local window .* must fit in seqlen 8"):
        GlotConfig(seqlen=8, stride_short=4)
    with pytest.raises(ConfigError, match="unknown fields"):
        GlotConfig.from_dict({"d_modle": 512})


def test_contract_is_registered_and_round_trips():
    c = registry.contract("glot")
    assert c is ADAPTER.contract and "glot" in registry.names()
    assert (c.family, c.window, c.feature_dim, c.emit, c.emit_positions(), c.causal) == \
        ("window", 16, 2048, "middle", (8,), False)
    assert (c.bbox_scale, c.crop_size, c.checkpoint) == (1.2, 224, "table1_3dpw_weights.pth.tar")
    g = c.model_graph
    assert [t.shape for t in g.outputs] == [("batch", 1, 24, 3, 3), ("batch", 1, 10), ("batch", 1, 3)]
    assert ModelContract.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.recipe_for("fp16").precision == "fp16" and c.recipe_for("int8").int8_exclude


def test_contract_imports_without_torch():
    code = ("import sys; from hmr_trt import registry; c = registry.contract('glot'); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(c.name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "glot"


# --- export ------------------------------------------------------------------------------------

def export_graph(module: torch.nn.Module, example: tuple, path: Path, contract: ModelContract) -> None:
    """The one place the tests call the project's exporter (its GraphSpec type may change)."""
    from hmr_trt.export import onnx_export

    g = contract.model_graph
    onnx_export.onnx_from_module(module, g,
                                 example, path)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    cfg = tiny_config()
    model = ADAPTER.reference(cfg)
    path = tmp_path_factory.mktemp("glot") / "temporal.onnx"
    contract = ADAPTER.contract_for(cfg)
    export_graph(ADAPTER.exportable(model, "temporal"), ADAPTER.example_inputs(cfg, "temporal", 2), path, contract)
    return cfg, model, path, contract


def test_export_matches_torch_at_batch_1_2_7_and_is_batch_invariant(tiny_export):
    import onnxruntime as ort

    cfg, model, path, _ = tiny_export
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (x7,) = ADAPTER.example_inputs(cfg, "temporal", 7, seed=5)
    alone = {}
    for batch in (1, 2, 7):
        x = x7[:batch]
        got = sess.run(["pose_rotmat", "betas", "cam"], {"features": x.numpy()})
        for g, want in zip(got, run(model, x)):
            np.testing.assert_allclose(g, want, atol=2e-5, rtol=1e-5)
        alone[batch] = got
    for a, b in zip(alone[1], alone[7]):
        np.testing.assert_allclose(a[0], b[0], atol=1e-5, rtol=0)


def test_export_declares_static_shapes_and_passes_the_trt_preflight(tiny_export):
    import onnx

    from hmr_trt.engines.preflight import validate_onnx

    cfg, _, path, contract = tiny_export
    validate_onnx(path)
    model = onnx.load(str(path))
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.input) + list(model.graph.output)}
    for t in contract.model_graph.inputs + contract.model_graph.outputs:
        assert shapes[t.name] == list(t.shape), (t.name, shapes[t.name])


def test_every_keep_rule_matches_nodes_of_the_export(tiny_export):
    import onnx

    _, _, path, contract = tiny_export
    nodes = onnx.load(str(path)).graph.node
    rules = {r.name: r for recipe in contract.recipes for r in recipe.keep + recipe.int8_exclude}
    unmatched = [f"{r.name}: {op}" for r in rules.values() for op in r.ops
                 if not any(n.op_type == op and re.search(r.scope, n.name) for n in nodes)]
    assert not unmatched
    softmax = [n.name for n in nodes if n.op_type == "Softmax"]
    assert softmax and all(re.search(rules["softmax"].scope, n) for n in softmax)
    assert not [n.name for n in nodes if n.op_type == "LayerNormalization"]


@pytest.mark.slow
def test_full_config_export_matches_torch_at_batch_1_2_7(tmp_path):
    import onnxruntime as ort

    cfg = ADAPTER.default_config()
    model = ADAPTER.reference(cfg)
    path = tmp_path / "temporal.onnx"
    export_graph(ADAPTER.exportable(model, "temporal"), ADAPTER.example_inputs(cfg, "temporal", 2), path,
                 ADAPTER.contract_for(cfg))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (x7,) = ADAPTER.example_inputs(cfg, "temporal", 7, seed=5)
    for batch in (1, 2, 7):
        got = sess.run(["pose_rotmat", "betas", "cam"], {"features": x7[:batch].numpy()})
        for g, want in zip(got, run(model, x7[:batch])):
            np.testing.assert_allclose(g, want, atol=2e-5, rtol=1e-5)
