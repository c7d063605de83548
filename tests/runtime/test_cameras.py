"""Cameras in the original image (VIBE's conversion) and 2D joints in pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hmr_trt.errors import InputSpecError
from hmr_trt.runtime.cameras import (
    crop_box_cxcyh,
    crop_cam_to_orig_cam,
    image_space,
    joints_to_pixels,
    project_orig_cam,
)
from hmr_trt.runtime.crops import square_box
from hmr_trt.runtime.render import project_weak_perspective

DATA = Path(__file__).resolve().parents[1] / "fixtures"


def test_orig_cam_equals_vibe_on_the_fixture() -> None:
    """tests/fixtures/vibe_orig_cam.json: VIBE's own convert_crop_cam_to_orig_img run on seeded inputs."""
    ref = json.loads((DATA / "vibe_orig_cam.json").read_text())
    ours = crop_cam_to_orig_cam(np.array(ref["cam"]), np.array(ref["bboxes"]), ref["width"], ref["height"])
    np.testing.assert_allclose(ours, np.array(ref["orig_cam"]), rtol=1e-5, atol=1e-5)


def test_orig_cam_puts_every_point_where_the_crop_camera_does() -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(0, 0.5, (50, 3))
    width, height = 768, 576
    for _ in range(5):
        cam = np.array([rng.uniform(0.6, 1.4), rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2)])
        box = square_box(np.array([rng.uniform(0, 600), rng.uniform(0, 400), 0, 0]) + [0, 0, 60, 150])
        orig = crop_cam_to_orig_cam(cam[None], crop_box_cxcyh(box[None]), width, height)[0]
        np.testing.assert_allclose(project_orig_cam(points, orig, width, height),
                                   project_weak_perspective(points, cam, box), atol=1e-3)


def test_joints_to_pixels_matches_the_renderers_projection() -> None:
    rng = np.random.default_rng(1)
    joints = rng.normal(0, 0.4, (3, 24, 3))
    cams = np.array([[1.0, 0.0, 0.1], [0.8, 0.1, -0.1], [1.2, -0.05, 0.0]])
    boxes = np.array([[10, 20, 110, 120], [300, 100, 420, 220], [0, 0, 50, 50]], dtype=np.float32)
    px = joints_to_pixels(joints, cams, boxes)
    assert px.shape == (3, 24, 2) and px.dtype == np.float32
    for i in range(3):
        np.testing.assert_allclose(px[i], project_weak_perspective(joints[i], cams[i], boxes[i]), atol=1e-3)


def test_image_space_uses_the_crop_square() -> None:
    boxes = np.array([[100, 50, 140, 150], [400, 300, 460, 420]], dtype=np.float32)
    cam = np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.2]], dtype=np.float32)
    out = image_space(cam, boxes, np.zeros((2, 24, 3)), 768, 576)
    side = 1.2 * 100  # scale 1.2 times the longer side
    np.testing.assert_allclose(out["bboxes_cxcyh"][0], [120, 100, side, side], atol=1e-4)
    np.testing.assert_allclose(out["crop_boxes"][0], [120 - side / 2, 100 - side / 2, 120 + side / 2, 100 + side / 2],
                               atol=1e-4)
    # the body's origin (0, 0, 0) with a centred camera lands on the box centre
    np.testing.assert_allclose(out["joints2d"][0, 0], [120, 100], atol=1e-3)
    assert out["orig_cam"].shape == (2, 4) and out["joints2d"].shape == (2, 24, 2)
    assert image_space(cam, boxes, np.zeros((2, 24, 3)), None, None) == {}


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(InputSpecError, match="'cam' must be"):
        crop_cam_to_orig_cam(np.zeros((2, 4)), np.zeros((2, 4)), 10, 10)
    with pytest.raises(InputSpecError, match="boxes must be"):
        crop_cam_to_orig_cam(np.zeros((2, 3)), np.zeros((3, 4)), 10, 10)
    with pytest.raises(InputSpecError, match="image size"):
        crop_cam_to_orig_cam(np.zeros((2, 3)), np.zeros((2, 4)), 0, 10)
    with pytest.raises(InputSpecError, match="joints3d"):
        joints_to_pixels(np.zeros((2, 24)), np.zeros((2, 3)), np.zeros((2, 4)))
