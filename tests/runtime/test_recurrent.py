"""runtime.recurrent without torch: per-track states, batching, errors (a numpy step backend)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from hmr_trt.contract import GraphSpec, ModelContract, TensorSpec, window_outputs
from hmr_trt.errors import ConfigError, InputSpecError
from hmr_trt.runtime.recurrent import RecurrentTracks


class CountingStep:
    """h' = 0.5 h + x (broadcast over layers); out = sum of h'. Records batch sizes."""

    def __init__(self) -> None:
        self.batches = []

    def infer(self, feed):
        x, h = feed["features"], feed["hidden"]
        self.batches.append(x.shape[0])
        nxt = 0.5 * h + x[:, None, :]
        return {"total": nxt.sum(axis=(1, 2)), "next_hidden": nxt}


def reference(xs):
    h = np.zeros((2, 3))
    out = []
    for x in xs:
        h = 0.5 * h + x[None]
        out.append(h.sum())
    return out


def test_states_are_carried_per_track_and_batched():
    backend = CountingStep()
    tracks = RecurrentTracks(backend, feature_dim=3, state_shape=(2, 3), max_batch=2)
    rng = np.random.default_rng(0)
    xs = {k: rng.random((6, 3)).astype(np.float32) for k in ("a", "b", "c")}
    got = {k: [] for k in xs}
    start = {"a": 0, "b": 0, "c": 2}  # c starts at frame 2
    for t in range(6):
        live = {k: v[t - start[k]] for k, v in xs.items() if t >= start[k]}
        for k, out in tracks.step(live).items():
            got[k].append(float(out["total"]))
    for k in xs:
        np.testing.assert_allclose(got[k], reference(xs[k][: len(got[k])]), rtol=1e-6)
    assert max(backend.batches) == 2 and sum(backend.batches) == 6 + 6 + 4
    tracks.end("a")
    assert sorted(tracks.tracks) == ["b", "c"]
    np.testing.assert_array_equal(tracks.state("a"), np.zeros((2, 3)))  # a new track "a" starts from zeros


def test_bad_features_and_contracts_fail_clearly():
    tracks = RecurrentTracks(CountingStep(), feature_dim=3, state_shape=(2, 3))
    with pytest.raises(InputSpecError, match=r"track 'x' have shape \(4,\), expected \(3,\)"):
        tracks.step({"x": np.zeros(4)})
    window = ModelContract("w", "window", "", (GraphSpec("temporal", "model", (TensorSpec("features", ("batch", 4, 3)),),
                                                        window_outputs("batch", 1)),), window=4, feature_dim=3)
    with pytest.raises(ConfigError, match="has no step graph"):
        RecurrentTracks.from_contract(CountingStep(), window.to_dict())
    with pytest.raises(ConfigError, match="max_batch must be >= 1"):
        RecurrentTracks(CountingStep(), 3, (2, 3), max_batch=0)


def test_imports_without_torch():
    code = "import sys, hmr_trt.runtime.recurrent; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
