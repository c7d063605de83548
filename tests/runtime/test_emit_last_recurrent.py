"""trt-run --emit last on a causal recurrent model (VIBE) steps its step graph once per frame, batched
across tracks, and equals the whole-sequence forward; other emit modes and models keep windows."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from hmr_trt import registry  # noqa: E402
from hmr_trt.runtime.backends_select import open_backends  # noqa: E402
from hmr_trt.runtime.pipeline import RunOptions, run_features  # noqa: E402
from hmr_trt.runtime.recurrent import RecurrentStreamer, RecurrentTracks, recurrent_step_graph  # noqa: E402

LENGTHS = {"0": 150, "1": 40, "2": 5}  # long, medium, shorter than the 16-frame window


@pytest.fixture(scope="module")
def vibe_export(tmp_path_factory):
    from hmr_trt.export.pipeline import ExportOptions, run_export
    from hmr_trt.profile import ShapeProfile

    adapter = registry.adapter("vibe")
    cfg = adapter.tiny_config()
    out = tmp_path_factory.mktemp("vibe") / "export"
    run_export(ExportOptions(out=out, model="vibe", config=cfg, profile=ShapeProfile(1, 4, 8), with_backbone=False,
                             parity_windows=3, build_engines=False))
    return out, adapter.reference(cfg), cfg


def features(cfg) -> dict:
    rng = np.random.default_rng(3)
    return {k: (rng.random((n, cfg.feature_dim)) * 2).astype(np.float32) for k, n in LENGTHS.items()}


def test_emit_last_equals_the_whole_sequence_forward(vibe_export, tmp_path) -> None:
    export_dir, model, cfg = vibe_export
    feats = features(cfg)
    np.savez(tmp_path / "f.npz", **{f"track_{k}": v for k, v in feats.items()})
    run_features(RunOptions(out=tmp_path / "last", export_dir=export_dir, features=tmp_path / "f.npz", emit="last",
                            min_track_frames=1))
    for k, f in feats.items():
        got = np.load(tmp_path / "last" / f"track_{k}.npz")
        with torch.no_grad():
            want = [t[0].numpy() for t in model(torch.from_numpy(f)[None])]  # one sequence, zero initial state
        assert got["pose_rotmat"].shape == want[0].shape
        np.testing.assert_allclose(got["pose_rotmat"], want[0], atol=2e-5)
        np.testing.assert_allclose(got["betas"], want[1], atol=2e-5)
        np.testing.assert_allclose(got["cam"], want[2], atol=2e-5)
    # --emit all keeps the window path: 16-frame windows, so a long track's late frames differ
    run_features(RunOptions(out=tmp_path / "all", export_dir=export_dir, features=tmp_path / "f.npz", emit="all",
                            min_track_frames=1))
    windowed = np.load(tmp_path / "all" / "track_0.npz")["pose_rotmat"]
    last = np.load(tmp_path / "last" / "track_0.npz")["pose_rotmat"]
    assert windowed.shape == last.shape and not np.allclose(windowed[100:], last[100:], atol=1e-4)


def test_tracks_step_together_one_call_per_frame(vibe_export) -> None:
    export_dir, model, cfg = vibe_export
    feats = features(cfg)
    with open_backends(export_dir, "onnxruntime", need_backbone=False, need_step=True) as backends:
        assert backends.step is not None
        streamer = RecurrentStreamer(RecurrentTracks.from_contract(backends.step, backends.contract))
        results = []
        for f in range(max(LENGTHS.values())):  # interleaved as a video delivers them
            for k, x in feats.items():
                if f < len(x):
                    results += streamer.push(k, f, x[f])
        results += streamer.flush()
    assert streamer.calls == max(LENGTHS.values())  # one batched step per frame, not one per track and frame
    assert sorted((r.track_id, r.frame_index) for r in results) == sorted(
        (k, f) for k, n in LENGTHS.items() for f in range(n))
    with torch.no_grad():
        want = model(torch.from_numpy(feats["1"])[None])[0][0].numpy()
    got = np.stack([r.outputs["pose_rotmat"] for r in sorted(results, key=lambda r: r.frame_index)
                    if r.track_id == "1"])
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_only_causal_recurrent_step_graphs_stream(vibe_export) -> None:
    export_dir, _, _ = vibe_export
    from hmr_trt.export.step_graph import step_graph_spec

    vibe = registry.contract("vibe")
    assert recurrent_step_graph(vibe) is not None
    coseg = registry.contract("coseg")
    with_state = coseg.__class__(**{**coseg.__dict__, "graphs": coseg.graphs + (step_graph_spec(coseg),)})
    assert recurrent_step_graph(with_state) is None  # the window-as-state graph: no
    assert recurrent_step_graph(with_state.__class__(**{**vibe.__dict__, "causal": False})) is None
    with open_backends(export_dir, "onnxruntime", need_backbone=False) as backends:
        assert backends.step is None  # --emit center/all: not opened
