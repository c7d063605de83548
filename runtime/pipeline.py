"""The job behind ``trt-run``: frames -> people -> crops -> features -> windows -> meshes -> files.

Stages, each timed: decode, detect, track, crop, backbone, temporal, body model, writing,
render. The model comes from the export's contract (manifest.json): the runtime branches only on
its family, emit and causal flags, never on model names. ``FAMILY_STAGES`` maps a family to the
stage that turns a track's crops into per-frame results: for ``window`` models per-frame features
stream through ``WindowStreamer`` as they are computed, so the model graph sees windows as soon as
they are complete. A track's crops wait at ``_TrackGate`` until it has ``min_track_frames`` frames,
so tracks shorter than that (detector flicker) never reach the backbone or the model. Everything is written into a staging
directory that becomes ``--out`` only at the end (Ctrl-C or an error leaves nothing behind).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Optional

import numpy as np

from hmr_trt.errors import ConfigError, InputSpecError
from hmr_trt.manifest import staged_output

from .backends_select import FACES_NAME, Backends, open_backends
from .cameras import image_space
from .crops import CropBatcher, crop_from_frame, square_box
from .detect import describe_detector
from .streaming import BORDERS, FrameResult, StreamSpec, WindowStreamer, check_emit, stack_by_track
from .track import MIN_TRACK_LENGTH, Track, TrackLog
from .video import frames_from_video, open_video

FORMATS = ("npz", "vibe")
STAGES = ("decode", "detect", "track", "crop", "backbone", "temporal", "body_model", "writing", "render")
SUMMARY_NAME = "summary.json"


@dataclass
class RunOptions:
    out: Path
    export_dir: Path
    video: Optional[Path] = None
    features: Optional[Path] = None
    backend: str = "auto"  # auto | tensorrt | onnxruntime | triton
    triton_url: Optional[str] = None  # --backend triton: the server's HOST:PORT
    precision: str = "fp32"
    emit: str = "center"
    detector: str = "auto"  # auto (SSDLite when converted, else HOG) | ssdlite | hog | a path to the user's ONNX
    format: str = "npz"  # npz: track_<id>.npz files; vibe: also the peers' vibe_output.pkl (runtime/vibe_format.py)
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

    def end(self) -> None:
        self.dropped_frames = sum(len(v) for v in self.held.values())
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
    if opts.format == "vibe":
        from .vibe_format import peer_demo

        peer_demo(_export_model(opts.export_dir))  # only the models whose demo writes such a file
    if opts.format == "vibe" and family == "frame":
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
    """The whole path on a video; returns the summary (also written to ``out/summary.json``).
    ``opened``: backends already open (a Ray actor runs many videos on one set)."""
    _check_options(opts)
    if opts.format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {opts.format!r}")
    if opts.video is None:
        raise ConfigError("run_video needs a video")
    cap, info = open_video(opts.video)  # missing / empty / non-video files fail here, before --out is touched
    cap.release()
    family = export_family(opts.export_dir)
    _check_family_options(opts, family, "video")
    if family == "scene":
        return _run_scene_video(opts, info, progress, opened)
    detector = _detector(opts.detector, opts.threads)
    tracker = _tracker(detector)
    timer = StageTimer()
    log = TrackLog()
    start = time.perf_counter()
    with _video_backends(opts, opened) as backends:
        stage = family_stage(backends, timer, opts)
        features = _TrackGate(stage, opts.min_track_frames)
        crop_size, crop_scale = _crop_geometry(backends)
        decoded = 0
        for frame_index, frame in _timed_frames(opts.video, opts.max_frames, timer):
            decoded += 1
            with timer("detect"):
                detections = detector.detect(frame)
            with timer("track"):
                active = tracker.update(frame_index, detections)
                log.add(frame_index, active)
            for track_id, box in active:
                with timer("crop"):
                    crop = crop_from_frame(frame, square_box(np.asarray(box), crop_scale), crop_size)
                features.add(track_id, frame_index, crop)
            if progress:
                progress(1)
        features.end()
        kept = {t.track_id: t for t in log.tracks(opts.min_track_frames)}
        results = stack_by_track([r for r in stage.results if r.track_id in kept])
        summary = _finish(opts, backends, timer, results, kept, start, {
            "input": str(opts.video), "width": info.width, "height": info.height, "fps": info.fps,
            "frames_declared": info.frames_declared, "frames_decoded": decoded,
            "frames_lost": max(info.frames_declared - decoded, 0) if opts.max_frames is None else 0,
            "tracks_detected": len(log), "tracks_dropped_short": len(log) - len(kept),
            "frames_dropped_short": features.dropped_frames,
            "detector": describe_detector(detector),
        })
    return summary


def _crop_geometry(backends: Backends) -> tuple:
    """(crop side, box scale) of the export's contract (224 and 1.2 for exports without them)."""
    c = backends.contract
    return (int(c.crop_size) if c is not None and c.crop_size else 224,
            float(c.bbox_scale) if c is not None and c.bbox_scale else 1.2)


