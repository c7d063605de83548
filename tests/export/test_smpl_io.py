"""Tests for hmr_trt.export.smpl_io: safe loading of SMPL-format .npz and official-style .pkl files.

No chumpy and no scipy are installed (nor needed): official-format pickles are built here
from fake classes whose ``__module__``/``__qualname__`` claim to be ``chumpy.ch.Ch`` and
``scipy.sparse.csc_matrix`` and which pickle the same state layout the real ones do.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import sys
import types
import weakref
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest

from hmr_trt.errors import CheckpointError
from hmr_trt.export.smpl_io import (
    SMPL_PARENTS,
    SYNTHETIC_MARKER_KEY,
    is_synthetic,
    kinematic_parents,
    load_body_model_data,
    normalize_body_model_data,
)
from hmr_trt.export.synthetic_smpl import make_synthetic_smpl, write_synthetic_smpl

# --------------------------------------------------------------------------------------
# Fakes of the classes official SMPL pickles reference


class FakeCh:
    """Pickles like ``chumpy.ch.Ch``: ``__getstate__`` is ``__dict__`` minus the weak caches."""

    def __init__(self, x: Any) -> None:
        self.x = np.asarray(x, dtype=np.float64)
        self._dirty_vars = {"x"}
        self._itr = None
        self._make_dense = False
        self._make_sparse = False
        self._depends_on_deps: Dict[str, Any] = {}
        self._parents = weakref.WeakKeyDictionary()
        self._cache = {"r": None, "drs": weakref.WeakKeyDictionary()}

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        del state["_parents"]
        del state["_cache"]
        return state


FakeCh.__module__ = "chumpy.ch"
FakeCh.__qualname__ = FakeCh.__name__ = "Ch"


class FakeSelect(FakeCh):
    """A chumpy expression (``chumpy.reordering.Select``): no stored 'x', only operands."""

    def __init__(self, a: FakeCh) -> None:
        super().__init__(0.0)
        del self.x
        self.a = a
        self.idxs = np.arange(3)


FakeSelect.__module__ = "chumpy.reordering"
FakeSelect.__qualname__ = FakeSelect.__name__ = "Select"


class FakeCsc:
    """Pickles like ``scipy.sparse.csc_matrix`` (default object pickling of its __dict__)."""

    def __init__(self, dense: np.ndarray) -> None:
        cols, rows = np.nonzero(dense.T)  # column-major order
        self.data = dense[rows, cols].astype(np.float64)
        self.indices = rows.astype(np.int32)
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=dense.shape[1]))]).astype(np.int32)
        self._shape = tuple(dense.shape)
        self.maxprint = 50
        self._has_sorted_indices = True


FakeCsc.__module__ = "scipy.sparse.csc"
FakeCsc.__qualname__ = FakeCsc.__name__ = "csc_matrix"


class FakeCscNew(FakeCsc):
    pass


FakeCscNew.__module__ = "scipy.sparse._csc"
FakeCscNew.__qualname__ = FakeCscNew.__name__ = "csc_matrix"

_PY2_MODULE_NAMES = {
    "builtins": "__builtin__",
    "copyreg": "copy_reg",
    "numpy._core.multiarray": "numpy.core.multiarray",
}


class Py2StylePickler(pickle._Pickler):  # type: ignore[name-defined]
    """Protocol 2 written the way Python 2's cPickle wrote SMPL's files: byte strings as
    (latin-1) ``str`` opcodes, ``numpy.core`` / ``__builtin__`` / ``copy_reg`` module names,
    and globals written by name without importing them (the fakes are not importable)."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def _write_py2_str(self, data: bytes) -> None:
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)

    def save_bytes(self, obj: bytes) -> None:
        self._write_py2_str(obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        if not obj.isascii():  # py2 unicode
            return pickle._Pickler.save_str(self, obj)  # type: ignore[attr-defined]
        self._write_py2_str(obj.encode("ascii"))  # py2 str (dict keys, dtype codes ...)
        self.memoize(obj)

    def save_global(self, obj: Any, name: Any = None) -> None:
        module = _PY2_MODULE_NAMES.get(obj.__module__, obj.__module__)
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str
    dispatch[types.FunctionType] = save_global


def py2_pickle_bytes(obj: Any, protocol: int = 2) -> bytes:
    buf = io.BytesIO()
    Py2StylePickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


@pytest.fixture(scope="module")
def synth() -> Dict[str, np.ndarray]:
    return make_synthetic_smpl(seed=3)


def official_style_dict(d: Dict[str, np.ndarray], csc_cls: type = FakeCsc) -> Dict[str, Any]:
    """The layout of basicModel_neutral_lbs_10_207_0_v1.0.0.pkl, with synthetic numbers."""
    return {
        "v_template": FakeCh(d["v_template"]),
        "f": d["f"].astype(np.uint32),
        "J_regressor": csc_cls(d["J_regressor"].astype(np.float64)),
        "kintree_table": d["kintree_table"].astype(np.int64),
        "weights": FakeCh(d["weights"]),
        "shapedirs": FakeCh(d["shapedirs"]),
        "posedirs": d["posedirs"].astype(np.float64),
        "J": FakeCh(d["J_regressor"] @ d["v_template"]),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        "vert_sym_idxs": np.arange(d["v_template"].shape[0], dtype=np.int64),
        "pose_training_info": {"alpha": 0.5, "max_iters": 10},
    }


def assert_same_model(loaded: Dict[str, np.ndarray], d: Dict[str, np.ndarray]) -> None:
    for k in ("v_template", "J_regressor", "weights", "shapedirs", "posedirs"):
        assert loaded[k].dtype == np.float32, k
        np.testing.assert_allclose(loaded[k], d[k], rtol=0, atol=1e-7, err_msg=k)
    assert loaded["f"].dtype == np.int64 and np.array_equal(loaded["f"], d["f"].astype(np.int64))
    assert loaded["kintree_table"].dtype == np.int64
    assert kinematic_parents(loaded) == list(SMPL_PARENTS)


# --------------------------------------------------------------------------------------
# Official-format pickles


@pytest.mark.parametrize("csc_cls", [FakeCsc, FakeCscNew], ids=["scipy.sparse.csc", "scipy.sparse._csc"])
def test_official_style_py2_pickle_loads_without_chumpy_or_scipy(tmp_path: Path, synth, csc_cls) -> None:
    raw = py2_pickle_bytes(official_style_dict(synth, csc_cls))
    assert b"chumpy.ch\nCh\n" in raw and b"numpy.core.multiarray\n_reconstruct\n" in raw
    assert b"_codecs" not in raw  # byte strings really are py2 str opcodes
    path = tmp_path / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    path.write_bytes(raw)
    loaded = load_body_model_data(path)
    assert_same_model(loaded, synth)
    assert set(loaded) == {"v_template", "f", "J_regressor", "kintree_table", "weights", "shapedirs", "posedirs"}
    assert not is_synthetic(loaded)
    assert "chumpy" not in sys.modules and "scipy" not in sys.modules


def test_protocol_1_pickle_uses_copy_reg_reconstructor(tmp_path: Path, synth) -> None:
    raw = py2_pickle_bytes(official_style_dict(synth), protocol=1)
    assert b"copy_reg\n_reconstructor\n" in raw
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(raw)
    assert_same_model(load_body_model_data(path), synth)


def test_python3_pickles_of_plain_arrays_load(tmp_path: Path, synth) -> None:
    plain = {k: v for k, v in synth.items() if k != SYNTHETIC_MARKER_KEY}
    for protocol in (2, 4, 5):  # 2: bytes via _codecs.encode; 5: numpy's _frombuffer
        path = tmp_path / f"SMPL_NEUTRAL_p{protocol}.pkl"
        path.write_bytes(pickle.dumps(plain, protocol=protocol))
        assert_same_model(load_body_model_data(path), synth)


def test_shapedirs_with_300_betas_are_cut_to_10(tmp_path: Path, synth) -> None:
    d = dict(synth)
    d["shapedirs"] = np.concatenate([synth["shapedirs"]] * 30, axis=2)  # like SMPL 1.1
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(py2_pickle_bytes({k: v for k, v in d.items() if k != SYNTHETIC_MARKER_KEY}))
    loaded = load_body_model_data(path)
    assert loaded["shapedirs"].shape == (synth["v_template"].shape[0], 3, 10)
    np.testing.assert_array_equal(loaded["shapedirs"], synth["shapedirs"])


def test_malicious_pickle_is_refused_and_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps({"v_template": Evil()}, protocol=2))
    with pytest.raises(CheckpointError, match=r"refused to unpickle global '(posix|nt|os)\.system'"):
        load_body_model_data(path)
    assert not marker.exists()

    class EvilEval:
        def __reduce__(self):
            return (eval, (f"open({str(marker)!r}, 'w')",))

    path.write_bytes(py2_pickle_bytes({"f": EvilEval()}))
    with pytest.raises(CheckpointError, match=r"'__builtin__\.eval'"):
        load_body_model_data(path)
    assert not marker.exists()


