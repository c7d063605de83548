"""runtime/scene.py on hand-made maps (numpy only): peaks, thresholds, sampling, padding, rotations."""

from __future__ import annotations

import numpy as np
import pytest

from hmr_trt.errors import ConfigError, InputSpecError
from hmr_trt.runtime import scene
from hmr_trt.runtime.outputs import rotmat_to_axis_angle

M, P = 16, 79


def _maps(batch: int = 1, peaks=(), seed: int = 0):
    """Low noise everywhere (< 0.1) with given (image, y, x, score) peaks; camera/params random."""
    rng = np.random.default_rng(seed)
    center = (rng.random((batch, 1, M, M)) * 0.1).astype(np.float32)
    for b, y, x, s in peaks:
        center[b, 0, y, x] = s
    cam = rng.normal(0, 0.3, (batch, 3, M, M)).astype(np.float32)
    params = rng.normal(0, 0.3, (batch, P, M, M)).astype(np.float32)
    return {"center_map": center, "cam_map": cam, "params_map": params}


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, 1.5, "0.2", None])
def test_threshold_outside_0_1_is_one_line_config_error(bad) -> None:
    with pytest.raises(ConfigError, match=r"threshold must be in \(0, 1\)"):
        scene.people_from_maps(_maps(), bad)


def test_no_people_gives_empty_list() -> None:
    assert scene.people_from_maps(_maps(batch=3), 0.2) == []


def test_one_person_sampled_at_its_peak_with_camera_scale() -> None:
    maps = _maps(peaks=[(0, 5, 9, 0.9)])
    (person,) = scene.people_from_maps(maps, 0.2)
    assert person["image"] == 0 and person["map_yx"] == (5, 9) and person["score"] == pytest.approx(0.9)
    raw = maps["cam_map"][0, :, 5, 9].astype(np.float64)
    assert person["cam"] == pytest.approx([1.1 ** raw[0], raw[1], raw[2]], rel=1e-6)
    s = 1.1 ** raw[0]
    assert person["cam_trans"] == pytest.approx([2 * raw[1] / s, 2 * raw[2] / s, 2 / s], rel=1e-6)
    assert person["betas"] == pytest.approx(maps["params_map"][0, 69:, 5, 9])
    aa = rotmat_to_axis_angle(person["pose_rotmat"][1:22].astype(np.float64))
    assert aa == pytest.approx(maps["params_map"][0, 6:69, 5, 9].reshape(21, 3), abs=1e-5)
    assert np.allclose(person["pose_rotmat"][22:], np.eye(3))
    assert person["box"] is None


def test_many_people_border_peaks_and_nms() -> None:
    peaks = [(0, 0, 0, 0.8), (0, 0, M - 1, 0.7), (0, M - 1, 0, 0.6), (0, M - 1, M - 1, 0.5), (0, 8, 8, 0.95),
             (0, 8, 10, 0.9),  # within 5x5 of the 0.95 peak: suppressed
             (1, 3, 3, 0.3), (1, 3, 12, 0.1)]  # below threshold
    people = scene.people_from_maps(_maps(batch=2, peaks=peaks), 0.2)
    got = [(p["image"], *p["map_yx"]) for p in people]
    assert got == [(0, 8, 8), (0, 0, 0), (0, 0, M - 1), (0, M - 1, 0), (0, M - 1, M - 1), (1, 3, 3)]


def test_top_k_limits_people_per_image() -> None:
    peaks = [(0, y, x, 0.5 + 0.01 * (y + x)) for y in range(0, M, 3) for x in range(0, M, 3)]  # 36 peaks
    people = scene.people_from_maps(_maps(peaks=peaks), 0.2, max_person=10)
    assert len(people) == 10 and [p["score"] for p in people] == sorted((p["score"] for p in people), reverse=True)


