"""Seeded default weights shaped like trained ones (export/seeded.py): a standing person, the camera that
puts it in the crop, small deltas on people's features; the backbone's BatchNorm measured on people."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hmr_trt import registry  # noqa: E402
from hmr_trt.export import seeded  # noqa: E402
from hmr_trt.export.models.spin import Regressor, rot6d_to_rotmat  # noqa: E402


@pytest.fixture(scope="module")
def body():
    from hmr_trt.export.body_model import ExportableSMPL
    from hmr_trt.export.synthetic_smpl import make_synthetic_smpl

    return ExportableSMPL(make_synthetic_smpl(0)).eval()


def _project(verts: np.ndarray, cam: np.ndarray) -> np.ndarray:
    return cam[0] * (verts[:, :2] + cam[1:])  # the crop's [-1, 1] coordinates


def test_the_start_is_a_standing_person_that_fills_the_crop(body) -> None:
    mean = seeded.standing_mean_params()
    rot = rot6d_to_rotmat(torch.from_numpy(mean["pose"])[None]).reshape(1, 24, 3, 3)
    with torch.no_grad():
        verts, joints = body(rot, torch.zeros(1, 10))
    v, j = verts[0].numpy(), joints[0].numpy()
    assert j[15, 1] < j[0, 1] < j[7, 1] and j[15, 1] < j[8, 1]  # head above pelvis above ankles (y down)
    assert j[20, 1] > j[16, 1] and j[21, 1] > j[17, 1]  # wrists below shoulders: arms down, not a T
    xy = _project(v, mean["cam"])
    assert -1 < xy[:, 1].min() < -0.6 and 0.6 < xy[:, 1].max() < 1  # head to feet: most of the crop's height
    assert abs(xy[:, 0].mean()) < 0.05 and abs(xy[:, 1].min() + xy[:, 1].max()) < 0.1  # centred


def test_shaped_regressor_moves_a_little_around_the_start() -> None:
    gen = torch.Generator().manual_seed(3)
    reg = Regressor(64, 32, 3).eval()
    x = seeded.trained_like_features(gen, 40, 1, 64)[:, 0]
    seeded.shape_regressor(reg, x)
    with torch.no_grad():
        pose, shape, cam = reg(x)
    start = seeded.standing_mean_params()
    np.testing.assert_allclose(pose.mean(0).numpy(), start["pose"], atol=1e-3)
    np.testing.assert_allclose(cam.mean(0).numpy(), start["cam"], atol=1e-3)
    np.testing.assert_allclose(pose.std(0)[6:].numpy(), seeded.POSE_STD, rtol=0.05)
    np.testing.assert_allclose(pose.std(0)[:6].numpy(), seeded.ROOT_STD, rtol=0.05)
    np.testing.assert_allclose(shape.std(0).numpy(), seeded.SHAPE_STD, rtol=0.05)
    np.testing.assert_allclose(cam.std(0).numpy(), seeded.CAM_STD, rtol=0.05)


@pytest.mark.parametrize("name", ["vibe", "tcmr", "mpsnet", "coseg", "glot"])
def test_seeded_models_put_people_in_the_crop_and_still_move(name, body) -> None:
    from hmr_trt.mesh import motion_spread_mm

    adapter = registry.adapter(name)
    cfg = adapter.tiny_config()
    cfg = dataclasses.replace(cfg, feature_dim=2048) if hasattr(cfg, "feature_dim") else cfg
    window = getattr(cfg, "window", getattr(cfg, "seqlen", 16))
    model = adapter.reference(cfg)
    x = seeded.trained_like_features(torch.Generator().manual_seed(11), 6, window, 2048)
    with torch.no_grad():
        rotmat, betas, cam = model(x)
        w, f = betas.shape[:2]
        verts, joints = body(rotmat.reshape(w * f, 24, 3, 3), betas.reshape(w * f, -1))
    for v, j, c in zip(verts.numpy(), joints.numpy(), cam.reshape(-1, 3).numpy()):
        assert j[15, 1] < j[0, 1] < j[7, 1]  # upright
        xy = _project(v, c)
        assert (np.abs(xy) < 1.05).mean() > 0.99  # on the person: inside the crop
    assert motion_spread_mm(verts.numpy().reshape(w, f, -1, 3)) > 20  # people in slightly varying poses


def test_backbone_batchnorm_is_measured_on_people() -> None:
    from hmr_trt.export.backbone import ResNet50Backbone
    from hmr_trt.export.features import features_from_crops

    crops = seeded.person_crops()
    assert crops.shape == (33, 224, 224, 3) and crops.dtype == np.uint8
    backbone = ResNet50Backbone.from_seed(0)
    f = features_from_crops(backbone, crops[:8])
    mean, std = seeded.feature_stats()
    # the shipped statistics are this backbone's on these crops (tools/make_seeded_data.py)
    np.testing.assert_allclose(f.mean(), mean.mean(), rtol=0.1)
    assert np.isfinite(f).all() and 0.2 < f.mean() < 5


def test_linear_head_and_batchnorm_shaping_hit_their_targets() -> None:
    """shape_linear_head: each output's mean and std over the inputs become the start and the target;
    calibrate_batchnorm: running statistics become those of the one pass; person_mosaics: the crops tiled."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(64, 8, generator=gen) * 3 + 1
    head = torch.nn.Linear(8, 3)
    with torch.no_grad():
        seeded.shape_linear_head(head, head(x), (0.9, 0.0, -0.1), (0.02, 0.015, 0.015))
        out = head(x)
    assert torch.allclose(out.mean(0), torch.tensor([0.9, 0.0, -0.1]), atol=1e-5)
    assert torch.allclose(out.std(0), torch.tensor([0.02, 0.015, 0.015]), rtol=1e-4)
    net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.BatchNorm1d(4)).eval()
    seeded.calibrate_batchnorm(net, [net[1]], lambda: net(x))
    with torch.no_grad():
        h = net[0](x)
    assert torch.allclose(net[1].running_mean, h.mean(0), atol=1e-5) and not net[1].training  # back in eval mode
    assert torch.allclose(net[1].running_var, h.var(0), rtol=1e-4)
    mosaic = seeded.person_mosaics(96, 2, 1)
    assert mosaic.shape == (1, 96, 96, 3) and mosaic.dtype == np.uint8
    crop = seeded.person_crops(seeded.CROP_STORE)[1]
    assert np.abs(mosaic[0, :48, 48:].astype(int).mean() - crop.astype(int).mean()) < 8  # crop 1 top right
