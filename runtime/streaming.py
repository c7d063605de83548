"""Feature-window streaming: per-track ring buffers -> windows of T frames -> batched backend calls.

Frames arrive one at a time per track (``push(track_id, frame_index, feature)``), interleaved
across tracks in any order; a track ends with ``end_track`` (``flush`` ends them all). Each
window is T consecutive frames of one track (T from the backend's input, default 16); each
emitted frame takes the output at its own position in one window. Three ``emit`` modes, drawn
for T = 4 (middle index T//2 = 2) and a track of 6 frames (``.`` = a padded repeat):

  center: frame f from the window whose middle is f; at the ends, the T nearest REAL frames
          (the first / last T frames of the track), f at its own position in that window.
          window [0,4)  0 1 2 3       -> frames 0, 1, 2  (positions 0, 1, 2)  when frame 3 arrives
          window [1,5)    1 2 3 4     -> frame 3         (position 2)         when frame 4 arrives
          window [2,6)      2 3 4 5   -> frame 4 (pos. 2) when 5 arrives; frame 5 (pos. 3) at end_track
          A frame's result needs T - 1 - T//2 future frames (7 for T = 16) or the track's end.
  last:   causal, no look-ahead: frame f from the window ending at f, f at the last position;
          before frame T-1 the front is padded with frame 0 (the nearest real frame).
          0: .0 .0 .0 0   1: .0 .0 0 1   2: .0 0 1 2   3: 0 1 2 3   4: 1 2 3 4   5: 2 3 4 5
  all:    non-overlapping windows [0,T), [T,2T), ...; every frame at its own position; the last,
          partial window is padded with the track's last frame; only real frames are emitted.
          [0 1 2 3] -> frames 0-3 when frame 3 arrives;  [4 5 .5 .5] -> frames 4, 5 at end_track

Tracks shorter than T (n < T frames), all modes resolve at ``end_track``: ``center`` runs one
window, the track centred and padded with its edge frames: ``lead = (T - n) // 2`` copies of frame
0 (those before it), the n frames, then copies of the last frame (n=2, T=4: ``.0 0 1 .1``, frame f
at position lead + f); ``last`` and ``all`` follow their rules above (front / back padding).

Models whose contract says emit "middle" (GLoT, TCMR, MPS-Net) output only position T//2 of a
window (T_out = 1): only ``center`` is possible; frame f comes from the window whose middle is f,
at the track ends padded with the nearest real frames (edge frames repeated, f stays at T//2).
``last``/``all`` with such a model is refused.

``border``: ``nearest`` (default, above) or ``repeat``, the official demos' (TCMR, MPS-Net, GLoT):
in ``center`` mode the frames without T//2 real frames before them or T-1-T//2 after them (frames
0-7 and the last 7 for T = 16) come from a window of that frame's feature repeated T times (read
at position T//2).

Windows from all tracks queue in arrival order and run in batches of up to ``max_batch`` (the
backend's limit, or a smaller one given here); results are routed back per (track, frame). A
backend with ``submit(feed) -> handle`` and ``collect(handle) -> outputs`` (the TensorRT backend's
double buffering) keeps at most two batches in flight, collected in submission order.

``offline_results`` builds the same windows for whole tracks with plain index arithmetic (an
independent code path); streaming and offline results agree frame by frame: exactly with a
backend whose rows do not depend on the batch, and to float rounding (~1e-7 with ONNX Runtime
on the CPU) where the batch size changes the kernels.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from hmr_trt.errors import ConfigError, HmrTrtError, InputSpecError

__all__ = ["BORDERS", "EMIT_MODES", "OUTPUT_NAMES", "StreamSpec", "FrameResult", "StreamStats", "WindowStreamer", "check_emit", "offline_results",
           "stack_by_track", "window_for_frame", "windows_from_track"]

EMIT_MODES = ("center", "last", "all")
BORDERS = ("nearest", "repeat")
DEFAULT_WINDOW = 16  # T when the backend's input leaves the window axis dynamic
DEFAULT_MAX_BATCH = 64  # windows per call when neither the backend nor the caller sets a limit
MAX_IN_FLIGHT = 2  # double buffering: one batch computing while the next one is copied
OUTPUT_NAMES = ("pose_rotmat", "betas", "cam")  # the window outputs when no contract is given

TrackId = Hashable


@dataclass(frozen=True)
class FrameResult:
    """The network's output for one frame of one track (float32 numpy arrays, named by the contract's
    model-graph outputs); ``result.pose_rotmat`` etc. read ``outputs``."""

    track_id: TrackId
    frame_index: int
    outputs: Dict[str, np.ndarray]  # e.g. pose_rotmat (24, 3, 3), betas (10,), cam (3,)

    def __getattr__(self, name: str) -> np.ndarray:
        outputs = self.__dict__.get("outputs")
        if outputs is not None and name in outputs:
            return outputs[name]
        raise AttributeError(name)


@dataclass(frozen=True)
class StreamSpec:
    """What the streamer needs from the model contract: output names, which positions a window emits."""

    outputs: Tuple[str, ...] = OUTPUT_NAMES
    model_emit: str = "all"  # "all": (B, T, ...) outputs; "middle": (B, 1, ...) for position T//2
    model: str = "the model"

    @classmethod
    def from_contract(cls, contract: Any) -> StreamSpec:
        if contract.family != "window":
            raise ConfigError(f"model {contract.name} is a {contract.family} model: window streaming needs a "
                              "window model")
        return cls(contract.model_graph.output_names, contract.emit, contract.name)


@dataclass
class StreamStats:
    windows: int = 0  # windows run through the backend
    calls: int = 0  # backend calls (infer or submit)
    frames_emitted: int = 0
    max_in_flight: int = 0  # most batches submitted and not yet collected

    @property
    def mean_batch(self) -> float:
        return self.windows / self.calls if self.calls else 0.0


# ---------------------------------------------------------------------------------------------
# configuration shared by the streaming and offline paths


def check_emit(emit: str, spec: Optional[StreamSpec] = None, border: str = "nearest") -> str:
    if emit not in EMIT_MODES:
        raise ConfigError(f"emit mode must be one of {', '.join(EMIT_MODES)}, got {emit!r}")
    if border not in BORDERS:
        raise ConfigError(f"border must be one of {', '.join(BORDERS)}, got {border!r}")
    if spec is not None and spec.model_emit == "middle" and emit != "center":
        raise ConfigError(f"--emit {emit} is not possible with {spec.model}: it outputs only the middle frame "
                          "(T//2) of each window; use --emit center")
    return emit


@dataclass(frozen=True)
class _Geometry:
    input_name: str
    window: int  # T
    feature_dim: int  # D
    max_batch: int


def _geometry(backend: Any, window: Optional[int], max_batch: Optional[int]) -> _Geometry:
    """T, D and the batch limit from the backend's input spec ``(batch, T, D)`` and the caller's limits."""
    inputs = getattr(backend, "inputs", None)
    if not inputs:
        raise HmrTrtError("the backend has no input spec: use the streamer inside 'with backend:'")
    spec = inputs[0]
    if len(spec.shape) != 3:
        raise InputSpecError(f"input '{spec.name}' has shape {spec.pretty()}, expected (batch, T, features)")
    spec_t, spec_d = spec.shape[1], spec.shape[2]
    if not isinstance(spec_d, int) or spec_d < 1:
        raise InputSpecError(f"input '{spec.name}' {spec.pretty()} leaves the feature width dynamic")
    if isinstance(spec_t, int) and spec_t > 0:
        if window is not None and window != spec_t:
            raise ConfigError(f"window {window} does not match the backend's input '{spec.name}' {spec.pretty()}")
        window = spec_t
    window = DEFAULT_WINDOW if window is None else window
    if window < 1:
        raise ConfigError(f"window must be >= 1, got {window}")
    if max_batch is not None and max_batch < 1:
        raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
    limits = [b for b in (max_batch, getattr(backend, "max_batch", None)) if b is not None]
    return _Geometry(spec.name, window, spec_d, min(limits) if limits else DEFAULT_MAX_BATCH)


def _as_feature(feature: Any, geo: _Geometry, what: str) -> np.ndarray:
    try:
        x = np.asarray(feature, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputSpecError(f"{what}: feature is not numeric ({type(feature).__name__})") from exc
    if x.shape != (geo.feature_dim,):
        raise InputSpecError(f"{what}: feature has shape {x.shape}, expected ({geo.feature_dim},) "
                             f"(the width of the backend's input '{geo.input_name}')")
    return x


def _results_from_outputs(outputs: Mapping[str, np.ndarray], batch: int, frames: int,
                          names: Sequence[str] = OUTPUT_NAMES) -> Dict[str, np.ndarray]:
    missing = [n for n in names if n not in outputs]
    if missing:
        raise HmrTrtError(f"the backend returned {sorted(outputs)}; missing {missing}")
    for name in names:
        if outputs[name].shape[:2] != (batch, frames):
            raise HmrTrtError(f"output '{name}' has shape {outputs[name].shape}, expected ({batch}, {frames}, ...)")
    return {n: outputs[n] for n in names}


def _frame_result(track_id: TrackId, frame_index: int, out: Mapping[str, np.ndarray], b: int, p: int) -> FrameResult:
    """Row b, output frame p of a batch's outputs -> one frame's record (copies, not views)."""
    return FrameResult(track_id, int(frame_index), {n: np.array(v[b, p], dtype=np.float32) for n, v in out.items()})


def _out_index(spec: StreamSpec, position: int) -> int:
    """Where window position ``position`` sits in the outputs: itself (emit "all"), or 0 (emit "middle")."""
    return position if spec.model_emit == "all" else 0


def _is_border(f: int, n: int, t: int) -> bool:
    """Frame ordinal f of a track of n frames lacks T//2 frames before or T-1-T//2 after it."""
    return f < t // 2 or f > n - 1 - (t - 1 - t // 2)