def test_chumpy_expression_without_value_is_a_clear_error(tmp_path: Path, synth) -> None:
    d = official_style_dict(synth)
    d["v_template"] = FakeSelect(FakeCh(synth["v_template"]))
    path = tmp_path / "model.pkl"
    path.write_bytes(py2_pickle_bytes(d))
    with pytest.raises(CheckpointError, match=r"'v_template' is a chumpy chumpy\.reordering\.Select"):
        load_body_model_data(path)


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x80\x02}q\x00(X\x01", os.urandom(64), b"not a pickle at all"],
    ids=["empty", "truncated", "random", "text"],
)
def test_corrupt_pickle(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(payload)
    with pytest.raises(CheckpointError, match="SMPL_NEUTRAL.pkl"):
        load_body_model_data(path)


def test_truncated_real_pickle(tmp_path: Path, synth) -> None:
    raw = py2_pickle_bytes(official_style_dict(synth))
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="unreadable pickle"):
        load_body_model_data(path)


def test_pickle_of_a_non_dict(tmp_path: Path) -> None:
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_body_model_data(path)


# --------------------------------------------------------------------------------------
# .npz and validation


def test_npz_roundtrip_and_synthetic_marker(tmp_path: Path) -> None:
    path = write_synthetic_smpl(tmp_path / "synthetic.npz", seed=3)
    loaded = load_body_model_data(path)
    assert_same_model(loaded, make_synthetic_smpl(seed=3))
    assert is_synthetic(loaded)
    assert "NOT SMPL" in str(loaded[SYNTHETIC_MARKER_KEY])


