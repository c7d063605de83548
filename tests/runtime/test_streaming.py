"""Feature-window streaming: streaming == offline per frame, window contents at the track ends, batching."""

from __future__ import annotations

import numpy as np
import pytest

from hmr_trt.errors import ConfigError, HmrTrtError, InputSpecError
from hmr_trt.runtime.backends import Backend, IOSpec
from hmr_trt.runtime.streaming import (
    EMIT_MODES,
    OUTPUT_NAMES,
    StreamSpec,
    StreamStats,
    WindowStreamer,
    offline_results,
    stack_by_track,
)

T, D = 16, 32
LENGTHS = {"a": 1, "b": 5, "c": 15, "d": 16, "e": 17, 7: 40, "g": 33}  # shorter than T, exactly T, longer


class FakeBackend(Backend):
    """Outputs are a fixed function of the window's rows and of the position in the window.

    Feature 0 of each frame is a code naming the frame; every position's pose_rotmat starts with the
    T codes of its window, then the position, so a test can read back which frames made up a window.
    Rows are computed one at a time, so results cannot depend on the batch.
    """

    name = "fake"

    def __init__(self, window: int = T, dim: int = D, max_batch: int | None = None) -> None:
        super().__init__()
        self.window, self.dim, self.max_batch = window, dim, max_batch
        self.batches: list[int] = []

    def _activate(self) -> None:
        f32 = np.dtype(np.float32)
        self.inputs = [IOSpec("features", ("batch", self.window, self.dim), f32)]
        self.outputs = [IOSpec("pose_rotmat", ("batch", self.window, 24, 3, 3), f32),
                        IOSpec("betas", ("batch", self.window, 10), f32), IOSpec("cam", ("batch", self.window, 3), f32)]

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feed["features"]  # (B, T, D)
        self.batches.append(len(x))
        b_, t_, d_ = x.shape
        pose = np.zeros((b_, t_, 24 * 9), np.float32)
        betas = np.zeros((b_, t_, 10), np.float32)
        cam = np.zeros((b_, t_, 3), np.float32)
        position = np.arange(t_, dtype=np.float32)
        for b in range(b_):
            w = x[b]
            summary = w[:, 1:11].sum(0)  # (10,) the whole window's content
            pose[b, :, :t_] = w[:, 0]  # the codes of the window's frames, at every position
            pose[b, :, t_] = position
            pose[b, :, t_ + 1: t_ + d_] = w[:, 1:] * (1 + position[:, None])
            betas[b] = summary + 0.5 * position[:, None]
            cam[b] = w[:, 1:4] - summary[:3] * position[:, None]
        return {"pose_rotmat": pose.reshape(b_, t_, 24, 3, 3), "betas": betas, "cam": cam}


class DoubleBufferedBackend(FakeBackend):
    """``submit``/``collect`` like the TensorRT backend; records how many batches were in flight."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)
        self.in_flight: list[int] = []
        self.most_in_flight = 0
        self.next_handle = 0
        self.collected: list[int] = []
        self.infer_calls = 0

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.infer_calls += 1
        return super().infer(feed)

    def submit(self, feed: dict[str, np.ndarray]) -> tuple[int, dict[str, np.ndarray]]:
        self.check_feed(feed)
        handle, self.next_handle = self.next_handle, self.next_handle + 1
        self.in_flight.append(handle)
        self.most_in_flight = max(self.most_in_flight, len(self.in_flight))
        return handle, self._infer(feed)

    def collect(self, handle: tuple[int, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        number, outputs = handle
        self.in_flight.remove(number)
        self.collected.append(number)
        return outputs


def make_features(lengths: dict, dim: int = D, seed: int = 0, codes: bool = True) -> dict:
    """Random features; with ``codes``, feature 0 names the frame: 1000 * (track number) + ordinal + 1."""
    rng = np.random.default_rng(seed)
    feats = {}
    for k, (track, n) in enumerate(lengths.items()):
        feats[track] = rng.standard_normal((n, dim)).astype(np.float32)
        if codes:
            feats[track][:, 0] = 1000.0 * k + np.arange(n) + 1
    return feats


def frame_numbers(lengths: dict) -> dict:
    """Video frame numbers with gaps, different per track."""
    return {track: 3 * k + 2 * np.arange(n) + (np.arange(n) > 2) for k, (track, n) in enumerate(lengths.items())}


def stream(backend, feats: dict, emit: str, max_batch: int | None = None, seed: int = 1,
           frames: dict | None = None, **kw: object) -> tuple[list, WindowStreamer]:
    """Push every track's frames interleaved in a random order; end some tracks early, flush the rest."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([[i] * len(x) for i, x in enumerate(feats.values())])
    rng.shuffle(order)
    tracks = list(feats)
    frames = frames or {t: np.arange(len(x)) for t, x in feats.items()}
    nxt = dict.fromkeys(tracks, 0)
    streamer = WindowStreamer(backend, emit=emit, max_batch=max_batch, **kw)
    results = []
    for i in order:
        track = tracks[i]
        k = nxt[track]
        results += streamer.push(track, int(frames[track][k]), feats[track][k])
        nxt[track] += 1
        if nxt[track] == len(feats[track]) and rng.random() < 0.5:
            results += streamer.end_track(track)
        if rng.random() < 0.05:
            results += streamer.drain()
    return results + streamer.flush(), streamer


