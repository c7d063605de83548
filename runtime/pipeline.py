"""The job behind ``trt-run``: one loop from a source to the sinks.

A source (runtime/sources.py: a video file, a camera, a stream URL) yields frames; the family's
stage (``CropFamilyStage`` for the window and frame families: detect, track, crop, backbone,
windows or the step graph; ``SceneFamilyStage``: whole frames through the maps graph) takes each
frame and hands back the frame results that became final; ``FrameLoop`` adds the body model and
the image-space cameras, and hands each input frame on (``FrameOutput``) as soon as all of its
people are final, and each track's rows when the track ends (then drops them: memory holds the
open frames and the live tracks, not the history); the sinks (runtime/sinks.py, one table of
formats, plus --render) write them. The model comes from the export's contract (manifest.json):
the runtime branches only on its family, emit and causal flags, never on model names.

A track's crops wait at ``_TrackGate`` until it has ``min_track_frames`` frames, so tracks shorter
than that (detector flicker) never reach the backbone or the model. Files go through
``OutputFolder`` (hmr_trt/manifest.py): a file source publishes everything at the end (an error or
Ctrl-C leaves --out as it was), a live source file by file as it becomes final.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from array import array
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np

from hmr_trt.errors import ConfigError, HmrTrtError, InputSpecError
from hmr_trt.manifest import OutputFolder

from .backends_select import FACES_NAME, Backends, open_backends
from .cameras import image_space
from .crops import CropBatcher, CropGeometry
from .detect import describe_detector
from .outputs import rotmat_to_axis_angle, summary_text, track_arrays
from .sinks import FORMATS, FrameOutput, NpzSink, Person, formats_of, make_sinks
from .sources import DEFAULT_STALL_S, Frame, Source, SourceInfo, open_source, source_kind
from .streaming import BORDERS, FrameResult, StreamSpec, WindowStreamer, check_emit, stack_by_track
from .track import MIN_TRACK_LENGTH

__all__ = ["FORMATS", "FrameLoop", "FrameOutput", "Person", "RunOptions", "run_features", "run_video"]
STAGES = ("decode", "detect", "track", "crop", "backbone", "temporal", "body_model", "writing", "render")
SUMMARY_NAME = "summary.json"


@dataclass
class RunOptions:
    out: Path
    export_dir: Path
    video: Optional[Union[Path, str, int]] = None  # a file, a camera index or a stream URL (runtime/sources.py)
    features: Optional[Path] = None
    backend: str = "auto"  # auto | tensorrt | onnxruntime | triton
    triton_url: Optional[str] = None  # --backend triton: the server's HOST:PORT
    precision: str = "fp32"
    emit: str = "center"
    detector: str = "auto"  # auto (SSDLite when converted, else HOG) | ssdlite | hog | a path to the user's ONNX
    format: Union[str, Tuple[str, ...]] = "npz"  # names from runtime/sinks.FORMATS ("npz,jsonl" or a tuple)
    render: Optional[Path] = None
    fit_to_box: bool = False  # render: meshes fitted to the detection boxes, not placed by the predicted camera
    vertices: bool = True
    max_frames: Optional[int] = None
    min_track_frames: int = MIN_TRACK_LENGTH  # shorter tracks (detector flicker) are dropped before inference
    border: str = "nearest"  # center mode at track ends: nearest real frames, or "repeat" (the official demos)
    backbone_batch: int = 32
    threads: int = 0
    device: str = "auto"  # ort: auto | cpu | cuda (ONNX Runtime's providers; cpu also skips the TensorRT API)
    ort_providers: Optional[str] = None  # ort: "TensorrtExecutionProvider,CUDAExecutionProvider,..." in order
    on_backends: Optional[Callable[[Backends], None]] = None  # ort: told which backends/providers opened
    images: Optional[List[Path]] = None  # --image: still images (frame and scene families), one result file each
    threshold: Optional[float] = None  # scene family: center-map score threshold in (0, 1) (default 0.2)
    live_drop: str = "oldest"  # live sources: when the loop falls behind, drop the oldest queued frame, or none
    stall_s: float = DEFAULT_STALL_S  # a source that opens or sends nothing for this long ends the run
    vibe_data: Optional[Path] = None  # --format vibe: VIBE's data/vibe_data (J_regressor_extra.npy) -> 49 joints


@dataclass
class StageTimer:
    seconds: Dict[str, float] = field(default_factory=lambda: {s: 0.0 for s in STAGES})

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


Progress = Callable[[int], None]  # called with the number of frames just done


class _FeatureStage(CropBatcher):
    """Crops wait here until a backbone batch is full; their features then stream into the windows."""

    def __init__(self, backends: Backends, streamer: WindowStreamer, timer: StageTimer, batch: int) -> None:
        super().__init__(timer, batch)
        self.backends, self.streamer = backends, streamer

    def _run(self, pending: List[tuple], images: np.ndarray) -> None:
        with self.timer("backbone"):
            feats = self.backends.infer_backbone(images)
        with self.timer("temporal"):
            for (track_id, frame_index, _), feat in zip(pending, feats):
                self.results.extend(self.streamer.push(track_id, frame_index, feat))

    def step(self) -> List[FrameResult]:
        """Run the crops waiting now and every queued window (or step-graph round): this frame's results."""
        self.run()
        with self.timer("temporal"):
            return self.streamer.drain()

    def end_track(self, track_id: Any) -> List[FrameResult]:
        self.run()
        with self.timer("temporal"):
            try:
                ready = self.streamer.end_track(track_id)
            except ConfigError:  # never reached the streamer
                ready = []
            return ready + self.streamer.drain()

    def end(self) -> None:
        self.run()
        with self.timer("temporal"):
            self.results.extend(self.streamer.flush())