def test_corrupt_npz(tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    path.write_bytes(b"PK\x03\x04 broken zip" + os.urandom(32))
    with pytest.raises(CheckpointError, match="unreadable .npz"):
        load_body_model_data(path)


def test_npz_with_pickled_objects_is_refused(tmp_path: Path, synth) -> None:
    path = tmp_path / "model.npz"
    np.savez(path, **{**synth, "v_template": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(CheckpointError, match="unreadable .npz"):
        load_body_model_data(path)


def test_missing_keys_are_listed(tmp_path: Path, synth) -> None:
    path = tmp_path / "model.npz"
    np.savez(path, **{k: v for k, v in synth.items() if k not in ("posedirs", "weights")})
    with pytest.raises(CheckpointError, match=r"missing keys \['weights', 'posedirs'\]"):
        load_body_model_data(path)


def test_missing_file_and_wrong_extension(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file"):
        load_body_model_data(tmp_path / "SMPL_NEUTRAL.pkl")
    other = tmp_path / "model.txt"
    other.write_text("x")
    with pytest.raises(CheckpointError, match="unsupported extension '.txt'"):
        load_body_model_data(other)
    with pytest.raises(CheckpointError, match="not a file"):
        (tmp_path / "dir.pkl").mkdir()
        load_body_model_data(tmp_path / "dir.pkl")


@pytest.mark.parametrize(
    ("key", "bad", "pattern"),
    [
        ("weights", lambda d: d["weights"][:-1], r"'weights' is \(\d+, 24\), expected"),
        ("posedirs", lambda d: d["posedirs"][..., :200], r"'posedirs' is \(\d+, 3, 200\), expected \(\d+, 3, 207\)"),
        ("J_regressor", lambda d: d["J_regressor"][:23], r"'J_regressor' is \(23, \d+\)"),
        ("shapedirs", lambda d: d["shapedirs"][..., :5], r"'shapedirs' is \(\d+, 3, 5\)"),
        ("v_template", lambda d: d["v_template"][:, :2], r"'v_template' is \(\d+, 2\)"),
        ("f", lambda d: d["f"] + np.uint32(10**6), r"'f' indexes vertices"),
        ("kintree_table", lambda d: d["kintree_table"][:, ::-1], r"not in kinematic order"),
        ("posedirs", lambda d: np.full_like(d["posedirs"], np.nan), r"'posedirs' holds NaN"),
    ],
)
def test_shape_and_value_mismatches(synth, key, bad, pattern) -> None:
    d = dict(synth)
    d[key] = bad(synth)
    with pytest.raises(CheckpointError, match=pattern):
        normalize_body_model_data(d, source="m.npz")
