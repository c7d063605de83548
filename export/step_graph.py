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

from typing import Tuple

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
