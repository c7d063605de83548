"""``--format vibe``: the peers' joblib file, read back with joblib against their key and shape list."""

from __future__ import annotations

import numpy as np
import pytest

from hmr_trt.errors import InputSpecError
from hmr_trt.runtime.vibe_format import VIBE_FILE, VIBE_KEYS, vibe_track_id, write_vibe_output

joblib = pytest.importorskip("joblib")

# The peers' demos (VIBE demo.py; TCMR, MPS-Net, GLoT copy it): per track, N frames, SMPL's 6890 vertices.
PEER_SHAPES = {"pred_cam": (3,), "orig_cam": (4,), "verts": (6890, 3), "pose": (72,), "betas": (10,),
               "joints3d": (49, 3), "joints2d": (49, 2), "bboxes": (4,), "frame_ids": ()}


def _track(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {k: (np.arange(n) + 5 if k == "frame_ids" else rng.normal(size=(n, *shape)))
            for k, shape in PEER_SHAPES.items()}


def test_written_file_reads_back_with_joblib_as_the_peers_demos_write_it(tmp_path) -> None:
    tracks = {"1": _track(7, 0), 12: _track(3, 1)}
    path = write_vibe_output(tmp_path / VIBE_FILE, tracks)
    loaded = joblib.load(path)
    assert set(loaded) == {1, 12} and all(isinstance(k, int) for k in loaded)
    for key, n in ((1, 7), (12, 3)):
        entry = loaded[key]
        assert set(entry) == set(PEER_SHAPES) == set(VIBE_KEYS)
        for name, shape in PEER_SHAPES.items():
            assert entry[name].shape == (n, *shape), name
            assert entry[name].dtype == (np.int64 if name == "frame_ids" else np.float32)
        np.testing.assert_allclose(entry["pose"], tracks["1" if key == 1 else 12]["pose"], rtol=1e-6)
    np.testing.assert_array_equal(loaded[1]["frame_ids"], np.arange(7) + 5)
    assert not [p for p in tmp_path.iterdir() if p.name != VIBE_FILE], "no temp files left"


def test_wrong_shapes_and_missing_keys_are_refused(tmp_path) -> None:
    bad = _track(4, 2)
    bad["pose"] = bad["pose"][:, :69]
    with pytest.raises(InputSpecError, match=r"'pose' must be \(N, 72\)"):
        write_vibe_output(tmp_path / VIBE_FILE, {1: bad})
    short = _track(4, 3)
    short["orig_cam"] = short["orig_cam"][:3]
    with pytest.raises(InputSpecError, match="N = 4"):
        write_vibe_output(tmp_path / VIBE_FILE, {1: short})
    missing = _track(4, 4)
    del missing["orig_cam"]
    with pytest.raises(InputSpecError, match="orig_cam"):
        write_vibe_output(tmp_path / VIBE_FILE, {1: missing})
    assert not (tmp_path / VIBE_FILE).exists()


def test_track_ids() -> None:
    assert vibe_track_id("7") == 7 and vibe_track_id(3) == 3 and vibe_track_id("a7") == "a7"