def _run_scene_video(opts: RunOptions, info: Any, progress: Optional[Progress],
                     opened: Optional[Backends]) -> Dict[str, Any]:
    """Scene family: batches of whole frames through the maps graph, people from the center map, tracked."""
    from .scene_stage import SceneStage, detections, optional_threshold, scene_detector_note, track_results

    threshold = optional_threshold(opts.threshold)
    tracker = _tracker(None)
    timer = StageTimer()
    log = TrackLog()
    start = time.perf_counter()
    results: List[FrameResult] = []
    with _video_backends(opts, opened) as backends:
        stage = SceneStage(backends, timer, threshold)
        batch: List[tuple] = []
        decoded = 0

        def flush() -> None:
            people = stage.people([f for _, f in batch])
            for (frame_index, _), found in zip(batch, people):
                with timer("track"):
                    active = tracker.update(frame_index, detections(found))
                    log.add(frame_index, active)
                results.extend(track_results(frame_index, found, active))
            if progress:
                progress(len(batch))
            batch.clear()

        for frame_index, frame in _timed_frames(opts.video, opts.max_frames, timer):
            decoded += 1
            batch.append((frame_index, frame))
            if len(batch) >= opts.backbone_batch:
                flush()
        flush()
        kept = {t.track_id: t for t in log.tracks(opts.min_track_frames)}
        stacked = stack_by_track([r for r in results if r.track_id in kept])
        summary = _finish(opts, backends, timer, stacked, kept, start, {
            "input": str(opts.video), "width": info.width, "height": info.height, "fps": info.fps,
            "frames_declared": info.frames_declared, "frames_decoded": decoded,
            "frames_lost": max(info.frames_declared - decoded, 0) if opts.max_frames is None else 0,
            "tracks_detected": len(log), "tracks_dropped_short": len(log) - len(kept),
            "detector": scene_detector_note(threshold), "threshold": threshold,
        })
    return summary


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


def _timed_frames(video: Path, max_frames: Optional[int], timer: StageTimer) -> Iterator[tuple]:
    """frames_from_video, with the time spent decoding charged to the 'decode' stage."""
    frames = frames_from_video(video, max_frames)
    while True:
        with timer("decode"):
            item = next(frames, None)
        if item is None:
            return
        yield item


def run_features(opts: RunOptions) -> Dict[str, Any]:
    """Precomputed per-frame features (.npz): one track (N, C) under 'features', (K, N, C), or 'track_<id>' keys."""
    _check_options(opts)
    if opts.format != "npz":
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
        results: List[FrameResult] = []
        with timer("temporal"):
            for track_id, feats in tracks_features.items():
                for i, row in enumerate(feats):
                    results.extend(streamer.push(track_id, i, row))
                results.extend(streamer.end_track(track_id))
            results.extend(streamer.flush())  # windows still queued in a partial batch
        logs = {t: Track(t, list(range(len(f))), [np.full(4, np.nan, np.float32)] * len(f))
                for t, f in tracks_features.items()}
        summary = _finish(opts, backends, timer, stack_by_track(results), logs, start, {
            "input": str(opts.features), "frames_decoded": int(sum(len(f) for f in tracks_features.values())),
        })
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


def _finish(opts: RunOptions, backends: Backends, timer: StageTimer, results: Dict[Any, Dict[str, np.ndarray]],
            logs: Dict[Any, Track], start: float, facts: Dict[str, Any]) -> Dict[str, Any]:
    """Body model on the emitted frames, per-track .npz files, the render, summary.json; all staged."""
    from .outputs import write_summary_json, write_track_npz

    with staged_output(opts.out, replace_marker=SUMMARY_NAME) as stage:
        meshes: Dict[Any, Dict[str, np.ndarray]] = {}
        track_rows = []
        crop_scale = _crop_geometry(backends)[1]
        for track_id, res in sorted(results.items(), key=lambda kv: str(kv[0])):
            if "vertices" in res:  # the model (frame family) or the scene stage gave the mesh already
                verts, joints = res["vertices"], res.get("joints3d")
            else:
                with timer("body_model"):
                    verts, joints = backends.infer_body(res["pose_rotmat"], res["betas"])
            log = logs[track_id]
            frames = np.asarray(res["frame_index"])
            box_of = dict(zip(log.frames, log.boxes))
            boxes = np.stack([box_of[int(f)][:4] for f in frames]).astype(np.float32)  # drop the score
            image = _image_facts(res, boxes, joints, facts.get("width"), facts.get("height"), crop_scale)
            with timer("writing"):
                name = f"track_{track_id}.npz"
                write_track_npz(stage / name, track_id, frames, boxes, res.get("pose_rotmat"), res.get("betas"),
                                res["cam"], joints, verts if opts.vertices else None, extra=image)
            meshes[track_id] = {"frames": frames, "boxes": boxes, "vertices": verts, "cam": res["cam"],
                                "pose_rotmat": res.get("pose_rotmat"), "betas": res.get("betas"), "joints3d": joints,
                                **image}
            track_rows.append({"id": str(track_id), "file": name, "frames": int(len(frames)),
                               "first_frame": int(frames.min()), "last_frame": int(frames.max())})
        if opts.format == "vibe":
            with timer("writing"):
                _write_vibe(stage, meshes, _export_model(opts.export_dir), facts.get("width"), facts.get("height"))
        if opts.render is not None and opts.video is not None:
            with timer("render"):
                _render(opts, meshes, backends, facts.get("detector", ""))
        total = time.perf_counter() - start
        frames_done = facts.get("frames_decoded", 0)
        summary = {
            **facts,
            "model": backends.contract.name if backends.contract is not None else None,
            "backend": backends.description, "providers": backends.providers,
            "precision": opts.precision, "emit": opts.emit, "border": opts.border,
            "export_dir": str(opts.export_dir), "weights": backends.weights_note,
            "tracks": len(track_rows), "track_files": track_rows,
            "timings_s": {k: round(v, 4) for k, v in timer.seconds.items()}, "total_s": round(total, 3),
            "frames_per_second": round(frames_done / total, 2) if total > 0 else None,
            "render": str(opts.render) if opts.render else None, "format": opts.format,
        }
        write_summary_json(stage / SUMMARY_NAME, summary)
    return summary


