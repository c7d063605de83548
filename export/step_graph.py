"""The step graph of a window model: one frame in, one frame out, the window kept as state.

For serving many live tracks (Triton's sequence batcher with implicit state, ``engines/triton_repo.py``):
inputs ``features`` (B, C) (one new frame per track), ``state`` (B, T, C) (the track's last T frames)
and ``start`` (B, 1) (1.0 on a track's first frame); outputs that step's SMPL parameters and
``state_out`` (B, T, C). On ``start`` the window is filled with the first frame (the nearest real
frame, as ``--emit last`` pads the front); otherwise it shifts by one and appends the new frame.
The window model then runs on the state, and the step emits:
- emit "all" models (every window position): position T - 1, the causal ``--emit last`` result for the
  frame just sent;
- emit "middle" models (position T // 2): the ``--emit center`` result for the frame sent
  T - 1 - T // 2 steps earlier (7 for T = 16; windows padded at the start with the track's first frame,
  at its end by sending the last frame again that many times).
The state is the window itself, so a step costs one window forward (the graph is the window graph with
a shift in front): it saves the client's buffering and the upload of T frames per request, not compute.
Recurrent causal models (VIBE) carry their GRU state instead (their own step graph).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Dict, Tuple

import numpy as np
import torch
from torch import nn

from hmr_trt.contract import GraphSpec, ModelContract, TensorSpec

STATE, STATE_OUT, START = "state", "state_out", "start"


def step_delay(contract: ModelContract) -> int:
    """Steps between sending a frame and receiving its result (0 for emit "all": causal)."""
    return 0 if contract.emit == "all" else contract.window - 1 - contract.window // 2


def step_graph_spec(contract: ModelContract) -> GraphSpec:
    """The step graph's contract entry, from the window model's graph."""
    model = contract.model_graph
    t, c = contract.window, contract.feature_dim
    outs = tuple(TensorSpec(s.name, ("batch",) + tuple(s.shape[2:]), s.dtype) for s in model.outputs)
    return GraphSpec("step", "step",
                     (TensorSpec("features", ("batch", c)), TensorSpec(STATE, ("batch", t, c)),
                      TensorSpec(START, ("batch", 1))),
                     outs + (TensorSpec(STATE_OUT, ("batch", t, c)),))


class WindowStep(nn.Module):
    """features (B, C), state (B, T, C), start (B, 1) -> the window model's outputs for one frame, state_out."""

    def __init__(self, model: nn.Module, window: int, emit: str) -> None:
        super().__init__()
        self.model, self.window = model, window
        self.position = window - 1 if emit == "all" else 0  # index into the window graph's output frames

    def forward(self, features: torch.Tensor, state: torch.Tensor, start: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        new = features[:, None, :]  # (B, 1, C)
        shifted = torch.cat([state[:, 1:], new], dim=1)  # (B, T, C)
        first = new.expand(-1, self.window, -1)  # (B, T, C): a fresh track, padded with its first frame
        gate = start[:, :, None]  # (B, 1, 1), 1.0 or 0.0
        window = gate * first + (1.0 - gate) * shifted
        outputs = self.model(window)  # each (B, T_out, ...)
        return tuple(o[:, self.position] for o in outputs) + (window,)


# --- in trt-export ---------------------------------------------------------------------------------
# A window-as-state step graph holds the window graph's weights again (a second ONNX as large as the
# first) and saves no compute; trt-export adds it by default only below this many bytes of weights
# (coseg's 623 MB temporal graph would double the export), and always with --step.
AUTO_STEP_MAX_BYTES = 100 * 2**20


def weight_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def is_window_step(graph: GraphSpec) -> bool:
    """The generic step graph (window as state), as opposed to a model's own (VIBE's GRU step)."""
    return graph.role == "step" and STATE in graph.input_names


def with_step_graph(contract: ModelContract, reference: nn.Module, step: bool | None) -> Tuple[ModelContract, str]:
    """The exported contract with or without a step graph, and a note saying which and why.
    ``step``: True (always), False (never), None (a model's own step graph; the generic one for window
    models under ``AUTO_STEP_MAX_BYTES`` of weights)."""
    own = contract.graph_for("step")
    if step is False:
        graphs = tuple(g for g in contract.graphs if g.role != "step")
        return replace(contract, graphs=graphs), "step graph: none (--no-step)"
    if contract.family != "window":
        return contract, ""
    if own is not None:
        return contract, f"step graph: the model's own ({', '.join(own.input_names)} in)"
    size = weight_bytes(reference)
    if step is None and size > AUTO_STEP_MAX_BYTES:
        return contract, (f"step graph: not exported ({size / 2**20:.0f} MB of weights > "
                          f"{AUTO_STEP_MAX_BYTES / 2**20:.0f} MB; pass --step to add it)")
    return replace(contract, graphs=contract.graphs + (step_graph_spec(contract),)), (
        f"step graph: the window as state (features, state, start in; delay {step_delay(contract)} steps)")


def step_module(adapter: Any, reference: nn.Module, contract: ModelContract, cfg: Any,
                batch: int) -> Tuple[nn.Module, Tuple[torch.Tensor, ...]]:
    """The module and example inputs that export the contract's step graph."""
    graph = contract.graph_for("step")
    if not is_window_step(graph):
        return adapter.exportable(reference, graph.name), adapter.example_inputs(cfg, graph.name, batch)
    model_graph = contract.model_graph
    window = adapter.example_inputs(cfg, model_graph.name, batch)[0]  # (B, T, C)
    start = torch.zeros(batch, 1)
    start[0] = 1.0  # both branches of the gate traced with live values
    module = WindowStep(adapter.exportable(reference, model_graph.name), contract.window, contract.emit)
    return module, (window[:, -1], window, start)


def step_parity(run_step: Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]], body: Any,
                windows: Dict[str, np.ndarray], references: Dict[str, Any], contract: ModelContract,
                goal_mm: float) -> Dict[str, Any]:
    """The exported step graph fed each parity window frame by frame (all windows of a set in one batch),
    against the torch window model's outputs for that window, in mm through the body-model graph.

    Window as state: after the T-th frame the state is the window, and the step's outputs are the window
    model's (position T - 1 for emit "all", the middle for emit "middle"). Recurrent (VIBE): from a zero
    state, step k's outputs are the window forward's frame k, for every k."""
    from hmr_trt.mesh import drift_mm, meshes

    graph = contract.graph_for("step")
    generic = is_window_step(graph)
    sets: Dict[str, Any] = {}
    failures = []
    for name, w in windows.items():
        w = np.asarray(w, np.float32)  # (W, T, C)
        n, t = w.shape[:2]
        ref = references[name]
        steps = []
        if generic:
            state = np.zeros_like(w)
            for k in range(t):
                start = np.full((n, 1), 1.0 if k == 0 else 0.0, np.float32)
                out = run_step({"features": w[:, k], STATE: state, START: start})
                state = out.pop(STATE_OUT)
            positions = [ref.vertices.shape[1] - 1 if contract.emit == "all" else 0]
            steps = [out]
        else:
            hidden_in, next_name = graph.inputs[1], graph.outputs[-1].name
            hidden = np.zeros((n,) + tuple(int(d) for d in hidden_in.shape[1:]), np.float32)
            for k in range(t):
                out = run_step({graph.inputs[0].name: w[:, k], hidden_in.name: hidden})
                hidden = out.pop(next_name)
                steps.append(out)
            positions = list(range(t))
        got = {k: np.stack([s[k] for s in steps], axis=1) for k in steps[0]}  # (W, len(positions), ...)
        want = {k: v[:, positions] for k, v in ref.outputs.items()}
        verts, _ = meshes(body, got, contract)
        mean, worst = drift_mm(verts, ref.vertices[:, positions])
        max_abs = {k: float(np.abs(got[k].astype(np.float64) - want[k]).max()) for k in want}
        sets[name] = {"windows": int(n), "steps_per_window": int(t), "frames_compared": int(n * len(positions)),
                      "vertices_mean_mm": mean, "vertices_max_mm": worst, "max_abs": max_abs}
        if mean > goal_mm:
            failures.append(f"step graph on {name} windows: mean vertex drift {mean:.3g} mm over the goal {goal_mm:g} mm")
    kind = "window as state" if generic else "recurrent state"
    return {"kind": kind, "goal_mean_vertex_mm": goal_mm, "sets": sets, "failures": failures}
