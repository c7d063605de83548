"""``--format vibe --vibe-data``: the demos' 49 joints (runtime/vibe_format.py: ``peer_joints``) against smplx's SMPL
layer (the real library, on an SMPL-shaped body model) and VIBE's joint map (tests/fixtures/vibe_joint_map.json,
written by tools/vibe_joint_map.py from the official lib/models/smpl.py; with the official repository at
$HMR_TRT_OFFICIAL_VIBE, against that file and VIBE's own SMPL class compiled from it); the regressor file's
checks; the demos' keypoint projection; trt-run writing 49 joints with the option and 24 without."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib.util
import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hmr_trt.errors import ConfigError
from hmr_trt.runtime.vibe_format import (
    CROP_SIZE,
    EXTRA_REGRESSOR_FILE,
    PEER_JOINTS,
    SMPLX_SELECTED_VERTICES,
    crop_keypoints,
    load_extra_regressor,
    peer_joints,
    plan_peer_joints,
)

torch = pytest.importorskip("torch")
smplx = pytest.importorskip("smplx")

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "vibe_joint_map.json"
SMPL_V = 6890


def smpl_shaped_model(seed: int = 0) -> dict:
    """SMPL's array layout at SMPL's 6890 vertices, without the synthetic marker: hmr-trt's synthetic body model
    (the tests' body model) with its vertices repeated, jittered, up to 6890 (no real SMPL file is available)."""
    from hmr_trt.export.smpl_io import SYNTHETIC_MARKER_KEY
    from hmr_trt.export.synthetic_smpl import make_synthetic_smpl

    synth = make_synthetic_smpl(seed)
    n = len(synth["v_template"])
    rng = np.random.default_rng(seed)
    idx = np.concatenate([np.arange(n), rng.integers(0, n, SMPL_V - n)])
    out = {k: v for k, v in synth.items() if k != SYNTHETIC_MARKER_KEY}
    verts = synth["v_template"][idx].astype(np.float64)
    verts[n:] += rng.normal(0, 0.002, (SMPL_V - n, 3))  # the repeated vertices a little apart
    out["v_template"] = verts.astype(np.float32)
    for key in ("weights", "shapedirs", "posedirs"):
        out[key] = np.ascontiguousarray(synth[key][idx])
    out["J_regressor"] = np.concatenate([synth["J_regressor"], np.zeros((24, SMPL_V - n), np.float32)], 1)
    return out


def _rotations(n: int, seed: int) -> np.ndarray:
    """(n, 24, 3, 3) rotations within about 0.6 rad of the rest pose (a person, not a knot)."""
    from smplx.lbs import batch_rodrigues

    vec = torch.from_numpy(np.random.default_rng(seed).normal(0, 0.35, (n * 24, 3)).astype(np.float32))
    return batch_rodrigues(vec).reshape(n, 24, 3, 3).numpy()


@pytest.fixture(scope="module")
def body():
    """The body model twice: hmr-trt's exported form (what the runtime's body_model graph computes) and
    smplx's SMPL layer (with smplx's own SMPL vertex table: the model has 6890 vertices)."""
    from hmr_trt.export.body_model import ExportableSMPL, SMPLReference

    data = smpl_shaped_model()
    return data, ExportableSMPL(data).eval(), SMPLReference(data).eval()


def _forward(body, n: int = 4, seed: int = 0):
    data, exportable, reference = body
    pose = torch.from_numpy(_rotations(n, seed))
    betas = torch.from_numpy(np.random.default_rng(seed + 1).normal(0, 1, (n, 10)).astype(np.float32))
    with torch.no_grad():
        verts, joints = exportable(pose, betas)
        ref = reference.smpl(betas=betas, global_orient=pose[:, :1], body_pose=pose[:, 1:], pose2rot=False)
    return pose, betas, verts.numpy(), joints.numpy(), ref


def _official_map() -> dict:
    return json.loads(FIXTURE.read_text())


def _official_root() -> Path:
    root = os.environ.get("HMR_TRT_OFFICIAL_VIBE")
    if not root or not (Path(root) / "lib" / "models" / "smpl.py").is_file():
        pytest.skip("set HMR_TRT_OFFICIAL_VIBE to a checkout of mkocabas/VIBE to read its lib/models/smpl.py")
    return Path(root)


# --- the table, against the official map and smplx -------------------------------------------------------

def test_joint_table_is_vibes_joint_map() -> None:
    ref = _official_map()
    assert [(name, ref["joint_map"][name]) for name in ref["joint_names"]] == list(PEER_JOINTS)
    assert len(PEER_JOINTS) == 49


def test_fixture_is_the_official_file() -> None:
    spec = importlib.util.spec_from_file_location("vibe_joint_map", ROOT / "tools" / "vibe_joint_map.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    official = tool.official_joint_map(_official_root())
    ref = _official_map()
    assert official["joint_names"] == ref["joint_names"] and official["joint_map"] == ref["joint_map"]


def test_selected_vertices_are_smplx_smpl_table_in_its_order(body) -> None:
    from smplx.vertex_ids import vertex_ids

    assert all(vertex_ids["smplh"][name] == vid for name, vid in SMPLX_SELECTED_VERTICES)
    # the order: smplx's SMPL layer appends exactly these vertices, in this order, after its 24 joints
    _, _, _, _, ref = _forward(body, n=2)
    joints, verts = ref.joints.numpy(), ref.vertices.numpy()
    assert joints.shape == (2, 24 + len(SMPLX_SELECTED_VERTICES), 3)
    np.testing.assert_array_equal(joints[:, 24:], verts[:, [v for _, v in SMPLX_SELECTED_VERTICES]])


def test_49_joints_are_vibes_construction_on_smplx(body) -> None:
    """peer_joints from the exported body model's joints and vertices == VIBE's construction done independently
    on smplx's output (smplx's 45 joints, then J_regressor_extra @ vertices, re-indexed by the official map)."""
    extra = np.random.default_rng(3).random((9, SMPL_V)).astype(np.float32)
    extra /= extra.sum(1, keepdims=True)
    _, _, verts, joints, ref = _forward(body)
    ours = peer_joints(joints, verts, extra)
    official = _official_map()
    order = [official["joint_map"][name] for name in official["joint_names"]]
    regressed = torch.einsum("jv,nvc->njc", torch.from_numpy(extra), ref.vertices)
    theirs = torch.cat([ref.joints, regressed], dim=1)[:, order].numpy()
    assert ours.shape == theirs.shape == (4, 49, 3) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=2e-5)  # metres: float32 LBS in two implementations
    assert np.abs(theirs).max() > 0.3  # the joints are spread over a body, not all at the origin


def test_49_joints_are_vibes_own_smpl_class(body, tmp_path) -> None:
    """VIBE's SMPL class, compiled from the official lib/models/smpl.py (its config import replaced by a
    data folder holding the regressor), on the same body model, pose and shape."""
    root = _official_root()
    extra = np.random.default_rng(4).random((9, SMPL_V)).astype(np.float32)
    np.save(tmp_path / EXTRA_REGRESSOR_FILE, extra / extra.sum(1, keepdims=True))  # rows of weights, as VIBE's
    tree = ast.parse((root / "lib" / "models" / "smpl.py").read_text())
    tree.body = [n for n in tree.body if not (isinstance(n, ast.ImportFrom) and (n.module or "").startswith("lib."))]
    scope = {"VIBE_DATA_DIR": str(tmp_path), "__name__": "vibe_smpl"}
    exec(compile(tree, str(root / "lib" / "models" / "smpl.py"), "exec"), scope)
    from smplx.utils import Struct

    data, _, _ = body
    with contextlib.redirect_stdout(io.StringIO()):
        vibe_smpl = scope["SMPL"](model_path="", data_struct=Struct(**data), create_transl=False, create_betas=False,
                                  create_global_orient=False, create_body_pose=False)
    pose, betas, verts, joints, _ = _forward(body, n=3, seed=7)
    with torch.no_grad():
        out = vibe_smpl(betas=betas, body_pose=pose[:, 1:], global_orient=pose[:, :1], pose2rot=False)
    np.testing.assert_allclose(peer_joints(joints, verts, load_extra_regressor(tmp_path, SMPL_V)),
                               out.joints.numpy(), atol=2e-5)


def test_peer_joints_refuses_other_meshes() -> None:
    with pytest.raises(Exception, match="6890"):
        peer_joints(np.zeros((2, 24, 3)), np.zeros((2, 3624, 3)), np.zeros((9, 3624)))


# --- the regressor file ------------------------------------------------------------------------------

def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text
    return text


def test_regressor_file_checks(tmp_path) -> None:
    good = np.random.default_rng(0).random((9, SMPL_V))
    np.save(tmp_path / EXTRA_REGRESSOR_FILE, good)
    np.testing.assert_allclose(load_extra_regressor(tmp_path, SMPL_V), good, rtol=1e-6)  # the folder
    np.testing.assert_allclose(load_extra_regressor(tmp_path / EXTRA_REGRESSOR_FILE, SMPL_V), good, rtol=1e-6)
    cases = {
        "wrong_v.npy": (np.zeros((9, 3624)), r"\(9, 3624\).*\(9, 6890\).*vertices differ"),
        "wrong_rows.npy": (np.zeros((17, SMPL_V)), r"\(17, 6890\).*rows \(extra joints\) differ"),
    }
    for name, (arr, pattern) in cases.items():
        np.save(tmp_path / name, arr)
        with pytest.raises(ConfigError, match=pattern) as err:
            load_extra_regressor(tmp_path / name, SMPL_V)
        assert name in _one_line(err.value)
    (tmp_path / "pickled.npy").write_bytes(pickle.dumps({"J": good}))
    np.save(tmp_path / "objects.npy", np.array([good, None], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "archive.npz", J=good)
    np.save(tmp_path / "nan.npy", np.full((9, SMPL_V), np.nan))
    for name, pattern in (("pickled.npy", "not a plain .npy"), ("objects.npy", "not a plain .npy"),
                          ("archive.npz", "archive"), ("nan.npy", "non-finite")):
        with pytest.raises(ConfigError, match=pattern) as err:
            load_extra_regressor(tmp_path / name, SMPL_V)
        assert name in _one_line(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=f"holds no {EXTRA_REGRESSOR_FILE}") as err:
        load_extra_regressor(empty, SMPL_V)
    _one_line(err.value)


def test_plan_says_what_is_written(tmp_path) -> None:
    np.save(tmp_path / EXTRA_REGRESSOR_FILE, np.zeros((9, SMPL_V)))
    plan = plan_peer_joints(SMPL_V, False, tmp_path)
    assert plan.count == 49 and plan.extra.shape == (9, SMPL_V) and "49" in plan.note
    without = plan_peer_joints(SMPL_V, False, None)
    assert without.count == 24 and without.extra is None and "--vibe-data" in without.note
    synthetic = plan_peer_joints(3624, True, None)
    assert synthetic.count == 24 and "synthetic" in synthetic.note and "24" in synthetic.note
    with pytest.raises(ConfigError, match="synthetic") as err:
        plan_peer_joints(3624, True, tmp_path)
    _one_line(err.value)
    np.save(tmp_path / "other.npy", np.zeros((9, 5000)))
    with pytest.raises(ConfigError, match="not SMPL's 6890"):
        plan_peer_joints(5000, False, tmp_path / "other.npy")


# --- the demos' keypoint projection ------------------------------------------------------------------

def test_crop_keypoints_is_weak_perspective_at_zero_depth_and_perspective_off_it() -> None:
    rng = np.random.default_rng(1)
    cam = np.stack([rng.uniform(0.5, 1.5, 5), rng.normal(0, 0.2, 5), rng.normal(0, 0.2, 5)], 1)
    flat = np.concatenate([rng.normal(0, 0.5, (5, 7, 2)), np.zeros((5, 7, 1))], 2)
    np.testing.assert_allclose(crop_keypoints(flat, cam), cam[:, None, :1] * (flat[..., :2] + cam[:, None, 1:]),
                               rtol=1e-6, atol=1e-9)
    near = flat + np.array([0, 0, -0.5])  # nearer the camera: further from the crop centre
    assert (np.abs(crop_keypoints(near, cam)) > np.abs(crop_keypoints(flat, cam)) - 1e-12).all()


def test_crop_keypoints_is_the_official_projection() -> None:
    root = _official_root()
    tree = ast.parse((root / "lib" / "models" / "spin.py").read_text())
    nodes = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("projection",
                                                                                  "perspective_projection")]
    assert len(nodes) == 2
    scope = {"torch": torch}
    exec(compile(ast.Module(body=nodes, type_ignores=[]), "spin.py", "exec"), scope)
    rng = np.random.default_rng(2)
    joints = rng.normal(0, 0.5, (6, 49, 3)).astype(np.float32)
    cam = np.stack([rng.uniform(0.5, 1.5, 6), rng.normal(0, 0.2, 6), rng.normal(0, 0.2, 6)], 1).astype(np.float32)
    theirs = scope["projection"](torch.from_numpy(joints), torch.from_numpy(cam)).numpy()
    np.testing.assert_allclose(crop_keypoints(joints, cam), theirs, atol=2e-5)
    assert CROP_SIZE == 224


# --- trt-run ---------------------------------------------------------------------------------------

FRAMES = 24


@pytest.fixture(scope="module")
def smpl_export(tmp_path_factory):
    """VIBE's export (the runtime tests' small GRU on the real 2048-wide features) with the SMPL-shaped body model
    given as --smpl-model (not marked synthetic)."""
    pytest.importorskip("onnxruntime")
    from hmr_trt import registry
    from hmr_trt.export.pipeline import ExportOptions, run_export
    from hmr_trt.profile import ShapeProfile

    base = tmp_path_factory.mktemp("vibe_smpl")
    model = base / "smpl_shaped.npz"
    np.savez(model, **smpl_shaped_model())
    cfg = dataclasses.replace(registry.adapter("vibe").tiny_config(), feature_dim=2048)
    out = base / "export"
    run_export(ExportOptions(out=out, model="vibe", config=cfg, profile=ShapeProfile(1, 4, 8), parity_windows=2,
                             build_engines=False, smpl_model=model))
    return out


@pytest.fixture(scope="module")
def regressor_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vibe_data")
    extra = np.random.default_rng(5).random((9, SMPL_V)).astype(np.float32)
    np.save(folder / EXTRA_REGRESSOR_FILE, extra / extra.sum(1, keepdims=True))
    return folder


def _run(export, video, out, *extra):
    from hmr_trt.runtime.cli import app

    return CliRunner().invoke(app, ["--video", str(video), "--export", str(export), "--out", str(out), "--emit", "all",
                                    "--max-frames", str(FRAMES), "--min-track-frames", "4", "--format", "vibe",
                                    "--quiet", *map(str, extra)])


def test_trt_run_writes_the_49_joints_with_vibe_data_and_24_without(smpl_export, regressor_dir, sample_video,
                                                                     tmp_path) -> None:
    joblib = pytest.importorskip("joblib")
    with_49 = _run(smpl_export, sample_video, tmp_path / "a", "--vibe-data", regressor_dir)
    assert with_49.exit_code == 0, with_49.output
    assert "49 joints" in with_49.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["vibe_joints"]["joints"] == 49 and summary["tracks"] >= 1
    results = joblib.load(tmp_path / "a" / "vibe_output.pkl")
    extra = np.load(regressor_dir / EXTRA_REGRESSOR_FILE)
    for row in summary["track_files"]:
        track = np.load(tmp_path / "a" / row["file"])
        entry = results[int(row["id"])]
        n = len(track["frame_indices"])
        assert entry["joints3d"].shape == (n, 49, 3) and entry["joints2d_img_coord"].shape == (n, 49, 2)
        np.testing.assert_allclose(entry["joints3d"], peer_joints(track["joints3d"], track["vertices"], extra))
        # 'OP MidHip' is SMPL's pelvis, 'Right Hip' the first regressed joint
        np.testing.assert_allclose(entry["joints3d"][:, 8], track["joints3d"][:, 0], atol=1e-6)
        np.testing.assert_allclose(entry["joints3d"][:, 27], np.einsum("v,nvc->nc", extra[0], track["vertices"]),
                                   atol=1e-5)

    plain = _run(smpl_export, sample_video, tmp_path / "b")
    assert plain.exit_code == 0, plain.output
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["vibe_joints"]["joints"] == 24 and "--vibe-data" in summary["vibe_joints"]["note"]
    assert "24 joints" in plain.output
    entry = next(iter(joblib.load(tmp_path / "b" / "vibe_output.pkl").values()))
    assert entry["joints3d"].shape[1:] == (24, 3) and entry["joints2d_img_coord"].shape[1:] == (24, 2)


def test_trt_run_refuses_a_regressor_that_does_not_fit(smpl_export, vibe_video_export, regressor_dir, sample_video,
                                                       tmp_path) -> None:
    """One line, exit 1, nothing written: rows or vertices that differ, a pickle, the synthetic body model."""
    np.save(tmp_path / "rows.npy", np.zeros((17, SMPL_V)))
    np.save(tmp_path / "verts.npy", np.zeros((9, 3624)))
    (tmp_path / "pickle.npy").write_bytes(pickle.dumps(np.zeros((9, SMPL_V))))
    cases = [(smpl_export, tmp_path / "rows.npy", "rows.npy"), (smpl_export, tmp_path / "verts.npy", "verts.npy"),
             (smpl_export, tmp_path / "pickle.npy", "pickle.npy"),
             (vibe_video_export, regressor_dir, "synthetic")]
    for i, (export, given, said) in enumerate(cases):
        out = tmp_path / f"out{i}"
        result = _run(export, sample_video, out, "--vibe-data", given)
        assert result.exit_code == 1, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: --vibe-data") and said in lines[0], result.output
        assert not out.exists()


def test_vibe_data_without_the_vibe_format_is_refused(smpl_export, regressor_dir, sample_video, tmp_path) -> None:
    from hmr_trt.runtime.cli import app

    result = CliRunner().invoke(app, ["--video", str(sample_video), "--export", str(smpl_export), "--out",
                                      str(tmp_path / "o"), "--vibe-data", str(regressor_dir), "--quiet"])
    assert result.exit_code == 1 and "add --format vibe" in result.output
    assert not (tmp_path / "o").exists()