def _image_facts(res: Dict[str, np.ndarray], boxes: np.ndarray, joints: Optional[np.ndarray], width: Any,
                 height: Any, crop_scale: float) -> Dict[str, np.ndarray]:
    """crop_boxes, bboxes_cxcyh, orig_cam and (where the model has joints) joints2d in the original image.
    Scene results carry their own crop boxes (the letterboxed square) and 2D joints."""
    from .cameras import crop_box_cxcyh, crop_cam_to_orig_cam, joints_to_pixels

    if "crop_boxes" not in res and joints is not None and crop_scale == 1.2:
        return image_space(res["cam"], boxes, joints, width, height)
    if not width or not height:
        return {}
    crop_boxes = res["crop_boxes"] if "crop_boxes" in res else \
        np.stack([square_box(b, crop_scale) for b in boxes]).astype(np.float32)
    cxcyh = crop_box_cxcyh(crop_boxes)
    out = {"crop_boxes": np.asarray(crop_boxes, np.float32), "bboxes_cxcyh": cxcyh,
           "orig_cam": crop_cam_to_orig_cam(res["cam"], cxcyh, int(width), int(height))}
    if "joints2d" in res:
        out["joints2d"] = np.asarray(res["joints2d"], np.float32)
    elif joints is not None:
        out["joints2d"] = joints_to_pixels(joints, res["cam"], crop_boxes).astype(np.float32)
    return out


def _write_vibe(stage: Path, meshes: Dict[Any, Dict[str, np.ndarray]], model: str, width: Any, height: Any) -> None:
    """The file ``model``'s official demo writes (runtime/vibe_format.py), from the tracks' meshes."""
    from .outputs import rotmat_to_axis_angle
    from .vibe_format import write_peer_output

    tracks = {}
    for track_id, m in meshes.items():
        if "crop_boxes" not in m:
            raise ConfigError("--format vibe needs a video (cameras in image coordinates), not --features")
        n = len(m["frames"])
        tracks[track_id] = {**m, "pose": rotmat_to_axis_angle(np.asarray(m["pose_rotmat"])).reshape(n, 72)}
    write_peer_output(stage, model, tracks, width, height)


def _render(opts: RunOptions, meshes: Dict[Any, Dict[str, np.ndarray]], backends: Backends, detector: str) -> None:
    from hmr_trt.manifest import Manifest

    from .render import PLACEMENT_BOX, PLACEMENT_CAMERA, VideoWriterAtomic, caption_lines, render_tracks

    manifest = Manifest.read(opts.export_dir)
    notes = backends.weights_note
    seeded = "seeded" in notes
    body = next((n for n in manifest.notes if n.startswith("body model")), "body model: unknown")
    body = body.split(";")[0].split(":", 1)[-1].strip()  # "SYNTHETIC, NOT SMPL (3624 vertices), generated ..."
    weights = "seeded defaults (untrained)" if seeded else \
        str(manifest.config.get("checkpoint") or "from the export's checkpoint")
    placement = PLACEMENT_BOX if opts.fit_to_box else PLACEMENT_CAMERA  # seeded weights too: their camera is shaped
    caption = caption_lines(manifest.model, weights, body, backends.description.split(" (")[0], opts.precision,
                            detector or opts.detector, placement)
    cap, info = open_video(opts.video)
    cap.release()
    with VideoWriterAtomic(opts.render, info.fps or 25.0, (info.width, info.height)) as writer:
        render_tracks(frames_from_video(opts.video, opts.max_frames), writer, meshes, backends.faces, caption,
                      placement)
