"""True streaming for causal recurrent models (VIBE): one step-graph call per new frame.

A step graph (contract role ``step``) takes one frame's features (B, C) and each track's recurrent
state (B, layers, H) and returns that frame's outputs plus the next state. ``RecurrentTracks``
keeps one state per track (zeros for a new track: what the whole-sequence forward starts from),
gathers the tracks that have a new frame into batches of at most ``max_batch``, calls the backend
once per batch and scatters the next states back. The cost per frame is one GRU step, instead of
re-running a T-frame window for every new frame.

Any backend with ``infer(feed: dict[str, ndarray]) -> dict[str, ndarray]`` works (ONNX Runtime,
TensorRT); the caller activates it. Torch-free; Python 3.9.
"""

from __future__ import annotations

from typing import Any, Dict, Hashable, List, Mapping, Optional, Tuple

import numpy as np

from hmr_trt.errors import ConfigError, InputSpecError


class RecurrentTracks:
    """Per-track recurrent state for a step graph, batched across tracks.

    ``features``/``hidden``/``next_hidden``: the step graph's tensor names; ``state_shape``:
    (layers, hidden) of one track's state; ``feature_dim``: C.
    """

    def __init__(self, backend: Any, feature_dim: int, state_shape: Tuple[int, ...], *,
                 features: str = "features", hidden: str = "hidden", next_hidden: str = "next_hidden",
                 max_batch: Optional[int] = None) -> None:
        if max_batch is not None and max_batch < 1:
            raise ConfigError(f"recurrent streaming: max_batch must be >= 1, got {max_batch}")
        self.backend = backend
        self.feature_dim = int(feature_dim)
        self.state_shape = tuple(int(d) for d in state_shape)
        self.names = (features, hidden, next_hidden)
        self.max_batch = max_batch
        self._states: Dict[Hashable, np.ndarray] = {}
        self.frames: Dict[Hashable, int] = {}  # frames stepped per track

    @classmethod
    def from_contract(cls, backend: Any, contract: Any, max_batch: Optional[int] = None) -> RecurrentTracks:
        """From a ``ModelContract`` (or its manifest dict) that has a graph with role ``step``."""
        if isinstance(contract, Mapping):
            from hmr_trt.contract import ModelContract

            contract = ModelContract.from_dict(contract)
        graph = contract.graph_for("step")
        if graph is None:
            raise ConfigError(f"model {contract.name} has no step graph: it cannot stream frame by frame "
                              "(only causal recurrent models such as vibe can); use window streaming")
        feats, hidden = graph.inputs
        next_hidden = next(t for t in graph.outputs if tuple(t.shape[1:]) == tuple(hidden.shape[1:]))
        return cls(backend, int(feats.shape[1]), tuple(hidden.shape[1:]), features=feats.name,
                   hidden=hidden.name, next_hidden=next_hidden.name, max_batch=max_batch)

    # --- per-track state ---------------------------------------------------------------------
    @property
    def tracks(self) -> List[Hashable]:
        return list(self._states)

    def state(self, track: Hashable) -> np.ndarray:
        """The state the next frame of ``track`` will start from (zeros for an unseen track)."""
        return self._states.get(track, np.zeros(self.state_shape, np.float32))

    def end(self, track: Hashable) -> None:
        """Forget a finished track (a later frame with the same id starts a new track)."""
        self._states.pop(track, None)
        self.frames.pop(track, None)

    # --- stepping ----------------------------------------------------------------------------
    def step(self, features: Mapping[Hashable, np.ndarray]) -> Dict[Hashable, Dict[str, np.ndarray]]:
        """One new frame for each track in ``features`` (track -> (C,) features): that frame's
        outputs per track (the step graph's outputs except the state), states advanced."""
        tracks = list(features)
        batch = np.empty((len(tracks), self.feature_dim), np.float32)
        for i, track in enumerate(tracks):
            f = np.asarray(features[track], dtype=np.float32)
            if f.shape != (self.feature_dim,):
                raise InputSpecError(f"recurrent streaming: features of track {track!r} have shape {f.shape}, "
                                     f"expected ({self.feature_dim},): one frame's feature vector")
            batch[i] = f
        results: Dict[Hashable, Dict[str, np.ndarray]] = {}
        size = self.max_batch or max(len(tracks), 1)
        feat_name, hidden_name, next_name = self.names
        for start in range(0, len(tracks), size):
            chunk = tracks[start:start + size]
            feed = {feat_name: batch[start:start + len(chunk)],
                    hidden_name: np.stack([self.state(t) for t in chunk]).astype(np.float32, copy=False)}
            out = self.backend.infer(feed)
            if next_name not in out:
                raise ConfigError(f"recurrent streaming: the step backend returned {sorted(out)}, "
                                  f"expected an output {next_name!r} (the next state)")
            for i, track in enumerate(chunk):
                self._states[track] = np.array(out[next_name][i], dtype=np.float32)
                self.frames[track] = self.frames.get(track, 0) + 1
                results[track] = {k: v[i] for k, v in out.items() if k != next_name}
        return results


