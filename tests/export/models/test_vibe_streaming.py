"""VIBE true streaming: the step graph carried frame by frame equals the whole-sequence forward."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from hmr_trt import registry  # noqa: E402
from hmr_trt.export.models.temporal import random_features  # noqa: E402
from hmr_trt.export.models.vibe.model import VIBEStep  # noqa: E402
from hmr_trt.runtime.backends import OnnxRuntimeBackend  # noqa: E402
from hmr_trt.runtime.recurrent import RecurrentTracks  # noqa: E402

OUTPUTS = ("pose_rotmat", "betas", "cam")
FRAMES = 500


@pytest.fixture(scope="module")
def vibe():
    adapter = registry.adapter("vibe")
    # the plain seeded draw: the step graph's structure is what is tested, at a tight tolerance; the regressor
    # shaped like a trained one (the default) accumulates up to 1.8e-4 of float32 round-off over 250 GRU steps
    cfg = dataclasses.replace(adapter.tiny_config(), trained_like=False)
    return adapter, cfg, adapter.reference(cfg)


@pytest.fixture(scope="module")
def step_onnx(vibe, tmp_path_factory):
    from hmr_trt.engines.preflight import validate_onnx
    from hmr_trt.export.onnx_export import onnx_from_module

    adapter, cfg, model = vibe
    graph = adapter.contract_for(cfg).graph("step")
    path = tmp_path_factory.mktemp("vibe") / "step.onnx"
    spec = graph
    onnx_from_module(adapter.exportable(model, "step"), spec, adapter.example_inputs(cfg, "step", 2), path)
    validate_onnx(path)
    return path


def long_tracks(cfg, tracks: int = 3, frames: int = FRAMES) -> torch.Tensor:
    return random_features(torch.Generator().manual_seed(7), tracks, frames, cfg.feature_dim)


def test_torch_step_by_step_equals_the_whole_sequence(vibe):
    adapter, cfg, model = vibe
    x = long_tracks(cfg)  # (3, 500, C)
    with torch.no_grad():
        whole = model(x)
        step = VIBEStep(model).eval()
        hidden = torch.zeros(x.shape[0], cfg.n_layers, cfg.hidden)
        steps = []
        for t in range(x.shape[1]):
            *outs, hidden = step(x[:, t], hidden)
            steps.append(outs)
    for i, (name, ref) in enumerate(zip(OUTPUTS, whole)):
        got = torch.stack([s[i] for s in steps], dim=1)  # (3, 500, ...)
        # float32 round-off of a fused sequence GRU vs 500 single steps; it does not grow along the track
        np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-4, rtol=1e-4, err_msg=name)
        late = (got[:, -50:] - ref[:, -50:]).abs().max().item()
        assert late < 1e-4, (name, late)


def test_step_graph_in_onnx_runtime_matches_torch_at_batch_1_2_7(vibe, step_onnx):
    adapter, cfg, model = vibe
    features, hidden = adapter.example_inputs(cfg, "step", 7, seed=3)
    with torch.no_grad():
        ref = [t.numpy() for t in VIBEStep(model)(features, hidden)]
    with OnnxRuntimeBackend(step_onnx) as backend:
        for batch in (1, 2, 7):
            got = backend.infer({"features": features[:batch].numpy(), "hidden": hidden[:batch].numpy()})
            for name, r in zip(OUTPUTS + ("next_hidden",), ref):
                np.testing.assert_allclose(got[name], r[:batch], atol=2e-5, rtol=1e-5, err_msg=f"{name} @ {batch}")


def test_recurrent_tracks_on_the_onnx_step_graph_equal_the_whole_sequence(vibe, step_onnx):
    """Three tracks over 500 frames, starting and ending at different frames, batched per frame
    (at most 2 per call), each equal frame by frame to its own whole-sequence forward."""
    adapter, cfg, model = vibe
    x = long_tracks(cfg).numpy()
    spans = {"a": (0, FRAMES), "b": (40, FRAMES), "c": (5, 300)}  # track -> [first, end) frame of the video
    outputs = {k: {n: [] for n in OUTPUTS} for k in spans}
    with OnnxRuntimeBackend(step_onnx) as backend:
        tracks = RecurrentTracks.from_contract(backend, adapter.contract_for(cfg), max_batch=2)
        for frame in range(FRAMES):
            live = {k: x[i, frame - s] for i, (k, (s, e)) in enumerate(spans.items()) if s <= frame < e}
            for k, out in tracks.step(live).items():
                for n in OUTPUTS:
                    outputs[k][n].append(out[n])
            if frame == spans["c"][1] - 1:
                tracks.end("c")
    assert sorted(tracks.tracks) == ["a", "b"] and tracks.frames["a"] == FRAMES
    with torch.no_grad():
        for i, (k, (s, e)) in enumerate(spans.items()):
            whole = model(torch.from_numpy(x[i:i + 1, : e - s]))
            for n, ref in zip(OUTPUTS, whole):
                got = np.stack(outputs[k][n])
                assert got.shape[0] == e - s
                np.testing.assert_allclose(got, ref[0].numpy(), atol=5e-5, rtol=1e-4, err_msg=f"track {k} {n}")
