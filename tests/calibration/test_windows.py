"""Calibration windows from .npz feature files and from videos, and every bad input's message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hmr_trt.calibration.windows import windows_from_features_npz, windows_from_track, windows_from_videos
from hmr_trt.errors import InputSpecError

C = 2048


def _features(n: int, seed: int = 0, width: int = C) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32)


def _tiny_backbone(path: Path, width: int = C) -> Path:
    """images (N, 3, 224, 224) -> features (N, width): channel means times a fixed matrix (fast)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proj = numpy_helper.from_array(np.random.default_rng(0).standard_normal((3, width)).astype(np.float32), "proj")
    nodes = [helper.make_node("ReduceMean", ["images"], ["pooled"], axes=[2, 3], keepdims=0),
             helper.make_node("MatMul", ["pooled", "proj"], ["features"])]
    graph = helper.make_graph(nodes, "backbone", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                                 ["images", 3, 224, 224])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["images", width])],
                              [proj])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


# --- .npz feature files -----------------------------------------------------------------------

def test_one_track_gives_non_overlapping_windows(tmp_path: Path) -> None:
    feats = _features(50)
    np.savez(tmp_path / "a.npz", features=feats)
    w = windows_from_features_npz(tmp_path / "a.npz", window=16, feature_dim=2048)
    assert w.shape == (3, 16, C) and w.dtype == np.float32
    np.testing.assert_array_equal(w[1], feats[16:32])
    assert windows_from_features_npz(tmp_path / "a.npz", window=16, stride=8, feature_dim=2048).shape == (5, 16, C)


def test_tracks_as_3d_array_and_as_track_keys_in_a_folder(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", features=np.stack([_features(32, 1), _features(32, 2)]))
    np.savez(tmp_path / "b.npz", track_0=_features(16, 3), track_1=_features(40, 4))
    (tmp_path / "notes.txt").write_text("not features")
    w = windows_from_features_npz(tmp_path, window=16, feature_dim=2048)
    assert w.shape == (2 + 2 + 1 + 2, 16, C)
    assert windows_from_track(_features(10), 16).shape == (0, 16, C)


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputSpecError, match=r"no feature files \(\.npz\) in this folder"):
        windows_from_features_npz(tmp_path, window=16, feature_dim=2048)


def test_wrong_feature_width_names_the_file(tmp_path: Path) -> None:
    np.savez(tmp_path / "narrow.npz", features=_features(32, width=512))
    with pytest.raises(InputSpecError, match=r"narrow\.npz: 'features' has shape \(32, 512\); expected \(N, 2048\)"):
        windows_from_features_npz(tmp_path, window=16, feature_dim=2048)


def test_too_few_frames_and_missing_keys(tmp_path: Path) -> None:
    np.savez(tmp_path / "short.npz", features=_features(10))
    with pytest.raises(InputSpecError, match=r"too few frames for one window of 16: .*short\.npz:features 10"):
        windows_from_features_npz(tmp_path / "short.npz", window=16, feature_dim=2048)
    np.savez(tmp_path / "other.npz", poses=_features(32))
    with pytest.raises(InputSpecError, match=r"no 'features' or 'track_\*' arrays \(found \['poses'\]\)"):
        windows_from_features_npz(tmp_path / "other.npz", window=16, feature_dim=2048)
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(InputSpecError, match=r"junk\.npz: not a readable \.npz file"):
        windows_from_features_npz(tmp_path / "junk.npz", window=16, feature_dim=2048)


# --- videos -------------------------------------------------------------------------------------

def test_video_windows_from_a_file_and_an_offset(tmp_path: Path, sample_video: Path) -> None:
    backbone = _tiny_backbone(tmp_path / "backbone.onnx")
    w = windows_from_videos(sample_video, backbone, window=8, max_windows=3)
    assert w.shape == (3, 8, C) and w.dtype == np.float32 and np.isfinite(w).all()
    later = windows_from_videos(sample_video, backbone, window=8, max_windows=3, start_frame=400)
    assert not np.allclose(w, later)
    assert len(np.unique(w.reshape(-1, C), axis=0)) > 8  # tiles and frames differ


def test_video_bad_inputs(tmp_path: Path, sample_video: Path) -> None:
    backbone = _tiny_backbone(tmp_path / "backbone.onnx")
    with pytest.raises(InputSpecError, match=r"too few frames for one window of 16: .*vtest\.avi: \d+"):
        windows_from_videos(sample_video, backbone, window=16, max_windows=2, start_frame=790)
    fake = tmp_path / "clip.avi"
    fake.write_text("this is not a video")
    with pytest.raises(InputSpecError, match=r"cannot decode .*clip\.avi"):
        windows_from_videos(fake, backbone, window=8)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no videos here")
    with pytest.raises(InputSpecError, match=r"no videos in this folder"):
        windows_from_videos(empty, backbone, window=8)
    narrow = _tiny_backbone(tmp_path / "narrow.onnx", width=512)
    with pytest.raises(InputSpecError, match=r"backbone gave features of shape \(8, 512\) .*expected \(N, 2048\)"):
        windows_from_videos(sample_video, narrow, window=8, max_windows=1, feature_dim=2048)  # the contract's C