class _TrackGate:
    """Holds each track's crops until it has ``min_frames`` frames, then passes them (and the rest) on;
    ``end`` drops the crops of tracks that never got there: they are never inferred."""

    def __init__(self, stage: Any, min_frames: int) -> None:
        if min_frames < 1:
            raise ConfigError(f"--min-track-frames must be >= 1, got {min_frames}")
        self.stage, self.min_frames = stage, min_frames
        self.count: Dict[Any, int] = defaultdict(int)
        self.held: Dict[Any, List[tuple]] = defaultdict(list)
        self.dropped_frames = 0

    def add(self, track_id: Any, frame_index: int, crop: np.ndarray) -> None:
        self.count[track_id] += 1
        if self.count[track_id] < self.min_frames:
            self.held[track_id].append((frame_index, crop))
            return
        for held_frame, held_crop in self.held.pop(track_id, []):
            self.stage.add(track_id, held_frame, held_crop)
        self.stage.add(track_id, frame_index, crop)

    def drop_short(self, track_id: Any) -> bool:
        """The track has ended: True (and its held crops dropped) when it never reached ``min_frames``."""
        self.count.pop(track_id, None)
        held = self.held.pop(track_id, None)
        if held is None:
            return False
        self.dropped_frames += len(held)
        return True

    def end(self) -> None:
        self.dropped_frames += sum(len(v) for v in self.held.values())
        self.held.clear()
        self.stage.end()


def family_stage(backends: Backends, timer: StageTimer, opts: RunOptions) -> Any:
    """The per-family stage for the export's contract (``add(track, frame, crop)``, ``end()``, ``results``)."""
    contract = backends.contract
    family = contract.family if contract is not None else "window"
    if family not in FAMILY_STAGES:
        raise ConfigError(f"model {contract.name if contract else '?'} is a {family} model: not supported by this "
                          f"runtime yet as a per-track stage ({', '.join(FAMILY_STAGES)}; scene models run whole "
                          "frames through run_video)")
    return FAMILY_STAGES[family](backends, timer, opts)


def _window_stage(backends: Backends, timer: StageTimer, opts: RunOptions) -> _FeatureStage:
    return _FeatureStage(backends, _streamer(backends, opts), timer, opts.backbone_batch)


def _frame_stage(backends: Backends, timer: StageTimer, opts: RunOptions) -> Any:
    from .frame_stage import FrameStage

    return FrameStage(backends, timer, opts.backbone_batch)


FAMILY_STAGES: Dict[str, Callable[[Backends, StageTimer, RunOptions], Any]] = {"window": _window_stage,
                                                                               "frame": _frame_stage}
IMAGE_FAMILIES = ("frame", "scene")  # families that run on still images (--image)


def export_family(export_dir: Path) -> str:
    """The family of the export's contract (manifest.json), before any backend opens."""
    from hmr_trt.manifest import Manifest

    from .backends_select import contract_of

    return contract_of(Manifest.read(Path(export_dir))).family


def _export_model(export_dir: Any) -> str:
    from hmr_trt.manifest import Manifest

    return Manifest.read(Path(export_dir)).model


def _check_family_options(opts: RunOptions, family: str, mode: str) -> None:
    """Refuse, before anything runs or is written, a mode or option the export's family does not have."""
    if mode == "image" and family not in IMAGE_FAMILIES:
        raise ConfigError(f"--image: {opts.export_dir} is a {family} model (it needs a video's tracks); "
                          f"--image runs {' and '.join(IMAGE_FAMILIES)} models")
    if mode == "features" and family != "window":
        raise ConfigError(f"--features: {opts.export_dir} is a {family} model, which takes images, not backbone "
                          "features; give --video or --image")
    if family == "frame":
        from hmr_trt.manifest import Manifest

        from .backends_select import contract_of

        if contract_of(Manifest.read(Path(opts.export_dir))).body_model == "keypoints":
            raise ConfigError(f"{opts.export_dir} is a keypoint model (ViTPose: heatmaps, no body): trt-run runs it "
                              "inside a pipeline that reads keypoints; from Python, "
                              "hmr_trt.runtime.keypoints.open_keypoint_model(export).keypoints(frame, boxes)")
    if "vibe" in formats_of(opts.format):
        from .vibe_format import peer_demo

        peer_demo(_export_model(opts.export_dir))  # only the models whose demo writes such a file
    elif opts.vibe_data is not None:
        raise ConfigError("--vibe-data gives the joint regressor of --format vibe's 49 joints: add --format vibe")
    if "vibe" in formats_of(opts.format) and family == "frame":
        from hmr_trt.manifest import Manifest

        from .backends_select import contract_of

        if contract_of(Manifest.read(Path(opts.export_dir))).body_model == "none":
            raise ConfigError(f"--format vibe holds SMPL poses and shapes; {opts.export_dir} is a model that "
                              "outputs vertices only: use --format npz")
    if opts.threshold is not None and family != "scene":
        raise ConfigError(f"--threshold applies to scene models; {opts.export_dir} is a {family} model")
    if family == "scene":
        from .scene_stage import optional_threshold

        optional_threshold(opts.threshold)