def test_padding_maps_back_to_the_original_image(tmp_path) -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    padded, pad = scene.letterbox(image, 64)
    assert padded.shape == (64, 64, 3) and (pad.top, pad.left, pad.padded) == (50, 0, 200)
    assert pad.to_original(np.array([-1.0, -1.0])) == pytest.approx([0, -50])
    assert pad.to_original(np.array([1.0, 1.0])) == pytest.approx([200, 150])
    maps = _maps(peaks=[(0, 8, 4, 0.9)])

    def body(feed):  # two joints: root at 0, one 0.5 up and right
        n = len(feed["betas"])
        return {"joints3d": np.tile(np.array([[0.0, 0, 0], [0.5, -0.5, 0]]), (n, 1, 1))}

    (person,) = scene.people_from_maps(maps, 0.2, pad, body_model=body)
    assert person["center"] == pytest.approx([4 / M * 200, 8 / M * 200 - 50])
    s, tx, ty = person["cam"]
    expect = pad.to_original(np.array([[tx, ty], [0.5 * s + tx, -0.5 * s + ty]]))
    assert person["joints2d"] == pytest.approx(expect)
    assert person["box"] == pytest.approx(np.concatenate((expect.min(0), expect.max(0))))
    assert person["cam_orig"][1:] == pytest.approx(expect[0])


def test_rotations_round_trip() -> None:
    rng = np.random.default_rng(1)
    aa = rng.normal(0, 0.8, (50, 3))
    assert rotmat_to_axis_angle(scene.axis_angle_to_rotmat(aa)) == pytest.approx(aa, abs=1e-6)
    r = scene.rot6d_to_rotmat(rng.normal(size=(20, 6)))
    assert np.allclose(r @ np.swapaxes(r, -1, -2), np.eye(3), atol=1e-9) and np.allclose(np.linalg.det(r), 1)
    assert np.allclose(scene.rot6d_to_rotmat(np.array([1.0, 0, 0, 1, 0, 0])), np.eye(3))


def test_bad_maps_are_refused() -> None:
    maps = _maps()
    with pytest.raises(InputSpecError, match="missing params_map"):
        scene.people_from_maps({k: v for k, v in maps.items() if k != "params_map"}, 0.2)
    with pytest.raises(InputSpecError, match="shapes disagree"):
        scene.people_from_maps({**maps, "cam_map": maps["cam_map"][:, :2]}, 0.2)
    with pytest.raises(InputSpecError, match="79 or 142 channels"):
        scene.people_from_maps({**maps, "params_map": maps["params_map"][:, :50],
                                "center_map": maps["center_map"] + np.float32(0.5)}, 0.2)


def test_letterbox_flips_bgr_frames_to_rgb() -> None:
    frame = np.zeros((8, 8, 3), np.uint8)
    frame[..., 0] = 200  # blue in an OpenCV frame
    rgb, _ = scene.letterbox(frame, 64, bgr=True)
    assert rgb[..., 2].min() == pytest.approx(200, abs=1) and rgb[..., 0].max() == pytest.approx(0, abs=1)


def test_grid_people_equal_people_from_maps_at_the_same_cells() -> None:
    """Parity's fixed-cell sampling goes through the same conversions as the runtime's peak path."""
    from hmr_trt.runtime.scene import grid_people, people_from_maps

    rng = np.random.default_rng(3)
    b, m = 2, 16
    center = np.zeros((b, 1, m, m), np.float32)
    center[0, 0, 0, 0] = 0.9  # grid cell 0 of image 0
    center[1, 0, 15, 15] = 0.8  # the last grid cell of image 1
    maps = {"center_map": center, "cam_map": rng.normal(0, 0.3, (b, 3, m, m)).astype(np.float32),
            "params_map": rng.normal(0, 0.3, (b, 79, m, m)).astype(np.float32)}
    grid = grid_people(maps, cells=8)
    assert grid["pose_rotmat"].shape == (b, 64, 24, 3, 3) and grid["betas"].shape == (b, 64, 10)
    people = people_from_maps(maps, 0.5)
    assert [(p["image"], p["map_yx"]) for p in people] == [(0, (0, 0)), (1, (15, 15))]
    for person, cell in zip(people, (0, 63)):
        np.testing.assert_allclose(grid["pose_rotmat"][person["image"], cell], person["pose_rotmat"], atol=1e-6)
        np.testing.assert_allclose(grid["betas"][person["image"], cell], person["betas"], atol=1e-6)
        np.testing.assert_allclose(grid["cam"][person["image"], cell], person["cam"], rtol=1e-5)