def assert_same(got: list, want: list, atol: float = 0.0) -> float:
    """Same (track, frame) keys, each once; returns the largest difference."""
    keys = [(r.track_id, r.frame_index) for r in got]
    assert len(keys) == len(set(keys)), "a frame was emitted twice"
    want_by_key = {(r.track_id, r.frame_index): r for r in want}
    assert set(keys) == set(want_by_key)
    worst = 0.0
    for r in got:
        w = want_by_key[r.track_id, r.frame_index]
        for name in OUTPUT_NAMES:
            a, b = getattr(r, name), getattr(w, name)
            assert a.dtype == np.float32 and a.shape == b.shape
            worst = max(worst, float(np.abs(a - b).max()))
    assert worst <= atol, f"streaming differs from offline by {worst}"
    return worst


def window_of(result) -> tuple[list[int], int]:
    """Decode the fake backend's output: the ordinals of the window's frames and the position."""
    flat = result.pose_rotmat.reshape(-1)
    codes = flat[:T].astype(int)
    return [int(c) % 1000 - 1 for c in codes], int(flat[T])


@pytest.mark.parametrize("max_batch", [1, 3, 64])
@pytest.mark.parametrize("emit", EMIT_MODES)
def test_streaming_equals_offline(emit: str, max_batch: int) -> None:
    feats, frames = make_features(LENGTHS), frame_numbers(LENGTHS)
    with FakeBackend() as backend:
        offline_stats = StreamStats()
        want = offline_results(feats, backend, emit=emit, frame_indices_by_track=frames, stats=offline_stats)
        backend.batches.clear()
        got, streamer = stream(backend, feats, emit, max_batch=max_batch, frames=frames)
    assert_same(got, want)  # exactly: the fake backend's rows do not depend on the batch
    total = sum(LENGTHS.values())
    assert len(want) == total and streamer.stats.frames_emitted == total
    assert streamer.stats.windows == offline_stats.windows  # the same windows, each run once
    assert max(backend.batches) <= max_batch
    assert streamer.stats.mean_batch == pytest.approx(streamer.stats.windows / streamer.stats.calls)
    assert not streamer.open_tracks
    for track, arrays in stack_by_track(got).items():  # every frame once, in frame order per track
        np.testing.assert_array_equal(arrays["frame_index"], frames[track])
        emitted = [r.frame_index for r in got if r.track_id == track]
        assert emitted == sorted(emitted)