def peer_joints_plan(opts: RunOptions) -> Any:
    """--format vibe: which joints the peer file holds (runtime/vibe_format.plan_peer_joints), from the export's
    body model (its vertex count; hmr-trt's synthetic stand-in or not) and --vibe-data, checked before anything
    runs or is written."""
    from hmr_trt.manifest import Manifest

    from .backends_select import contract_of
    from .vibe_format import peer_demo, plan_peer_joints

    manifest = Manifest.read(Path(opts.export_dir))
    body = contract_of(manifest).graph_for("body_model")
    spec = next((t for t in body.outputs if t.name == "vertices"), None) if body is not None else None
    vertices = int(spec.shape[1]) if spec is not None and isinstance(spec.shape[1], int) else 0
    note = next((n for n in manifest.notes if n.startswith("body model")), "")
    synthetic = note.startswith("body model: SYNTHETIC, NOT SMPL")  # export/pipeline.py: body_models' note
    return plan_peer_joints(vertices, synthetic, opts.vibe_data, peer_demo(manifest.model).file)


def _streamer(backends: Backends, opts: RunOptions) -> Any:
    """--emit last on a causal model with a recurrent step graph: one step per frame (runtime/recurrent.py);
    otherwise windows."""
    if opts.emit == "last" and backends.step is not None:
        from .recurrent import RecurrentStreamer, RecurrentTracks

        return RecurrentStreamer(RecurrentTracks.from_contract(backends.step, backends.contract,
                                                               max_batch=backends.step.max_batch))
    spec = StreamSpec.from_contract(backends.contract) if backends.contract is not None else StreamSpec()
    return WindowStreamer(backends.temporal, emit=opts.emit, spec=spec, border=opts.border)


def _check_options(opts: RunOptions) -> None:
    check_emit(opts.emit, border=opts.border)
    if opts.border not in BORDERS:
        raise ConfigError(f"--border must be one of {', '.join(BORDERS)}, got {opts.border!r}")


def _detector(spec: str, threads: int = 0) -> Any:
    from .detect import make_detector

    return make_detector(spec, threads)


def _tracker(detector: Any = None) -> Any:
    from .detect import tracker_params
    from .track import Tracker

    return Tracker(**tracker_params(detector))


def run_video(opts: RunOptions, progress: Optional[Progress] = None,
              opened: Optional[Backends] = None) -> Dict[str, Any]:
    """The whole path on a video file, camera or stream URL (``opts.video``); returns the summary (also written
    to ``out/summary.json``). ``opened``: backends already open (a Ray actor runs many videos on one set).

    One loop: frames from the source -> the family's stage -> people final per frame -> the sinks (the
    formats' files as frames and tracks become final, the render frame by frame). A live source ends on
    Ctrl-C/SIGTERM (in the main thread), on a stall (--stall-s) or when it stops sending; what is final is
    kept and summary.json written. A file interrupted or failing leaves --out as it was."""
    _check_options(opts)
    formats = formats_of(opts.format)
    if opts.video is None:
        raise ConfigError("run_video needs a video")
    family = export_family(opts.export_dir)
    _check_family_options(opts, family, "video")
    if "vibe" in formats and not opts.vertices:
        raise ConfigError("--format vibe holds vertices: drop --no-vertices (or use --format npz)")
    joints_plan = peer_joints_plan(opts) if "vibe" in formats else None
    live = source_kind(opts.video) != "file"
    # a file is opened (and a bad one refused) before anything else; a live source once the backends are up,
    # so that no frame waits (or is dropped) while the graphs load
    source = None if live else _source(opts)
    try:
        with _video_backends(opts, opened) as backends:
            if source is None:
                source = _source(opts)
            with _stop_on_signals(source) as stopper:
                folder = OutputFolder(opts.out, publish="now" if live else "end")
                return _run_loop(opts, formats, family, source, folder, progress, backends, stopper, joints_plan)
    finally:
        if source is not None:
            source.close()


def _source(opts: RunOptions) -> Source:
    return open_source(opts.video, max_frames=opts.max_frames, drop=opts.live_drop, stall_s=opts.stall_s)


