"""WHAM on a video (``trt-run --video`` with a ``track``-family export): detector -> tracker -> per person
ViTPose keypoints and the HMR 2.0 token -> one WHAM step for every live track -> the body model.

A WHAM export folder (``trt-export --model wham``) holds its ``init``, ``step`` and ``body_model``
graphs and two sub-folders, each a complete export verified like any other (runtime/graph_loader.py):
``hmr2/`` (crops -> the 1024-d token, and the SMPL estimate WHAM starts a track from) and ``vitpose/``
(crops -> heatmaps, decoded by runtime/keypoints.py). Per frame, as WHAM's demo: the detector's boxes
go to ViTPose; a person with fewer than 6 keypoints scored over 0.3 is skipped that frame; WHAM's box
is the square 1.2 x around the confident keypoints (the demo also median-filters it over about half a
second centred on the frame, which needs future frames: not done); HMR 2.0 reads the 256x256 crop of
that box; the camera is static (``cam_angvel`` zero). A track's results wait until it has WHAM's
``min_frames`` (30, the demo's minimum track length); a shorter track is dropped.

numpy only; Python 3.9.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from hmr_trt.errors import ConfigError

from .streaming import FrameResult
from .wham_stream import BOX_FACTOR

MINIMUM_JOINTS = 6  # detector.py: a person needs this many keypoints over VIS_THRESH in a frame
HMR2_CROP = 256
WORLD_OUTPUTS = ("root_world", "trans_world", "contact", "cam_t")  # written per frame beside the SMPL outputs


def open_keypoints(export_dir: Path, stack: contextlib.ExitStack, opts: Any) -> Any:
    """The ViTPose export under ``export_dir/vitpose`` (runtime/keypoints.py: ``open_keypoint_model``, its graph
    verified against its manifest, checked to be a keypoint model), on trt-run's backend."""
    from .keypoints import open_keypoint_model

    folder = Path(export_dir) / "vitpose"
    if not (folder / "manifest.json").is_file():
        raise ConfigError(f"{export_dir} has no ViTPose export ({folder}/manifest.json): WHAM reads ViTPose "
                          f"keypoints; run trt-export --model vitpose --out {folder}")
    return stack.enter_context(open_keypoint_model(folder, opts.backend, "fp32", opts.threads, device=opts.device,
                                                   ort_providers=opts.ort_providers))


def _extent_box(bbox: np.ndarray) -> np.ndarray:
    """WHAM's (cx, cy, scale) -> the square (x1, y1, x2, y2) of side scale * 200 / 1.2 (the keypoints' extent)."""
    cx, cy, s = (float(v) for v in bbox)
    half = s * 100.0 / BOX_FACTOR
    return np.array([cx - half, cy - half, cx + half, cy + half], np.float32)


class TrackFamilyStage:
    """The ``make_stage`` interface (feed / end_track / end) for WHAM exports."""

    def __init__(self, backends: Any, timer: Any, opts: Any) -> None:
        from .backends_select import open_backends
        from .pipeline import _detector, _tracker, describe_detector
        from .wham_stream import open_wham

        self.timer = timer
        self.detector = _detector(opts.detector, opts.threads)
        self.tracker = _tracker(self.detector)
        self.max_age = int(self.tracker.params["lifespan_ns"] // 1_000_000)
        self.detector_note = describe_detector(self.detector)
        export_dir = Path(opts.export_dir)
        self.stack = contextlib.ExitStack()
        self.wham, wham_stack = open_wham(export_dir, threads=opts.threads)
        self.stack.enter_context(wham_stack)
        hmr2_dir = export_dir / "hmr2"
        if not (hmr2_dir / "manifest.json").is_file():
            raise ConfigError(f"{export_dir} has no HMR 2.0 export ({hmr2_dir}/manifest.json): WHAM reads its token; "
                              f"run trt-export --model hmr2 --out {hmr2_dir}")
        self.hmr2 = self.stack.enter_context(open_backends(hmr2_dir, opts.backend, "fp32", opts.threads,
                                                          need_backbone=False, device=opts.device,
                                                          ort_providers=opts.ort_providers))
        self.keypoints = open_keypoints(export_dir, self.stack, opts)
        from hmr_trt.manifest import Manifest

        self.min_frames = int(Manifest.read(export_dir).config.get("min_frames", 30))
        self.streamer: Optional[Any] = None
        self.frames_dropped_short = 0
        self.skipped_few_keypoints = 0

    def feed(self, index: int, image: np.ndarray) -> Tuple[List[Tuple[Any, np.ndarray]], List[FrameResult]]:
        from .crops import crop_from_frame, normalise_crops
        from .frame_stage import infer_model
        from .wham_stream import VIS_THRESH, WHAMStreamer, box_from_keypoints

        if self.streamer is None:
            h, w = image.shape[:2]
            self.streamer = WHAMStreamer(self.wham, w, h, min_frames=self.min_frames)
        with self.timer("detect"):
            detections = self.detector.detect(image)
        with self.timer("track"):
            active = self.tracker.update(index, detections)
        if not active:
            return [], []
        boxes = np.stack([np.asarray(b, np.float32)[:4] for _, b in active])
        with self.timer("keypoints"):
            keypoints = self.keypoints.keypoints(image, boxes)
        people = [(t, b, k) for (t, b), k in zip(active, keypoints) if (k[:, 2] > VIS_THRESH).sum() >= MINIMUM_JOINTS]
        self.skipped_few_keypoints += len(active) - len(people)
        if not people:
            return [], []
        wham_boxes = [box_from_keypoints(k) for _, _, k in people]
        with self.timer("crop"):
            squares = [np.array([cx - s * 100, cy - s * 100, cx + s * 100, cy + s * 100]) for cx, cy, s in wham_boxes]
            images = normalise_crops(np.stack([crop_from_frame(image, sq, HMR2_CROP) for sq in squares]))
        with self.timer("hmr2"):
            hmr2 = infer_model(self.hmr2, {self.hmr2.contract.model_graph.input_names[0]: images})
        feed = {}
        for i, (track, _, kp) in enumerate(people):
            rot = hmr2["pose_rotmat"][i]
            feed[track] = {"keypoints": kp, "features": hmr2["token"][i], "bbox": wham_boxes[i],
                           "init": {"global_orient": rot[0], "body_pose": rot[1:], "betas": hmr2["betas"][i]}}
        with self.timer("model"):
            released = self.streamer.step_frame(index, feed)
        results = [FrameResult(t, f, {k: np.asarray(v) for k, v in out.items()}) for t, f, out in released]
        # the person's box is WHAM's: the square around the confident keypoints, so that the contract's
        # geometry (1.2 x the box) is the square WHAM's crop camera ``cam`` refers to
        return [(t, _extent_box(box)) for (t, _, _), box in zip(people, wham_boxes)], results

    def end_track(self, track_id: Any) -> Tuple[List[FrameResult], bool]:
        if self.streamer is None or track_id not in self.streamer.tracks.frames:
            return [], False
        frames = self.streamer.tracks.frames[track_id]
        self.streamer.end_track(track_id)
        if frames < self.min_frames:
            self.frames_dropped_short += frames
            return [], True
        return [], False

    def end(self) -> List[FrameResult]:
        return []

    def summary_extra(self) -> Dict[str, Any]:
        return {"keypoints": "vitpose", "features": "hmr2 token", "min_track_frames": self.min_frames,
                "people_skipped_few_keypoints": self.skipped_few_keypoints,
                "camera": "static (cam_angvel 0)"}
