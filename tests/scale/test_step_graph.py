"""The step graph (one frame per request, the window as state) equals the window graph frame by frame.

Checked with the exported ONNX on ONNX Runtime, over long tracks interleaved in one batch, against
windows built here by index arithmetic (an independent definition of the emit modes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hmr_trt.contract import GraphSpec, ModelContract, TensorSpec, smpl_body_graph, window_outputs
from hmr_trt.export import onnx_export
from hmr_trt.export.step_graph import START, STATE, STATE_OUT, WindowStep, step_delay, step_graph_spec
from hmr_trt.runtime.backends import OnnxRuntimeBackend

from .conftest import tiny_window_model

T = 16


class MiddleOnly(torch.nn.Module):
    """A window model that emits its middle frame only (as GLoT, TCMR, MPS-Net do)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return tuple(o[:, T // 2:T // 2 + 1] for o in self.model(x))


def contract(emit: str, dim: int) -> ModelContract:
    frames = T if emit == "all" else 1
    model = GraphSpec("temporal", "model", (TensorSpec("features", ("batch", T, dim)),), window_outputs("batch", frames))
    return ModelContract("toy", "window", "toy", (model, smpl_body_graph()), window=T, feature_dim=dim, emit=emit)


def export_step(model: torch.nn.Module, c: ModelContract, path) -> None:
    spec = step_graph_spec(c)
    gen = torch.Generator().manual_seed(0)
    example = (torch.randn(3, c.feature_dim, generator=gen), torch.randn(3, T, c.feature_dim, generator=gen),
               torch.tensor([[1.0], [0.0], [1.0]]))
    onnx_export.onnx_from_module(WindowStep(model, T, c.emit), spec, example, path, max_batch=8)


def expected(model: torch.nn.Module, feats: np.ndarray, emit: str) -> np.ndarray:
    """Per frame: emit "all" -> the window ending at f (front padded with frame 0), last position;
    emit "middle" -> the window centred on f (ends padded with the nearest real frame)."""
    n = len(feats)
    starts = np.arange(n) - (T - 1 if emit == "all" else T // 2)
    windows = feats[np.clip(starts[:, None] + np.arange(T), 0, n - 1)]  # (n, T, C)
    with torch.no_grad():
        pose = model(torch.from_numpy(windows))[0]
    return pose[:, -1 if emit == "all" else 0].numpy()


@pytest.mark.parametrize("emit", ["all", "middle"])
def test_step_graph_fed_frame_by_frame_equals_windows(tmp_path, emit) -> None:
    base, dim = tiny_window_model()
    model = base if emit == "all" else MiddleOnly(base)
    c = contract(emit, dim)
    export_step(model, c, tmp_path / "step.onnx")
    delay = step_delay(c)
    rng = np.random.default_rng(1)
    lengths = {"a": 70, "b": 30, "c": 5}  # long, medium, shorter than the window
    tracks = {k: rng.standard_normal((n, dim)).astype(np.float32) for k, n in lengths.items()}
    got = {k: [] for k in tracks}
    states = {k: np.zeros((T, dim), np.float32) for k in tracks}
    with OnnxRuntimeBackend(tmp_path / "step.onnx") as step:
        for t in range(max(lengths.values()) + delay):
            live = [k for k, n in lengths.items() if t < n + delay]  # then flush: the last frame again
            feed = {"features": np.stack([tracks[k][min(t, lengths[k] - 1)] for k in live]),
                    STATE: np.stack([states[k] for k in live]),
                    START: np.array([[1.0 if t == 0 else 0.0] for k in live], np.float32)}
            out = step.infer(feed)
            for i, k in enumerate(live):
                states[k] = out[STATE_OUT][i]
                if t >= delay:
                    got[k].append(out["pose_rotmat"][i])
    for k, feats in tracks.items():
        want = expected(model, feats, emit)
        assert np.stack(got[k]).shape == want.shape
        np.testing.assert_allclose(np.stack(got[k]), want, atol=2e-5)


def test_step_spec_matches_the_exported_graph(tmp_path) -> None:
    import onnx

    base, dim = tiny_window_model()
    c = contract("all", dim)
    export_step(base, c, tmp_path / "step.onnx")
    spec = step_graph_spec(c)
    graph = onnx.load(str(tmp_path / "step.onnx")).graph
    assert [i.name for i in graph.input] == list(spec.input_names)
    assert [o.name for o in graph.output] == list(spec.output_names)