def _run_loop(opts: RunOptions, formats: Tuple[str, ...], family: str, source: Source, folder: OutputFolder,
              progress: Optional[Progress], backends: Backends, stopper: Dict[str, bool],
              joints_plan: Any = None) -> Dict[str, Any]:
    info = source.info
    timer = StageTimer()
    start = time.perf_counter()
    sinks: Dict[str, Any] = {}
    error: Optional[BaseException] = None
    try:
        folder.check_free([SUMMARY_NAME, *(["frames.jsonl"] if "jsonl" in formats else [])])
        stage = make_stage(family, backends, timer, opts)
        sinks = make_sinks(folder, formats, _export_model(opts.export_dir), (info.width, info.height), joints_plan)
        if opts.render is not None:
            sinks["render"] = _render_sink(opts, backends, info, stage.detector_note)
        loop = FrameLoop(stage, backends, timer, (info.width, info.height), vertices=opts.vertices,
                         keep_images=opts.render is not None)
        frames_in = _timed(source, timer)
        try:
            for out in loop.run(frames_in, on_track=lambda t, a: _each(sinks, "track", t, a)):
                with timer("render" if opts.render is not None else "writing"):
                    _each(sinks, "frame", out)
                if progress:
                    if getattr(progress, "with_tracks", False):
                        progress(1, tracks=len(loop.last_seen))
                    else:
                        progress(1)
        except (HmrTrtError, KeyboardInterrupt) as exc:
            if not info.live or isinstance(exc, KeyboardInterrupt):
                raise
            error = exc  # a live source that failed mid-stream: keep what is final, then report
            loop.end_all(lambda t, a: _each(sinks, "track", t, a))
            for out in loop.drain_final():
                _each(sinks, "frame", out)
        with timer("writing"):
            written: List[str] = []
            for sink in sinks.values():
                written += sink.close()
        if opts.render is not None:
            folder.record(opts.render)
        total = time.perf_counter() - start
        summary = {
            "input": info.input, "source": info.kind, "width": info.width, "height": info.height, "fps": info.fps,
            "frames_declared": info.frames_declared, "frames_decoded": source.decoded,
            "frames_lost": max(info.frames_declared - source.decoded, 0)
            if opts.max_frames is None and not info.live else 0,
            "frames_dropped_live": source.dropped, "live_drop": opts.live_drop if info.live else None,
            "ended": "error: " + str(error) if error is not None else (source.end_reason or "end of input"),
            "stalled": source.stalled, "interrupted": stopper["stopped"],
            "tracks_detected": loop.tracks_seen, "tracks_dropped_short": loop.tracks_dropped,
            "frames_dropped_short": loop.frames_dropped_short,
            "detector": stage.detector_note, **stage.summary_extra(),
            "model": backends.contract.name if backends.contract is not None else None,
            "family": family, "backend": backends.description, "providers": backends.providers,
            "precision": opts.precision, "emit": opts.emit, "border": opts.border,
            "export_dir": str(opts.export_dir), "weights": backends.weights_note,
            "tracks": len(sinks["npz"].rows) if "npz" in sinks else loop.tracks_written,
            "track_files": sinks["npz"].rows if "npz" in sinks else [],
            "latency_ms": loop.latency.summary(),
            "peak_open": {"tracks": loop.peak_tracks, "frames": loop.peak_frames},
            "timings_s": {k: round(v, 4) for k, v in timer.seconds.items()}, "total_s": round(total, 3),
            "frames_per_second": round(source.decoded / total, 2) if total > 0 else None,
            "render": str(opts.render) if opts.render else None, "format": ",".join(formats),
            "files": sorted(set(written) | {SUMMARY_NAME}),
        }
        if joints_plan is not None:
            summary["vibe_joints"] = {"joints": joints_plan.count, "note": joints_plan.note}
        with timer("writing"):
            folder.write(SUMMARY_NAME, lambda f: f.write(summary_text(summary)))
        folder.commit()
    except BaseException:
        for sink in sinks.values():
            sink.abort()
        folder.abort()
        raise
    if error is not None:
        raise error
    return summary


def _each(sinks: Dict[str, Any], method: str, *args: Any) -> None:
    for sink in sinks.values():
        getattr(sink, method)(*args)


@contextlib.contextmanager
def _stop_on_signals(source: Source) -> Iterator[Dict[str, bool]]:
    """Live source in the main thread: the first SIGINT/SIGTERM ends the source (a normal end: frames in
    flight finish, sinks close, summary.json is written), a second one interrupts. A file: SIGTERM interrupts
    like Ctrl-C (nothing partial is left). Elsewhere (Ray actors, other threads): nothing is installed."""
    state = {"stopped": False}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def on_signal(signum: int, frame: Any) -> None:
        if source.info.live and not state["stopped"]:
            state["stopped"] = True
            source.stop()
            return
        raise KeyboardInterrupt

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, on_signal)
    try:
        yield state
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _timed(source: Source, timer: StageTimer) -> Iterator[Frame]:
    """The source's frames, with the time spent waiting for / decoding them charged to 'decode'."""
    frames = iter(source)
    while True:
        with timer("decode"):
            item = next(frames, None)
        if item is None:
            return
        yield item


def _render_sink(opts: RunOptions, backends: Backends, info: SourceInfo, detector: str) -> Any:
    from hmr_trt.manifest import Manifest

    from .render import PLACEMENT_BOX, PLACEMENT_CAMERA, caption_lines
    from .sinks import RenderSink

    manifest = Manifest.read(opts.export_dir)
    seeded = "seeded" in backends.weights_note
    body = next((n for n in manifest.notes if n.startswith("body model")), "body model: unknown")
    body = body.split(";")[0].split(":", 1)[-1].strip()  # "SYNTHETIC, NOT SMPL (3624 vertices), generated ..."
    weights = "seeded defaults (untrained)" if seeded else \
        str(manifest.config.get("checkpoint") or "from the export's checkpoint")
    placement = PLACEMENT_BOX if opts.fit_to_box else PLACEMENT_CAMERA  # seeded weights too: their camera is shaped
    caption = caption_lines(manifest.model, weights, body, backends.description.split(" (")[0], opts.precision,
                            detector or opts.detector, placement)
    return RenderSink(opts.render, info.fps, (info.width, info.height), backends.faces, caption, placement)