def test_window_counts_per_mode() -> None:
    n = sum(LENGTHS.values())
    expected = {"center": sum(max(k - T + 1, 1) for k in LENGTHS.values()), "last": n,
                "all": sum(-(-k // T) for k in LENGTHS.values())}
    feats = make_features(LENGTHS)
    with FakeBackend() as backend:
        for emit, windows in expected.items():
            _, streamer = stream(backend, feats, emit, max_batch=5)
            assert streamer.stats.windows == windows, emit


def test_batching_does_not_change_offline_results() -> None:
    feats = make_features(LENGTHS)
    with FakeBackend() as backend:
        for emit in EMIT_MODES:
            assert_same(offline_results(feats, backend, emit=emit, max_batch=1),
                        offline_results(feats, backend, emit=emit, max_batch=64))


def test_center_pads_with_nearest_real_frames() -> None:
    feats = make_features({"f": 40, "b": 5, "d": 16})
    with FakeBackend() as backend:
        results, _ = stream(backend, feats, "center", max_batch=4)
    by = {(r.track_id, r.frame_index): window_of(r) for r in results}
    first, last = list(range(16)), list(range(24, 40))
    assert by["f", 0] == (first, 0) and by["f", 1] == (first, 1) and by["f", 8] == (first, 8)
    assert by["f", 9] == (list(range(1, 17)), 8)  # 8 past, 7 future frames
    assert by["f", 31] == (list(range(23, 39)), 8)
    assert by["f", 32] == (last, 8) and by["f", 39] == (last, 15)
    assert all(len(set(by["f", f][0])) == T for f in range(40))  # never a repeated frame
    assert all(by["d", f] == (first, f) for f in range(16))  # exactly T frames: one window
    short = [0] * 6 + [1, 2, 3] + [4] * 7  # 5 frames centred: lead (16 - 5) // 2 = 5 copies of frame 0
    assert [by["b", f] for f in range(5)] == [(short, 5 + f) for f in range(5)]


def test_last_and_all_windows() -> None:
    feats = make_features({"f": 40})
    with FakeBackend() as backend:
        last = {r.frame_index: window_of(r) for r in stream(backend, feats, "last", max_batch=2)[0]}
        blocks = {r.frame_index: window_of(r) for r in stream(backend, feats, "all", max_batch=2)[0]}
    assert last[0] == ([0] * 16, 15) and last[3] == ([0] * 13 + [1, 2, 3], 15)
    assert last[20] == (list(range(5, 21)), 15)
    assert blocks[17] == (list(range(16, 32)), 1)
    assert blocks[33] == (list(range(32, 40)) + [39] * 8, 1) and blocks[39][1] == 7


def test_last_is_causal() -> None:
    feats = make_features({"f": 30})
    changed = {"f": feats["f"].copy()}
    changed["f"][10, 1:] += 1.0
    with FakeBackend() as backend:
        streamer = WindowStreamer(backend, emit="last", max_batch=1)
        for f in range(30):  # each frame's result is out as soon as the frame is in
            assert [r.frame_index for r in streamer.push("f", f, feats["f"][f])] == [f]
        a = offline_results(feats, backend, emit="last")
        b = offline_results(changed, backend, emit="last")
    for ra, rb in zip(a, b):  # frame 10 is in the windows of frames 10 .. 10 + T - 1 only
        same = all(np.array_equal(getattr(ra, n), getattr(rb, n)) for n in OUTPUT_NAMES)
        assert same == (ra.frame_index < 10 or ra.frame_index >= 10 + T), ra.frame_index


def test_center_latency() -> None:
    feats = make_features({"f": 20})
    with FakeBackend() as backend:
        streamer = WindowStreamer(backend, emit="center", max_batch=1)
        out = [[r.frame_index for r in streamer.push("f", f, feats["f"][f])] for f in range(20)]
        tail = [r.frame_index for r in streamer.end_track("f")]
    assert out[:15] == [[]] * 15 and out[15] == list(range(9))
    assert out[16:] == [[9], [10], [11], [12]] and tail == list(range(13, 20))


def test_double_buffering() -> None:
    feats = make_features(LENGTHS)
    with DoubleBufferedBackend() as backend:
        want = offline_results(feats, backend, emit="center")
        backend.infer_calls = 0
        got, streamer = stream(backend, feats, "center", max_batch=3)
        assert backend.infer_calls == 0 and backend.collected == sorted(backend.collected)
        assert backend.most_in_flight == 2 == streamer.stats.max_in_flight and not backend.in_flight
        assert_same(got, want)
        got, streamer = stream(backend, feats, "center", max_batch=3, double_buffer=False)
        assert backend.infer_calls == streamer.stats.calls
        assert_same(got, want)


def test_bad_input() -> None:
    with FakeBackend() as backend:
        streamer = WindowStreamer(backend)
        with pytest.raises(InputSpecError, match=r"track 'x' frame 0: feature has shape \(31,\), expected \(32,\)"):
            streamer.push("x", 0, np.zeros(31, np.float32))
        with pytest.raises(InputSpecError, match=r"shape \(1, 32\), expected \(32,\)"):
            streamer.push("x", 0, np.zeros((1, 32), np.float32))
        streamer.push("x", 5, np.zeros(32, np.float32))
        with pytest.raises(InputSpecError, match="frame indices must increase within a track, got 3 after 5"):
            streamer.push("x", 3, np.zeros(32, np.float32))
        with pytest.raises(InputSpecError, match="got 5 after 5"):
            streamer.push("x", 5, np.zeros(32, np.float32))
        streamer.push("y", 3, np.zeros(32, np.float32))  # other tracks have their own frame numbers
        with pytest.raises(ConfigError, match="no open track"):
            streamer.end_track("z")
        with pytest.raises(ConfigError, match="emit mode must be one of center, last, all, got 'middle'"):
            WindowStreamer(backend, emit="middle")
        with pytest.raises(ConfigError, match="emit mode must be one of"):
            offline_results({"x": np.zeros((4, 32), np.float32)}, backend, emit="middle")
        with pytest.raises(InputSpecError, match=r"features have shape \(4, 31\), expected \(frames, 32\)"):
            offline_results({"x": np.zeros((4, 31), np.float32)}, backend)
        with pytest.raises(ConfigError, match="window 8 does not match"):
            WindowStreamer(backend, window=8)
        with pytest.raises(ConfigError, match="max_batch must be >= 1"):
            WindowStreamer(backend, max_batch=0)
        with pytest.raises(ConfigError, match="submit/collect"):
            WindowStreamer(backend, double_buffer=True)
    with pytest.raises(HmrTrtError, match="inside 'with backend:'"):
        WindowStreamer(FakeBackend())


# -- a real exported model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from hmr_trt.export.models.coseg.config import TINY
    from hmr_trt.export.models.coseg.export import export_temporal
    from hmr_trt.export.models.coseg.model import build_model
    from hmr_trt.profile import ShapeProfile

    path = tmp_path_factory.mktemp("streaming") / "temporal_tiny.onnx"
    export_temporal(build_model(TINY.with_(fde_mode="matrix")), path, ShapeProfile(1, 4, 8))
    return path


ORT_ATOL = 1e-5  # batch sizes 1 vs 8 change ONNX Runtime's float rounding (~1e-7 seen)


@pytest.mark.parametrize("emit", EMIT_MODES)
def test_streaming_equals_offline_onnxruntime(tiny_onnx, emit: str) -> None:
    from hmr_trt.runtime.backends import OnnxRuntimeBackend

    with OnnxRuntimeBackend(tiny_onnx, max_batch=8) as backend:
        dim = backend.inputs[0].shape[-1]  # TINY: 64, not 2048
        feats = make_features({"short": 3, "exact": 16, "long": 27}, dim=dim, seed=2, codes=False)
        want = offline_results(feats, backend, emit=emit)
        got1, s1 = stream(backend, feats, emit, max_batch=1)
        got8, s8 = stream(backend, feats, emit)  # the backend's own limit, 8
    assert s8.window == 16 and s8.max_batch == 8  # T and the batch limit come from the backend
    assert s1.stats.mean_batch == 1 and s8.stats.mean_batch > 1
    assert_same(got1, want, atol=ORT_ATOL)
    assert_same(got8, want, atol=ORT_ATOL)
    assert_same(got1, got8, atol=ORT_ATOL)


# --- the contract: models that emit only the middle frame, and the official demos' border -------------

class MiddleBackend(FakeBackend):
    """A window model with emit "middle": the FakeBackend's output at position T//2 only, (B, 1, ...)."""

    def _activate(self) -> None:
        super()._activate()
        self.outputs = [IOSpec(o.name, (o.shape[0], 1, *o.shape[2:]), o.dtype) for o in self.outputs]

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        h = self.window // 2
        return {k: v[:, h:h + 1] for k, v in super()._infer(feed).items()}


def _window_codes(result, k: int, t: int = T) -> list:
    """The frame ordinals (0-based) making up a result's window, read back from the codes."""
    return [int(c) - 1000 * k - 1 for c in result.pose_rotmat.reshape(-1)[:t]]


MIDDLE = StreamSpec(OUTPUT_NAMES, "middle", "a-middle-model")


@pytest.mark.parametrize("border", ["nearest", "repeat"])
@pytest.mark.parametrize("spec", [StreamSpec(), MIDDLE], ids=["emit-all", "emit-middle"])
def test_contract_emits_and_borders_stream_like_offline(spec, border) -> None:
    lengths = {"a": 1, "b": 5, "c": 15, "d": 16, "e": 17, "g": 33}
    feats = make_features(lengths)
    backend_cls = MiddleBackend if spec.model_emit == "middle" else FakeBackend
    with backend_cls() as backend:
        got, _ = stream(backend, feats, "center", max_batch=5, spec=spec, border=border)
        want = offline_results(feats, backend, emit="center", spec=spec, border=border)
    assert_same(got, want)
    h = T // 2
    for k, (track, n) in enumerate(lengths.items()):
        for r in (r for r in want if r.track_id == track):
            f = r.frame_index
            codes = _window_codes(r, k)
            position = int(r.pose_rotmat.reshape(-1)[T])
            edge = f < h or f > n - 1 - (T - 1 - h)
            if border == "repeat" and edge:
                assert codes == [f] * T and position == h, (track, f)
            elif spec.model_emit == "middle":  # nearest real frames, f stays at T//2
                assert codes == [min(max(f - h + j, 0), n - 1) for j in range(T)] and position == h, (track, f)
            else:
                assert codes[position] == f


@pytest.mark.parametrize("emit", ["last", "all"])
def test_middle_models_refuse_last_and_all(emit) -> None:
    with MiddleBackend() as backend:
        with pytest.raises(ConfigError, match=f"--emit {emit} is not possible with a-middle-model.*--emit center"):
            WindowStreamer(backend, emit=emit, spec=MIDDLE)
        with pytest.raises(ConfigError, match="not possible"):
            offline_results({"x": np.zeros((4, D), np.float32)}, backend, emit=emit, spec=MIDDLE)
    with pytest.raises(ConfigError, match="border must be one of nearest, repeat"):
        with FakeBackend() as backend:
            WindowStreamer(backend, border="edge")
