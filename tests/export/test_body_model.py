"""Tests for the synthetic body model and SMPL LBS (ExportableSMPL vs the smplx reference, ONNX)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
import torch

from hmr_trt.errors import ConfigError, InputSpecError
from hmr_trt.export.body_model import ExportableSMPL, SMPLReference, body_model_from_file, landmark_vertex_ids
from hmr_trt.export.smpl_io import SMPL_PARENTS, SYNTHETIC_MARKER_KEY, is_synthetic, kinematic_parents
from hmr_trt.export.synthetic_smpl import make_synthetic_smpl, write_synthetic_smpl

TOL_M = 1e-5  # metres, max abs


@pytest.fixture(scope="module")
def synth() -> Dict[str, np.ndarray]:
    return make_synthetic_smpl(seed=0)


@pytest.fixture(scope="module")
def models(synth) -> Tuple[ExportableSMPL, SMPLReference]:
    return ExportableSMPL(synth).eval(), SMPLReference(synth).eval()


def random_rotations(n: int, seed: int) -> torch.Tensor:
    """(n, 24, 3, 3) uniformly random rotation matrices (QR of Gaussian matrices, det +1)."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, 24, 3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    q[..., :, 0] *= torch.det(q).unsqueeze(-1)
    return q.float()


def random_betas(n: int, seed: int) -> torch.Tensor:
    return 2.0 * torch.randn(n, 10, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------
# The synthetic model


def test_synthetic_model_is_deterministic_per_seed(synth) -> None:
    again = make_synthetic_smpl(seed=0)
    assert set(again) == set(synth)
    for k in synth:
        assert np.array_equal(again[k], synth[k]), k
    other = make_synthetic_smpl(seed=1)
    assert not np.array_equal(other["v_template"], synth["v_template"])
    assert not np.array_equal(other["posedirs"], synth["posedirs"])


def test_synthetic_model_layout_and_sanity(synth) -> None:
    v = synth["v_template"]
    num_v = v.shape[0]
    assert 1500 <= num_v <= 4000
    assert synth["f"].shape[1] == 3 and synth["f"].max() < num_v and synth["f"].min() >= 0
    assert synth["J_regressor"].shape == (24, num_v)
    assert synth["weights"].shape == (num_v, 24)
    assert synth["shapedirs"].shape == (num_v, 3, 10)
    assert synth["posedirs"].shape == (num_v, 3, 207)
    assert synth["kintree_table"].shape == (2, 24) and synth["kintree_table"][0, 0] == 4294967295
    assert kinematic_parents(synth) == list(SMPL_PARENTS)
    assert is_synthetic(synth) and "NOT SMPL" in str(synth[SYNTHETIC_MARKER_KEY])
    # a human-sized body in metres, y up, pelvis near the origin
    height = float(v[:, 1].max() - v[:, 1].min())
    assert 1.5 <= height <= 1.9
    joints = synth["J_regressor"] @ v  # (24, 3)
    assert np.linalg.norm(joints[0]) < 0.05
    assert joints[15, 1] > joints[12, 1] > joints[0, 1] > joints[4, 1] > joints[7, 1]  # head > neck > ... ankle
    assert (joints[[1, 4, 7, 16, 18, 20], 0] > 0).all() and (joints[[2, 5, 8, 17, 19, 21], 0] < 0).all()
    # skinning weights: convex, a few bones per vertex, every joint used
    w = synth["weights"]
    assert (w >= 0).all() and np.allclose(w.sum(axis=1), 1.0, atol=1e-5)
    assert (w > 0).sum(axis=1).max() <= 4
    assert (w.max(axis=0) > 0.4).all()  # every joint drives some vertices
    # J_regressor rows are convex combinations of nearby vertices
    jr = synth["J_regressor"]
    assert (jr >= 0).all() and np.allclose(jr.sum(axis=1), 1.0, atol=1e-5)
    for j in range(24):
        near = v[jr[j] > 0]
        assert np.linalg.norm(near - joints[j], axis=1).max() < 0.2
    # shape directions: a few cm per unit beta; pose correctives: mm scale
    per_beta = np.linalg.norm(synth["shapedirs"], axis=1).max(axis=0)  # (10,)
    assert (per_beta > 0.005).all() and (per_beta < 0.08).all()
    assert 1e-4 < np.abs(synth["posedirs"]).max() < 0.01


def test_write_synthetic_requires_npz(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\.npz"):
        write_synthetic_smpl(tmp_path / "model.pkl")


def test_landmark_vertex_ids_cover_smplx_keypoints(synth) -> None:
    ids = landmark_vertex_ids(synth)
    assert len(ids) == 21 and all(0 <= i < synth["v_template"].shape[0] for i in ids.values())
    v = synth["v_template"]
    assert v[ids["nose"], 1] > v[ids["LHeel"], 1] and v[ids["lthumb"], 0] > 0 > v[ids["rthumb"], 0]


# --------------------------------------------------------------------------------------
# ExportableSMPL vs the smplx reference


@pytest.mark.parametrize("n", [1, 5])
def test_exportable_matches_smplx_reference(models, n: int) -> None:
    exportable, reference = models
    pose, betas = random_rotations(n, seed=n), random_betas(n, seed=100 + n)
    with torch.no_grad():
        v_exp, j_exp = exportable(pose, betas)
        v_ref, j_ref = reference(pose, betas)
    assert v_exp.shape == v_ref.shape == (n, exportable.num_vertices, 3) and v_exp.dtype == torch.float32
    assert j_exp.shape == j_ref.shape == (n, 24, 3)
    assert (v_exp - v_ref).abs().max().item() < TOL_M
    assert (j_exp - j_ref).abs().max().item() < TOL_M


def test_rest_pose_gives_the_template(models, synth) -> None:
    exportable, _ = models
    with torch.no_grad():
        verts, joints = exportable(torch.eye(3).expand(2, 24, 3, 3), torch.zeros(2, 10))
    np.testing.assert_allclose(verts[1].numpy(), synth["v_template"], atol=1e-6)
    np.testing.assert_allclose(joints[0].numpy(), synth["J_regressor"] @ synth["v_template"], atol=1e-6)


def test_wrong_input_shapes_raise(models) -> None:
    exportable, reference = models
    with pytest.raises(InputSpecError, match="pose_rotmat"):
        exportable(torch.zeros(1, 23, 3, 3), torch.zeros(1, 10))
    with pytest.raises(InputSpecError, match="betas"):
        reference(torch.zeros(1, 24, 3, 3), torch.zeros(1, 300))


def test_body_model_from_file(tmp_path: Path) -> None:
    path = write_synthetic_smpl(tmp_path / "synthetic.npz", seed=2)
    exportable, reference = body_model_from_file(path)
    assert reference is not None
    pose, betas = random_rotations(2, seed=7), random_betas(2, seed=8)
    with torch.no_grad():
        assert (exportable(pose, betas)[0] - reference(pose, betas)[0]).abs().max().item() < TOL_M
    assert body_model_from_file(path, with_reference=False)[1] is None


# --------------------------------------------------------------------------------------
# ONNX


@pytest.mark.filterwarnings("ignore:# The axis name")  # one Dim shared by both inputs
@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.export internals
def test_onnx_export_dynamic_batch_matches_torch(models, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    exportable, _ = models
    path = tmp_path / "smpl.onnx"
    batch = torch.export.Dim("batch", min=1, max=4096)
    example = (random_rotations(2, seed=0), random_betas(2, seed=0))
    torch.onnx.export(
        exportable,
        example,
        str(path),
        dynamo=True,
        opset_version=18,
        input_names=["pose_rotmat", "betas"],
        output_names=["vertices", "joints"],
        dynamic_shapes={"pose_rotmat": {0: batch}, "betas": {0: batch}},
        external_data=False,
    )
    graph = onnx.load(str(path)).graph
    ops = {node.op_type for node in graph.node}
    assert "Einsum" not in ops and "ScatterND" not in ops and "ScatterElements" not in ops
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        pose, betas = random_rotations(n, seed=20 + n), random_betas(n, seed=30 + n)
        verts, joints = sess.run(["vertices", "joints"], {"pose_rotmat": pose.numpy(), "betas": betas.numpy()})
        with torch.no_grad():
            v_t, j_t = exportable(pose, betas)
        assert verts.shape == (n, exportable.num_vertices, 3)
        assert np.abs(verts - v_t.numpy()).max() < TOL_M
        assert np.abs(joints - j_t.numpy()).max() < TOL_M