# ---------------------------------------------------------------------------------------------
# stages: a frame in -> (the tracks it holds, results that became final); end a track; end


class CropFamilyStage:
    """Window and frame families: detector -> tracker -> crops -> the gate -> backbone/model (+ windows).

    ``feed`` runs this frame's crops at once (one backbone call, one drain of the windows or one step-graph
    round), so results leave as early as the emit mode allows."""

    def __init__(self, backends: Backends, timer: StageTimer, opts: RunOptions) -> None:
        self.detector = _detector(opts.detector, opts.threads)
        self.tracker = _tracker(self.detector)
        self.max_age = int(self.tracker.params["lifespan_ns"] // 1_000_000)
        self.timer = timer
        self.inner = family_stage(backends, timer, opts)
        self.gate = _TrackGate(self.inner, opts.min_track_frames)
        self.geometry = _crop_geometry(backends)
        self.detector_note = describe_detector(self.detector)

    def feed(self, index: int, image: np.ndarray) -> Tuple[List[Tuple[Any, np.ndarray]], List[FrameResult]]:
        with self.timer("detect"):
            detections = self.detector.detect(image)
        with self.timer("track"):
            active = self.tracker.update(index, detections)
        for track_id, box in active:
            with self.timer("crop"):
                crop = self.geometry.crop(image, self.geometry.box(box))
            self.gate.add(track_id, index, crop)
        return active, self._take(self.inner.step())

    def end_track(self, track_id: Any) -> Tuple[List[FrameResult], bool]:
        """(results, dropped): a track shorter than --min-track-frames is dropped, never inferred."""
        if self.gate.drop_short(track_id):
            return [], True
        return self._take(self.inner.end_track(track_id)), False

    def end(self) -> List[FrameResult]:
        return self._take(self.inner.step())

    def _take(self, extra: Optional[List[FrameResult]] = None) -> List[FrameResult]:
        ready, self.inner.results = self.inner.results, []
        return ready + list(extra or [])

    @property
    def frames_dropped_short(self) -> int:
        return self.gate.dropped_frames

    def summary_extra(self) -> Dict[str, Any]:
        return {}


class SceneFamilyStage:
    """Scene family: whole frames through the maps graph, people from the center map, tracked; a track's
    results wait until it has --min-track-frames frames (shorter tracks are dropped at their end)."""

    def __init__(self, backends: Backends, timer: StageTimer, opts: RunOptions) -> None:
        from .scene_stage import SceneStage, optional_threshold, scene_detector_note

        self.threshold = optional_threshold(opts.threshold)
        self.tracker = _tracker(None)
        self.max_age = int(self.tracker.params["lifespan_ns"] // 1_000_000)
        self.timer = timer
        self.stage = SceneStage(backends, timer, self.threshold)
        self.min_frames = opts.min_track_frames
        self.held: Dict[Any, List[FrameResult]] = defaultdict(list)
        self.count: Dict[Any, int] = defaultdict(int)
        self.frames_dropped_short = 0
        self.detector_note = scene_detector_note(self.threshold)

    def feed(self, index: int, image: np.ndarray) -> Tuple[List[Tuple[Any, np.ndarray]], List[FrameResult]]:
        from .scene_stage import detections, track_results

        found = self.stage.people([image])[0]
        with self.timer("track"):
            active = self.tracker.update(index, detections(found))
        results = track_results(index, found, active)
        ready: List[FrameResult] = []
        for r in results:
            self.count[r.track_id] += 1
            if self.count[r.track_id] < self.min_frames:
                self.held[r.track_id].append(r)
                continue
            ready += self.held.pop(r.track_id, [])
            ready.append(r)
        matched = {r.track_id for r in results}
        return [(t, b) for t, b in active if t in matched], ready

    def end_track(self, track_id: Any) -> Tuple[List[FrameResult], bool]:
        held = self.held.pop(track_id, None)
        self.count.pop(track_id, None)
        if held is not None:
            self.frames_dropped_short += len(held)
            return [], True
        return [], False

    def end(self) -> List[FrameResult]:
        return []

    def summary_extra(self) -> Dict[str, Any]:
        return {"threshold": self.threshold}


def make_stage(family: str, backends: Backends, timer: StageTimer, opts: RunOptions) -> Any:
    """The stage of the export's family (feed / end_track / end); scene models find people themselves."""
    if family == "scene":
        return SceneFamilyStage(backends, timer, opts)
    if family == "track":  # WHAM: keypoints, image features and a recurrent step per track
        from .wham_video import TrackFamilyStage

        return TrackFamilyStage(backends, timer, opts)
    return CropFamilyStage(backends, timer, opts)


# ---------------------------------------------------------------------------------------------
# the loop: per-frame bookkeeping of what is final, per-track rows until the track ends


class Latency:
    """Per-frame latency (decode to final), kept as float32 milliseconds; p50/p95/max for the summary."""

    def __init__(self) -> None:
        self.values = array("f")

    def add(self, seconds: float) -> None:
        self.values.append(seconds * 1000.0)

    def summary(self) -> Dict[str, Any]:
        if not self.values:
            return {"frames": 0, "p50": None, "p95": None, "max": None}
        v = np.frombuffer(self.values, dtype=np.float32)
        return {"frames": int(len(v)), "p50": round(float(np.percentile(v, 50)), 2),
                "p95": round(float(np.percentile(v, 95)), 2), "max": round(float(v.max()), 2)}


class _OpenFrame:
    __slots__ = ("index", "captured", "image", "pending", "people", "final")

    def __init__(self, index: int, captured: float, image: Optional[np.ndarray], pending: set) -> None:
        self.index, self.captured, self.image, self.pending = index, captured, image, pending
        self.people: Dict[Any, Person] = {}
        self.final = captured


class FrameLoop:
    """Frames -> ``FrameOutput``s in frame order, each as soon as all of its people are final.

    A frame waits for the results of the tracks the stage says it holds; a track unmatched for more than
    the tracker's ``max_age`` frames has ended: its last results are pulled out, its rows written
    (``on_track``) and dropped. What is held at any time: the open frames (the emit mode's look-ahead,
    the gate's --min-track-frames) and the rows of live tracks."""

    def __init__(self, stage: Any, backends: Backends, timer: StageTimer, size: Tuple[int, int], *,
                 vertices: bool = True, keep_images: bool = False, keep_rows: bool = True) -> None:
        self.stage, self.backends, self.timer = stage, backends, timer
        self.keep_rows = keep_rows  # False: no track rows kept (the Python API hands out frames only)
        self.width, self.height = size
        self.vertices, self.keep_images = vertices, keep_images
        self.geometry = _crop_geometry(backends)
        self.open: OrderedDict[int, _OpenFrame] = OrderedDict()
        self.boxes: Dict[Tuple[Any, int], np.ndarray] = {}  # (track, frame) -> detection box, until its result
        self.rows: Dict[Any, List[Dict[str, np.ndarray]]] = {}  # live tracks' final rows
        self.last_seen: Dict[Any, int] = {}
        self.latency = Latency()
        self.tracks_seen = self.tracks_dropped = self.tracks_written = 0
        self.peak_tracks = self.peak_frames = 0

    @property
    def frames_dropped_short(self) -> int:
        return int(self.stage.frames_dropped_short)

    def run(self, frames: Iterable[Frame], on_track: Callable[[Any, Dict[str, np.ndarray]], None]
            ) -> Iterator[FrameOutput]:
        for frame in frames:
            active, results = self.stage.feed(frame.index, frame.image)
            pending = set()
            for track_id, box in active:
                if track_id not in self.last_seen:
                    self.tracks_seen += 1
                self.last_seen[track_id] = frame.index
                self.boxes[track_id, frame.index] = np.asarray(box, np.float32)[:4]
                pending.add(track_id)
            self.open[frame.index] = _OpenFrame(frame.index, frame.captured,
                                                frame.image if self.keep_images else None, pending)
            self._accept(results)
            ended = [t for t, last in self.last_seen.items() if frame.index - last > self.stage.max_age]
            for track_id in ended:
                self._end_track(track_id, on_track)
            self.peak_tracks = max(self.peak_tracks, len(self.last_seen))
            self.peak_frames = max(self.peak_frames, len(self.open))
            yield from self._final()
        self.end_all(on_track)
        yield from self._final()

    def end_all(self, on_track: Callable[[Any, Dict[str, np.ndarray]], None]) -> None:
        self._accept(self.stage.end())
        for track_id in list(self.last_seen):
            self._end_track(track_id, on_track)

    def drain_final(self) -> List[FrameOutput]:
        return list(self._final())

    def _end_track(self, track_id: Any, on_track: Callable[[Any, Dict[str, np.ndarray]], None]) -> None:
        results, dropped = self.stage.end_track(track_id)
        self._accept(results)
        self.last_seen.pop(track_id, None)
        rows = self.rows.pop(track_id, None)
        for key in [k for k in self.boxes if k[0] == track_id]:
            del self.boxes[key]
        for f in self.open.values():
            f.pending.discard(track_id)
        if dropped:
            self.tracks_dropped += 1
            return
        if rows:
            with self.timer("writing"):
                on_track(track_id, _track_arrays(track_id, rows))
            self.tracks_written += 1

    def _accept(self, results: List[FrameResult]) -> None:
        """Results that became final -> body model (one call for all of them), image facts, rows, people."""
        results = [r for r in results if (r.track_id, r.frame_index) in self.boxes]
        if not results:
            return
        res = {k: np.stack([r.outputs[k] for r in results]) for k in results[0].outputs}
        boxes = np.stack([self.boxes.pop((r.track_id, r.frame_index)) for r in results])
        if "vertices" in res:  # the model (frame family) or the scene stage gave the mesh already
            verts, joints = res["vertices"], res.get("joints3d")
        else:
            with self.timer("body_model"):
                verts, joints = self.backends.infer_body(res["pose_rotmat"], res["betas"])
        image = _image_facts(res, boxes, joints, self.width, self.height, self.geometry)
        extras = _model_extras(res, self.backends.contract)
        pose = None
        if "pose_rotmat" in res:
            pose = rotmat_to_axis_angle(np.asarray(res["pose_rotmat"], np.float32)).reshape(len(results), 72)
        now = time.perf_counter()
        for i, r in enumerate(results):
            row = {"frame_indices": np.int64(r.frame_index), "boxes": boxes[i], "cam": res["cam"][i]}
            if pose is not None:
                row["pose_rotmat"], row["pose_axis_angle"] = res["pose_rotmat"][i], pose[i]
            if "betas" in res:
                row["betas"] = res["betas"][i]
            if joints is not None:
                row["joints3d"] = joints[i]
            if self.vertices:
                row["vertices"] = verts[i]
            for key, value in {**extras, **image}.items():
                row[key] = value[i]
            if self.keep_rows:
                self.rows.setdefault(r.track_id, []).append(row)
            frame = self.open.get(r.frame_index)
            if frame is None:
                continue
            frame.people[r.track_id] = Person(
                r.track_id, boxes[i], pose[i] if pose is not None else None,
                res["betas"][i] if "betas" in res else None, res["cam"][i],
                image["orig_cam"][i] if "orig_cam" in image else None,
                image["joints2d"][i] if "joints2d" in image else None,
                joints[i] if joints is not None else None, verts[i] if self.vertices or self.keep_images else None,
                image["crop_boxes"][i] if "crop_boxes" in image else None,
                {k: v[i] for k, v in extras.items()} if self.backends.contract is not None
                and self.backends.contract.family == "track" else {})
            frame.pending.discard(r.track_id)
            frame.final = now

    def _final(self) -> Iterator[FrameOutput]:
        while self.open:
            index, frame = next(iter(self.open.items()))
            if frame.pending:
                return
            del self.open[index]
            final = max(frame.final, frame.captured)
            self.latency.add(final - frame.captured)
            people = tuple(frame.people[t] for t in sorted(frame.people, key=str))
            yield FrameOutput(index, people, frame.captured, final, frame.image)


def _track_arrays(track_id: Any, rows: List[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """A track's final rows, sorted by frame, as runtime/outputs.py's track-file arrays."""
    from .outputs import track_arrays

    rows = sorted(rows, key=lambda r: int(r["frame_indices"]))
    stacked = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    core = ("frame_indices", "boxes", "pose_rotmat", "betas", "cam", "joints3d", "vertices", "pose_axis_angle")
    return track_arrays(track_id, stacked["frame_indices"], stacked["boxes"], stacked.get("pose_rotmat"),
                        stacked.get("betas"), stacked["cam"], stacked.get("joints3d"), stacked.get("vertices"),
                        extra={k: v for k, v in stacked.items() if k not in core})


def _crop_geometry(backends: Backends) -> CropGeometry:
    """Crop side, box scale, aspect step and antialiasing of the export's contract (224 and 1.2 for exports
    without them)."""
    return CropGeometry.of(backends.contract)


@contextlib.contextmanager
def _video_backends(opts: RunOptions, opened: Optional[Backends]) -> Iterator[Backends]:
    """The backends a video run uses (``opened`` when the caller holds them), handed to ``on_backends``, with
    --render refused for exports without body-model faces."""
    with (contextlib.nullcontext(opened) if opened is not None else _open(opts)) as backends:
        if opts.on_backends:
            opts.on_backends(backends)
        if opts.render is not None and len(backends.faces) == 0:
            raise ConfigError(f"--render: {opts.export_dir} has no body-model faces ({FACES_NAME}); "
                              "re-export it with trt-export")
        yield backends


def _open(opts: RunOptions) -> ContextManager[Backends]:
    return open_backends(opts.export_dir, opts.backend, opts.precision, opts.threads, device=opts.device,
                         ort_providers=opts.ort_providers, triton_url=opts.triton_url, need_step=opts.emit == "last")


def run_features(opts: RunOptions) -> Dict[str, Any]:
    """Precomputed per-frame features (.npz): one track (N, C) under 'features', (K, N, C), or 'track_<id>' keys."""
    _check_options(opts)
    if formats_of(opts.format) != ("npz",):
        raise ConfigError(f"--format {opts.format} needs --video (its cameras are in image coordinates)")
    _check_family_options(opts, export_family(opts.export_dir), "features")
    tracks_features = features_from_npz(opts.features)
    timer = StageTimer()
    start = time.perf_counter()
    with open_backends(opts.export_dir, opts.backend, opts.precision, opts.threads, need_backbone=False,
                       device=opts.device, ort_providers=opts.ort_providers, triton_url=opts.triton_url,
                       need_step=opts.emit == "last") as backends:
        width = backends.feature_dim
        for track_id, feats in tracks_features.items():
            if feats.shape[1] != width:
                raise InputSpecError(f"{opts.features}: track {track_id} has features of width {feats.shape[1]}, "
                                     f"the model expects {width}")
        family_stage(backends, timer, opts)  # refuses families this runtime cannot run yet
        streamer = _streamer(backends, opts)
        folder = OutputFolder(opts.out, publish="end")
        try:
            folder.check_free([SUMMARY_NAME])
            npz = NpzSink(folder)
            for track_id, feats in tracks_features.items():
                with timer("temporal"):
                    results = [r for i, row in enumerate(feats) for r in streamer.push(track_id, i, row)]
                    results += streamer.end_track(track_id)
                    results += streamer.drain()  # windows still queued in a partial batch
                res = stack_by_track(results)[track_id]
                with timer("body_model"):
                    verts, joints = backends.infer_body(res["pose_rotmat"], res["betas"])
                n = len(res["frame_index"])
                with timer("writing"):
                    npz.track(track_id, track_arrays(track_id, res["frame_index"], np.full((n, 4), np.nan, np.float32),
                                                     res["pose_rotmat"], res["betas"], res["cam"], joints,
                                                     verts if opts.vertices else None))
            total = time.perf_counter() - start
            frames_done = int(sum(len(f) for f in tracks_features.values()))
            summary = {
                "input": str(opts.features), "frames_decoded": frames_done,
                "model": backends.contract.name if backends.contract is not None else None,
                "backend": backends.description, "providers": backends.providers,
                "precision": opts.precision, "emit": opts.emit, "border": opts.border,
                "export_dir": str(opts.export_dir), "weights": backends.weights_note,
                "tracks": len(npz.rows), "track_files": npz.rows,
                "timings_s": {k: round(v, 4) for k, v in timer.seconds.items()}, "total_s": round(total, 3),
                "frames_per_second": round(frames_done / total, 2) if total > 0 else None,
                "render": None, "format": "npz",
            }
            folder.write(SUMMARY_NAME, lambda f: f.write(summary_text(summary)))
            folder.commit()
        except BaseException:
            folder.abort()
            raise
    return summary


def features_from_npz(path: Optional[Path]) -> Dict[str, np.ndarray]:
    if path is None or not Path(path).is_file():
        raise InputSpecError(f"features file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError) as exc:
        raise InputSpecError(f"cannot read features from {path}: {exc}") from exc
    if "features" in arrays:
        f = arrays["features"]
        if f.ndim == 2:
            tracks = {"0": f}
        elif f.ndim == 3:
            tracks = {str(i): f[i] for i in range(f.shape[0])}
        else:
            raise InputSpecError(f"{path}: 'features' must be (N, C) or (tracks, N, C), got {f.shape}")
    else:
        tracks = {k[len("track_"):]: v for k, v in arrays.items() if k.startswith("track_")}
        if not tracks:
            raise InputSpecError(f"{path}: expected a 'features' array or 'track_<id>' arrays, found {sorted(arrays)}")
    for name, f in tracks.items():
        if f.ndim != 2 or len(f) == 0:
            raise InputSpecError(f"{path}: track {name} must be a non-empty (N, C) array, got shape {f.shape}")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tracks.items()}


STANDARD_OUTPUTS = ("pose_rotmat", "betas", "cam", "vertices", "joints3d")


def _model_extras(res: Dict[str, np.ndarray], contract: Any) -> Dict[str, np.ndarray]:
    """Frame models' own outputs beyond the standard ones (HMR 2.0's ``token``), per row; track models'
    world trajectory, foot contacts and full-image camera (WHAM)."""
    if contract is not None and contract.family == "track":
        from .wham_video import WORLD_OUTPUTS

        return {k: res[k] for k in WORLD_OUTPUTS if k in res}
    if contract is None or contract.family != "frame":
        return {}
    return {k: res[k] for k in contract.model_graph.output_names if k not in STANDARD_OUTPUTS and k in res}


def _image_facts(res: Dict[str, np.ndarray], boxes: np.ndarray, joints: Optional[np.ndarray], width: Any,
                 height: Any, geometry: CropGeometry) -> Dict[str, np.ndarray]:
    """crop_boxes, bboxes_cxcyh, orig_cam and (where the model has joints) joints2d in the original image.
    Scene results carry their own crop boxes (the letterboxed square) and 2D joints."""
    from .cameras import crop_box_cxcyh, crop_cam_to_orig_cam, joints_to_pixels

    if "crop_boxes" not in res and joints is not None and geometry.default_cameras:
        return image_space(res["cam"], boxes, joints, width, height)
    if not width or not height:
        return {}
    crop_boxes = res["crop_boxes"] if "crop_boxes" in res else \
        np.stack([geometry.box(b) for b in boxes]).astype(np.float32)
    cxcyh = crop_box_cxcyh(crop_boxes)
    out = {"crop_boxes": np.asarray(crop_boxes, np.float32), "bboxes_cxcyh": cxcyh,
           "orig_cam": crop_cam_to_orig_cam(res["cam"], cxcyh, int(width), int(height))}
    if "joints2d" in res:
        out["joints2d"] = np.asarray(res["joints2d"], np.float32)
    elif joints is not None:
        out["joints2d"] = joints_to_pixels(joints, res["cam"], crop_boxes).astype(np.float32)
    if geometry.focal_length > 0:  # a perspective crop camera (HMR 2.0): its translation, the demo's full-image one
        from .cameras import perspective_cameras

        out.update(perspective_cameras(res["cam"], cxcyh, int(width), int(height), geometry.focal_length,
                                       geometry.size))
    return out