def recurrent_step_graph(contract: Any) -> Optional[Any]:
    """The contract's step graph when it carries a recurrent state (features, hidden -> ..., next hidden)
    and the model is causal; None otherwise (no step graph, or the window-as-state one of export/step_graph.py,
    which costs a whole window per step and serves Triton sequences, not ``--emit last``)."""
    graph = contract.graph_for("step") if contract is not None and contract.family == "window" else None
    if graph is None or not contract.causal or len(graph.inputs) != 2:
        return None
    hidden = graph.inputs[1]
    if not any(tuple(t.shape[1:]) == tuple(hidden.shape[1:]) for t in graph.outputs):
        return None
    return graph


class RecurrentStreamer:
    """``--emit last`` for causal recurrent models: the WindowStreamer interface (push / end_track / drain /
    flush returning ``FrameResult``s) over ``RecurrentTracks``. Each frame's result is the model's output
    after every earlier frame of its track (the whole-sequence forward, not a 16-frame window).

    A pushed frame waits until its track has a newer one (or ``drain``/``end_track``/``flush``); then the
    oldest waiting frame of every track steps together: one step-graph call per round, batched across
    tracks (a video delivering each track's frames in turn gives one call per video frame)."""

    def __init__(self, tracks: RecurrentTracks) -> None:
        self.tracks = tracks
        self._pending: Dict[Hashable, List[Tuple[int, np.ndarray]]] = {}
        self._last: Dict[Hashable, int] = {}
        self._ending: List[Hashable] = []
        self.calls = 0

    def push(self, track_id: Hashable, frame_index: int, feature: Any) -> List[Any]:
        last = self._last.get(track_id)
        if last is not None and frame_index <= last:
            raise InputSpecError(f"track {track_id!r} frame {frame_index}: frame indices must increase within a "
                                 f"track, got {frame_index} after {last}")
        self._last[track_id] = int(frame_index)
        queue = self._pending.setdefault(track_id, [])
        queue.append((int(frame_index), np.asarray(feature, dtype=np.float32).reshape(-1)))
        return self._round() if len(queue) > 1 else []  # one step for every waiting track: they stay in step

    def end_track(self, track_id: Hashable) -> List[Any]:
        if track_id not in self._last:
            raise ConfigError(f"end_track({track_id!r}): no open track with that id")
        ready = self.drain()
        self._last.pop(track_id)
        self._pending.pop(track_id, None)
        self.tracks.end(track_id)
        return ready

    def drain(self) -> List[Any]:
        """Step until no frame waits."""
        ready: List[Any] = []
        while any(self._pending.values()):
            ready += self._round()
        return ready

    def _round(self) -> List[Any]:
        """The oldest waiting frame of every track, in one batched step."""
        from .streaming import FrameResult

        heads = {t: q.pop(0) for t, q in self._pending.items() if q}
        out = self.tracks.step({t: f for t, (_, f) in heads.items()})
        self.calls += -(-len(heads) // (self.tracks.max_batch or len(heads)))
        return [FrameResult(t, frame, {k: np.asarray(v) for k, v in out[t].items()}) for t, (frame, _) in heads.items()]

    def flush(self) -> List[Any]:
        ready = self.drain()
        for track_id in list(self._last):
            ready += self.end_track(track_id)
        return ready
