"""Result files: axis-angle against cv2.Rodrigues (incl. near 0 and pi), track .npz, summary.json, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hmr_trt.errors import InputSpecError, OutputDirError
from hmr_trt.runtime import outputs
from hmr_trt.runtime.outputs import rotmat_to_axis_angle, write_summary_json, write_track_npz

cv2 = pytest.importorskip("cv2")


def _rodrigues(vec: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(vec, dtype=np.float64).reshape(3, 1))[0]


def _random_axes(n: int, seed: int = 0) -> np.ndarray:
    axes = np.random.default_rng(seed).normal(size=(n, 3))
    return axes / np.linalg.norm(axes, axis=1, keepdims=True)


@pytest.mark.parametrize("angle", [0.0, 1e-12, 1e-7, 1e-4, 0.3, 1.0, np.pi / 2, 2.0, 3.0])
def test_axis_angle_matches_rodrigues(angle) -> None:
    vecs = _random_axes(50, seed=int(angle * 1000)) * angle
    mats = np.stack([_rodrigues(v) for v in vecs])
    ours = rotmat_to_axis_angle(mats)
    theirs = np.stack([cv2.Rodrigues(m)[0].ravel() for m in mats])
    np.testing.assert_allclose(ours, vecs, atol=1e-9)
    np.testing.assert_allclose(ours, theirs, atol=1e-7)


@pytest.mark.parametrize("eps", [1e-3, 1e-6, 1e-9, 0.0])
def test_axis_angle_near_pi(eps) -> None:
    """Near pi the axis comes from the symmetric part; at pi exactly, +a and -a are the same rotation."""
    vecs = _random_axes(50, seed=7) * (np.pi - eps)
    mats = np.stack([_rodrigues(v) for v in vecs])
    ours = rotmat_to_axis_angle(mats)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), np.pi - eps, atol=1e-9)
    for mat, vec, got in zip(mats, vecs, ours):
        np.testing.assert_allclose(_rodrigues(got), mat, atol=1e-9)  # the same rotation
        if eps >= 1e-6:  # below pi the vector is unique
            np.testing.assert_allclose(got, vec, atol=1e-6)


def test_axis_angle_shapes_and_dtypes() -> None:
    mats = np.broadcast_to(np.eye(3, dtype=np.float32), (2, 24, 3, 3))
    out = rotmat_to_axis_angle(mats)
    assert out.shape == (2, 24, 3) and out.dtype == np.float32 and not out.any()
    assert rotmat_to_axis_angle(np.eye(3)).shape == (3,)
    with pytest.raises(InputSpecError, match=r"\(\.\.\., 3, 3\)"):
        rotmat_to_axis_angle(np.zeros((4, 3)))


def _track(n: int = 5, joints: int = 49, verts: int = 100):
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(n, 24, 3)) * 0.5
    rotmat = np.stack([[_rodrigues(v) for v in frame] for frame in vecs]).astype(np.float32)
    return dict(frames=np.arange(10, 10 + n), boxes=rng.uniform(0, 100, (n, 5)), pose_rotmat=rotmat,
                betas=rng.normal(size=(n, 10)), cam=rng.normal(size=(n, 3)), joints3d=rng.normal(size=(n, joints, 3)),
                vertices=rng.normal(size=(n, verts, 3))), vecs


def test_track_npz_keys_shapes_and_values(tmp_path) -> None:
    data, vecs = _track()
    path = write_track_npz(tmp_path / "track_3.npz", 3, **data)
    with np.load(path) as f:
        assert sorted(f.files) == sorted(["track_id", "frame_indices", "boxes", "pose_rotmat", "pose_axis_angle", "betas",
                                          "cam", "joints3d", "vertices"])
        assert str(f["track_id"]) == "3"
        assert f["frame_indices"].dtype == np.int64 and f["frame_indices"].tolist() == list(range(10, 15))
        assert f["boxes"].shape == (5, 4) and f["boxes"].dtype == np.float32
        assert f["pose_rotmat"].shape == (5, 24, 3, 3)
        assert f["pose_axis_angle"].shape == (5, 72) and f["pose_axis_angle"].dtype == np.float32
        np.testing.assert_allclose(f["pose_axis_angle"], vecs.reshape(5, 72), atol=1e-5)
        assert f["betas"].shape == (5, 10) and f["cam"].shape == (5, 3)
        assert f["joints3d"].shape == (5, 49, 3) and f["vertices"].shape == (5, 100, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["track_3.npz"]  # no temp file left


def test_track_npz_without_vertices(tmp_path) -> None:
    data, _ = _track()
    data["vertices"] = None
    with np.load(write_track_npz(tmp_path / "t.npz", "7", **data)) as f:
        assert "vertices" not in f.files and f["joints3d"].shape == (5, 49, 3)


@pytest.mark.parametrize("key,bad", [("pose_rotmat", np.zeros((5, 23, 3, 3))), ("cam", np.zeros((4, 3))),
                                     ("joints3d", np.zeros((5, 49, 2))), ("frames", np.zeros((0,)))])
def test_track_npz_refuses_bad_shapes(tmp_path, key, bad) -> None:
    data, _ = _track()
    data[key] = bad
    with pytest.raises(InputSpecError):
        write_track_npz(tmp_path / "t.npz", 1, **data)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch) -> None:
    data, _ = _track()
    path = write_track_npz(tmp_path / "t.npz", 1, **data)
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(outputs.np, "savez", broken_savez)
    with pytest.raises(OutputDirError, match="cannot write .*t.npz: disk full"):
        write_track_npz(path, 1, **data)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.npz"]


def test_summary_json(tmp_path) -> None:
    summary = {"tracks": np.int64(2), "fps": np.float32(12.5), "ids": np.array([1, 2]), "out": Path("/x"),
               "nan": float("nan"), "nested": {"t": (1, np.float64(np.inf))}}
    path = write_summary_json(tmp_path / "sub" / "summary.json", summary)
    assert json.loads(path.read_text()) == {"tracks": 2, "fps": 12.5, "ids": [1, 2], "out": "/x", "nan": None,
                                            "nested": {"t": [1, None]}}
    with pytest.raises(InputSpecError, match="not JSON serialisable"):
        write_summary_json(tmp_path / "bad.json", {"x": object()})
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["summary.json"]
    assert not (tmp_path / "bad.json").exists()


def test_track_npz_image_space_extras(tmp_path) -> None:
    data, _ = _track()
    extra = {"orig_cam": np.ones((5, 4)), "joints2d": np.zeros((5, 49, 2)), "crop_boxes": np.zeros((5, 4))}
    with np.load(write_track_npz(tmp_path / "t.npz", 1, **data, extra=extra)) as f:
        assert f["orig_cam"].shape == (5, 4) and f["joints2d"].shape == (5, 49, 2) and f["crop_boxes"].dtype == np.float32
    with pytest.raises(InputSpecError, match="'orig_cam'.*N = 5"):
        write_track_npz(tmp_path / "u.npz", 1, **data, extra={"orig_cam": np.ones((4, 4))})
    assert not (tmp_path / "u.npz").exists()