# ---------------------------------------------------------------------------------------------
# streaming


class _Window:
    """One queued window: its T feature rows, the frame index at each position, the positions to emit."""

    def __init__(self, track_id: TrackId, features: np.ndarray, frames: np.ndarray, emit: Sequence[int],
                 keep: bool = False) -> None:
        self.track_id = track_id
        self.features = features  # (T, D)
        self.frames = frames  # (T,) frame index at each position (padding repeats a real frame's)
        self.emit = list(emit)  # may grow until the window's batch is routed (center mode, end_track)
        self.keep = keep  # keep this window's outputs after routing (center: the track's last window)
        self.outputs: Optional[Dict[str, np.ndarray]] = None  # (T, ...) per output, once routed


class _Track:
    """A ring buffer of the last T frames of one track; ``count`` frames pushed so far."""

    def __init__(self, window: int, feature_dim: int) -> None:
        self.features = np.zeros((window, feature_dim), dtype=np.float32)  # (T, D)
        self.frames = np.zeros(window, dtype=np.int64)
        self.count = 0
        self.last_window: Optional[_Window] = None

    def append(self, frame_index: int, feature: np.ndarray) -> None:
        slot = self.count % len(self.frames)
        self.features[slot], self.frames[slot] = feature, frame_index
        self.count += 1

    def rows(self, ordinals: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Features and frame indices of the given frame ordinals (all within the last T frames)."""
        slots = ordinals % len(self.frames)
        return self.features[slots], self.frames[slots]


class WindowStreamer:
    """Streams per-frame features of many tracks into batched windows; see the module docstring.

    Use it inside ``with backend:``. ``push``, ``end_track``, ``drain`` and ``flush`` return the
    frame results that became ready (possibly none); each frame of each track is returned once, in
    frame order per track. Windows wait until ``max_batch`` of them are queued; ``drain`` runs the
    queue now (call it once per video frame for the lowest latency), ``flush`` ends every track.
    A track id may be reused after ``end_track``: it then starts a new track.
    """

    def __init__(self, backend: Any, emit: str = "center", window: Optional[int] = None,
                 max_batch: Optional[int] = None, double_buffer: Optional[bool] = None, *,
                 spec: Optional[StreamSpec] = None, border: str = "nearest") -> None:
        self.backend = backend
        self.spec = spec or StreamSpec()
        self.emit = check_emit(emit, self.spec, border)
        self.border = border
        self.geo = _geometry(backend, window, max_batch)
        self.window = self.geo.window
        self.max_batch = self.geo.max_batch
        can_submit = callable(getattr(backend, "submit", None)) and callable(getattr(backend, "collect", None))
        if double_buffer and not can_submit:
            raise ConfigError(f"double_buffer=True needs a backend with submit/collect; {type(backend).__name__} has none")
        self.double_buffer = can_submit if double_buffer is None else double_buffer
        self.stats = StreamStats()
        self._tracks: Dict[TrackId, _Track] = {}
        self._last_frame: Dict[TrackId, int] = {}
        self._queue: List[_Window] = []
        self._in_flight: Deque[Tuple[Any, List[_Window]]] = deque()
        self._ready: List[FrameResult] = []

    # -- public API ---------------------------------------------------------------------------

    @property
    def open_tracks(self) -> List[TrackId]:
        return list(self._tracks)

    def push(self, track_id: TrackId, frame_index: int, feature: Any) -> List[FrameResult]:
        """Add one frame of one track; frame indices must increase within a track (gaps are fine)."""
        what = f"track {track_id!r} frame {frame_index}"
        x = _as_feature(feature, self.geo, what)
        track = self._tracks.get(track_id)
        if track is not None and frame_index <= self._last_frame[track_id]:
            raise InputSpecError(f"{what}: frame indices must increase within a track, "
                                 f"got {frame_index} after {self._last_frame[track_id]}")
        if track is None:
            track = self._tracks[track_id] = _Track(self.window, self.geo.feature_dim)
        track.append(int(frame_index), x)
        self._last_frame[track_id] = int(frame_index)
        self._queue_on_arrival(track_id, track)
        self._run_full_batches()
        return self._take_ready()

    def end_track(self, track_id: TrackId) -> List[FrameResult]:
        """The track has no more frames: queue its end windows (center/all) and forget it."""
        track = self._tracks.pop(track_id, None)
        if track is None:
            raise ConfigError(f"end_track({track_id!r}): no open track with that id")
        self._last_frame.pop(track_id)
        self._queue_at_end(track_id, track)
        self._run_full_batches()
        return self._take_ready()

    def drain(self) -> List[FrameResult]:
        """Run every queued window now (partial batches too) and wait for the batches in flight."""
        while self._queue:
            self._run_batch(self._queue[: self.max_batch])
            del self._queue[: self.max_batch]
        while self._in_flight:
            self._collect_oldest()
        return self._take_ready()

    def flush(self) -> List[FrameResult]:
        """End every open track (in the order they started) and drain."""
        ready: List[FrameResult] = []
        for track_id in list(self._tracks):
            ready += self.end_track(track_id)
        return ready + self.drain()

    # -- windows --------------------------------------------------------------------------------

    def _queue_on_arrival(self, track_id: TrackId, track: _Track) -> None:
        t, n, h = self.window, track.count, self.window // 2
        if self.emit == "last":  # the window ending at the new frame, front padded with frame 0
            ordinals = np.maximum(np.arange(n - t, n), 0)
            self._enqueue(track_id, track, ordinals, [t - 1])
        elif self.emit == "all" and n % t == 0:  # a full block [n-T, n)
            self._enqueue(track_id, track, np.arange(n - t, n), range(t))
        elif self.emit == "center":
            repeat = self.border == "repeat"
            if repeat and n - 1 < h:  # a leading border frame: its own feature T times
                self._enqueue(track_id, track, np.full(t, n - 1), [h])
            if self.spec.model_emit == "middle":
                f = n - 1 - (t - 1 - h)  # the frame whose T-1-T//2 future frames are all here now
                if f >= 0 and not (repeat and f < h):
                    self._enqueue(track_id, track, np.clip(np.arange(f - h, f - h + t), 0, n - 1), [h])
            elif n >= t:  # window [n-T, n) has frame n-T+T//2 in its middle
                first = 0 if n == t and not repeat else h  # the first window also serves the frames before it
                track.last_window = self._enqueue(track_id, track, np.arange(n - t, n), range(first, h + 1),
                                                  keep=True)

    def _queue_at_end(self, track_id: TrackId, track: _Track) -> None:
        t, n, h = self.window, track.count, self.window // 2
        if self.emit == "all" and n % t:  # the partial last block, padded with the last frame
            start = n - n % t
            self._enqueue(track_id, track, np.minimum(np.arange(start, start + t), n - 1), range(n - start))
        elif self.emit == "center" and self.border == "repeat":  # trailing border frames: own feature T times
            for f in range(max(h, n - (t - 1 - h)), n):
                self._enqueue(track_id, track, np.full(t, f), [h])
        elif self.emit == "center" and self.spec.model_emit == "middle":  # edge frames repeated, f at T//2
            for f in range(max(0, n - (t - 1 - h)), n):
                self._enqueue(track_id, track, np.clip(np.arange(f - h, f - h + t), 0, n - 1), [h])
        elif self.emit == "center" and n >= t:  # the frames after the last window's middle
            self._emit_from(track.last_window, range(h + 1, t))
        elif self.emit == "center":  # a short track, centred, padded with its edge frames
            lead = (t - n) // 2
            self._enqueue(track_id, track, np.clip(np.arange(t) - lead, 0, n - 1), range(lead, lead + n))

    def _enqueue(self, track_id: TrackId, track: _Track, ordinals: np.ndarray, emit: Sequence[int],
                 keep: bool = False) -> _Window:
        features, frames = track.rows(ordinals)
        window = _Window(track_id, features, frames, emit, keep)
        self._queue.append(window)
        return window

    def _emit_from(self, window: Optional[_Window], positions: Sequence[int]) -> None:
        """Emit more positions of an already queued window: now if it has run, else when it does."""
        if window is None:
            return
        if window.outputs is None:
            window.emit.extend(positions)
            return
        out = {n: v[None] for n, v in window.outputs.items()}  # (1, T, ...)
        self._ready.extend(_frame_result(window.track_id, window.frames[p], out, 0, _out_index(self.spec, p))
                           for p in positions)
        window.outputs = None  # the track has ended; nothing else reads this window

    # -- batches ----------------------------------------------------------------------------------

    def _run_full_batches(self) -> None:
        while len(self._queue) >= self.max_batch:
            self._run_batch(self._queue[: self.max_batch])
            del self._queue[: self.max_batch]

    def _run_batch(self, windows: List[_Window]) -> None:
        feed = {self.geo.input_name: np.stack([w.features for w in windows])}  # (B, T, D)
        self.stats.calls += 1
        self.stats.windows += len(windows)
        if not self.double_buffer:
            self.stats.max_in_flight = max(self.stats.max_in_flight, 1)
            self._route(windows, self.backend.infer(feed))
            return
        while len(self._in_flight) >= MAX_IN_FLIGHT:
            self._collect_oldest()
        self._in_flight.append((self.backend.submit(feed), windows))
        self.stats.max_in_flight = max(self.stats.max_in_flight, len(self._in_flight))

    def _collect_oldest(self) -> None:
        handle, windows = self._in_flight.popleft()
        self._route(windows, self.backend.collect(handle))

    def _route(self, windows: List[_Window], outputs: Mapping[str, np.ndarray]) -> None:
        frames = self.window if self.spec.model_emit == "all" else 1
        out = _results_from_outputs(outputs, len(windows), frames, self.spec.outputs)
        for b, w in enumerate(windows):
            self._ready.extend(_frame_result(w.track_id, w.frames[p], out, b, _out_index(self.spec, p)) for p in w.emit)
            if w.keep:
                w.outputs = {n: np.array(v[b]) for n, v in out.items()}

    def _take_ready(self) -> List[FrameResult]:
        ready, self._ready = self._ready, []
        self.stats.frames_emitted += len(ready)
        return ready


# ---------------------------------------------------------------------------------------------
# offline reference: whole tracks, windows by index arithmetic


def window_for_frame(f: int, n: int, window: int, emit: str, model_emit: str = "all",
                     border: str = "nearest") -> Tuple[Tuple[int, ...], int]:
    """The frame ordinals making up frame f's window (track of n frames) and f's position in it."""
    t = window
    if emit == "center" and border == "repeat" and _is_border(f, n, t):
        return (f,) * t, t // 2
    if emit == "center" and model_emit == "middle":
        return tuple(min(max(f - t // 2 + k, 0), n - 1) for k in range(t)), t // 2
    if emit == "center" and n >= t:
        start = min(max(f - t // 2, 0), n - t)
        return tuple(range(start, start + t)), f - start
    if emit == "center":
        lead = (t - n) // 2
        return tuple(min(max(k - lead, 0), n - 1) for k in range(t)), f + lead
    if emit == "last":
        return tuple(max(f - t + 1 + k, 0) for k in range(t)), t - 1
    if emit == "all":
        start = f - f % t
        return tuple(min(start + k, n - 1) for k in range(t)), f - start
    raise ConfigError(f"emit mode must be one of {', '.join(EMIT_MODES)}, got {emit!r}")


def windows_from_track(n: int, window: int, emit: str, model_emit: str = "all",
                       border: str = "nearest") -> List[Tuple[Tuple[int, ...], List[Tuple[int, int]]]]:
    """Distinct windows of a track of n frames, in order: (ordinals, [(frame ordinal, position), ...])."""
    plan: Dict[Tuple[int, ...], List[Tuple[int, int]]] = {}
    for f in range(n):
        ordinals, position = window_for_frame(f, n, window, emit, model_emit, border)
        plan.setdefault(ordinals, []).append((f, position))
    return list(plan.items())


def offline_results(features_by_track: Mapping[TrackId, np.ndarray], backend: Any, window: Optional[int] = None,
                    emit: str = "center", max_batch: Optional[int] = None,
                    frame_indices_by_track: Optional[Mapping[TrackId, Sequence[int]]] = None,
                    stats: Optional[StreamStats] = None, *, spec: Optional[StreamSpec] = None,
                    border: str = "nearest") -> List[FrameResult]:
    """Every frame of whole tracks ``{track_id: (N, D) features}``, ordered by track then frame.

    Frame indices are 0..N-1 unless ``frame_indices_by_track`` gives them. Uses ``backend.infer``
    only. The same windows as ``WindowStreamer``, built independently, for checking it.
    """
    spec = spec or StreamSpec()
    check_emit(emit, spec, border)
    geo = _geometry(backend, window, max_batch)
    stats = stats if stats is not None else StreamStats()
    jobs: List[Tuple[TrackId, np.ndarray, List[Tuple[int, int]]]] = []  # (track, (T, D) rows, emits)
    frame_ids: Dict[TrackId, np.ndarray] = {}
    for track_id, feats in features_by_track.items():
        feats = np.asarray(feats, dtype=np.float32)
        if feats.ndim != 2 or feats.shape[1] != geo.feature_dim:
            raise InputSpecError(f"track {track_id!r}: features have shape {feats.shape}, "
                                 f"expected (frames, {geo.feature_dim}) (the backend's input '{geo.input_name}')")
        given = None if frame_indices_by_track is None else frame_indices_by_track.get(track_id)
        frame_ids[track_id] = np.arange(len(feats)) if given is None else np.asarray(given, dtype=np.int64)
        if len(frame_ids[track_id]) != len(feats):
            raise InputSpecError(f"track {track_id!r}: {len(frame_ids[track_id])} frame indices for {len(feats)} frames")
        for ordinals, emits in windows_from_track(len(feats), geo.window, emit, spec.model_emit, border):
            jobs.append((track_id, feats[list(ordinals)], emits))
    results: Dict[Tuple[TrackId, int], FrameResult] = {}
    for lo in range(0, len(jobs), geo.max_batch):
        batch = jobs[lo: lo + geo.max_batch]
        outputs = backend.infer({geo.input_name: np.stack([rows for _, rows, _ in batch])})
        out = _results_from_outputs(outputs, len(batch), geo.window if spec.model_emit == "all" else 1, spec.outputs)
        stats.calls += 1
        stats.windows += len(batch)
        for b, (track_id, _, emits) in enumerate(batch):
            for f, p in emits:
                results[track_id, f] = _frame_result(track_id, frame_ids[track_id][f], out, b, _out_index(spec, p))
    ordered = [results[tid, f] for tid in features_by_track for f in range(len(frame_ids[tid]))]
    stats.frames_emitted += len(ordered)
    return ordered


def stack_by_track(results: Sequence[FrameResult]) -> Dict[TrackId, Dict[str, np.ndarray]]:
    """Frame records -> per track arrays sorted by frame: frame_index (N,), pose_rotmat (N, 24, 3, 3), ..."""
    grouped: Dict[TrackId, List[FrameResult]] = {}
    for r in results:
        grouped.setdefault(r.track_id, []).append(r)
    stacked: Dict[TrackId, Dict[str, np.ndarray]] = {}
    for track_id, records in grouped.items():
        records = sorted(records, key=lambda r: r.frame_index)
        arrays = {"frame_index": np.array([r.frame_index for r in records], dtype=np.int64)}
        arrays.update({n: np.stack([r.outputs[n] for r in records]) for n in records[0].outputs})
        stacked[track_id] = arrays
    return stacked
