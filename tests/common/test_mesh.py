"""The one mesh path: outputs of any leading shape -> body model -> vertices/joints -> drift in mm."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hmr_trt import registry
from hmr_trt.errors import InputSpecError
from hmr_trt.mesh import meshes, outputs_drift


def _body(feed):  # vertices: betas spread over 5 points; joints: the rotations' first rows
    n = len(feed["betas"])
    return {"vertices": np.repeat(feed["betas"][:, :3][:, None], 5, axis=1) + np.arange(5)[None, :, None],
            "joints3d": feed["pose_rotmat"].reshape(n, 24, 9)[:, :, :3]}


@pytest.mark.parametrize("lead", [(4, 16), (4, 1), (6,)])
def test_meshes_keep_the_leading_axes(lead) -> None:
    rng = np.random.default_rng(0)
    outputs = {"pose_rotmat": rng.standard_normal((*lead, 24, 3, 3)).astype(np.float32),
               "betas": rng.standard_normal((*lead, 10)).astype(np.float32)}
    verts, joints = meshes(_body, outputs, registry.contract("coseg"))
    assert verts.shape == (*lead, 5, 3) and joints.shape == (*lead, 24, 3)
    np.testing.assert_array_equal(verts[..., 0, :], outputs["betas"][..., :3])


def test_drift_in_mm_and_models_that_output_vertices() -> None:
    outputs = {"pose_rotmat": np.zeros((2, 1, 24, 3, 3), np.float32), "betas": np.zeros((2, 1, 10), np.float32)}
    moved = {**outputs, "betas": outputs["betas"] + np.float32(0.001)}  # 1 mm along x, y and z
    drift = outputs_drift(_body, moved, outputs)
    assert drift["vertices_mean_mm"] == pytest.approx(np.sqrt(3.0)) and drift["joints_mean_mm"] == 0.0
    no_body = dataclasses.replace(registry.contract("coseg"), body_model="none")
    direct = {"vertices": np.ones((3, 5, 3)), "joints3d": np.zeros((3, 2, 3))}
    assert meshes(None, direct, no_body)[0] is direct["vertices"]
    with pytest.raises(InputSpecError, match="need the body-model graph"):
        meshes(None, outputs)
