"""WHAM frame by frame: per-track recurrent state for its step graph, batched across tracks.

WHAM's network (``export/models/wham``) is causal: every output of frame t reads frames <= t. Its
export is two graphs: ``init`` (the first frame's HMR 2.0 SMPL estimate and normalised keypoints ->
the state before frame 0) and ``step`` (one frame's inputs and the state -> that frame's SMPL
pose, shape, cameras, foot contacts, world root orientation and translation, and the next state).
``WHAMTracks`` keeps one state per track (all of it named in the contract: each LSTM's (h, c), the
fed-back values, the running world translation before and after the refiner, the previous feet),
gathers the tracks that have a new frame into one batch, calls the backend once and scatters the
next states back. Fed a whole track frame by frame it equals the official whole-sequence forward.

Also here: the official input normalisation (``lib/data/utils/normalizer.py``): keypoints relative
to the box, in [-1, 1] over its side, followed by the box's centre and size relative to the image;
keypoints scored under 0.3 are masked (``dataset_custom.py``), and the box from the keypoints
scored over 0.3 (``detector.py``: square, 1.2 x the larger side).

Any backend with ``infer(feed: dict[str, ndarray]) -> dict[str, ndarray]`` works. numpy only; Python 3.9.
"""

from __future__ import annotations

from typing import Any, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from hmr_trt.errors import ConfigError, InputSpecError

KEYPOINTS_THR = 0.3  # dataset_custom.py: keypoints scored under this are masked
VIS_THRESH = 0.3  # detector.py: keypoints that make the box
BOX_FACTOR = 1.2  # detector.py compute_bboxes_from_keypoints s_factor
N_JOINTS = 17


def box_from_keypoints(keypoints: np.ndarray) -> np.ndarray:
    """(17, 3) [x, y, score] in pixels -> (cx, cy, scale) with scale * 200 the square box's side
    (1.2 x the larger side of the box around the keypoints scored over 0.3; all when none is)."""
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.shape != (N_JOINTS, 3):
        raise InputSpecError(f"wham: keypoints have shape {kp.shape}, expected ({N_JOINTS}, 3) [x, y, score]")
    seen = kp[:, 2] > VIS_THRESH
    pts = kp[seen, :2] if seen.any() else kp[:, :2]
    lo, hi = pts.min(0), pts.max(0)
    side = max(hi[0] - lo[0], hi[1] - lo[1])
    return np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, side * BOX_FACTOR / 200.0])


def normalize_keypoints(keypoints: np.ndarray, bbox: np.ndarray, width: float, height: float
                        ) -> Tuple[np.ndarray, np.ndarray]:
    """One frame: keypoints (17, 3) [x, y, score] in pixels, bbox (cx, cy, scale) ->
    (the network's keypoint input (37,) float32, mask (17,) float32: 1 where the score is under 0.3)."""
    kp = np.asarray(keypoints, dtype=np.float64)
    box = np.asarray(bbox, dtype=np.float64).reshape(-1)
    if kp.shape != (N_JOINTS, 3):
        raise InputSpecError(f"wham: keypoints have shape {kp.shape}, expected ({N_JOINTS}, 3) [x, y, score]")
    if box.shape != (3,) or not box[2] > 0:
        raise InputSpecError(f"wham: bbox {box.tolist()} is not (cx, cy, scale) with scale > 0")
    side = box[2] * 200.0
    patch = (kp[:, :2] - box[:2]) * (224.0 / side) + 112.0  # the 224-pixel patch (transform_keypoints)
    norm = (2.0 * patch / 224.0 - 1.0).astype(np.float32)
    res = np.array([width, height], dtype=np.float32)
    longest = res.max()
    centre = 2 * box[:2].astype(np.float32) / longest - res / longest
    scale = np.float32(box[2]) * np.float32(200) / longest
    x = np.concatenate([norm.reshape(-1), centre.astype(np.float32), np.array([scale], np.float32)])
    return x.astype(np.float32), (kp[:, 2] < KEYPOINTS_THR).astype(np.float32)


def camera_row(width: float, height: float, focal: Optional[float] = None) -> np.ndarray:
    """(width, height, focal) for the step's ``camera`` input; the focal length defaults to the image
    diagonal (``compute_cam_intrinsics``: about 53 degrees across the diagonal)."""
    f = float(np.hypot(width, height)) if focal is None else float(focal)
    return np.array([width, height, f], np.float32)


def cam_angvel_from_dpvo(trajectory: np.ndarray, fps: float) -> np.ndarray:
    """A camera trajectory in DPVO's layout ((T, 7): x, y, z, qx, qy, qz, qw, camera to world) -> the per-frame
    ``cam_angvel`` (T, 6) as ``dataset_custom.convert_dpvo_to_cam_angvel`` makes it: frame t gets the
    rotation from frame t to frame t + 1 (one frame of look-ahead) as 6D minus the identity's, times the
    frame rate; the last frame repeats the first's. A static camera gives zeros (``cam_angvel`` of the
    step graph then needs no trajectory at all)."""
    traj = np.asarray(trajectory, dtype=np.float64)
    if traj.ndim != 2 or traj.shape[1] != 7 or len(traj) < 2:
        raise InputSpecError(f"wham: a camera trajectory must be (T >= 2, 7) [x, y, z, qx, qy, qz, qw], "
                             f"got {traj.shape}")
    x, y, z, w = (traj[:, i] for i in (3, 4, 5, 6))
    norm = np.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    c2w = np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
                    2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
                    2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1).reshape(-1, 3, 3)
    r = np.swapaxes(c2w, -1, -2)  # world to camera
    rel = r[:-1] @ np.swapaxes(r[1:], -1, -2)
    angvel = (rel[:, :2, :].reshape(-1, 6) - np.array([1.0, 0, 0, 0, 1.0, 0])) * float(fps)
    return np.concatenate([angvel, angvel[:1]]).astype(np.float32)


class WHAMTracks:
    """Per-track WHAM state for the ``init``/``step`` graphs, batched across tracks.

    ``state_names``: the step graph's state inputs (its outputs are ``next_<name>``); ``frame_shapes``:
    {step input name: per-frame shape} for the frame inputs (keypoints, mask, features, cam_angvel,
    bbox, camera)."""

    def __init__(self, init_backend: Any, step_backend: Any, state_names: Sequence[str],
                 frame_shapes: Mapping[str, Tuple[int, ...]], init_shapes: Mapping[str, Tuple[int, ...]],
                 max_batch: Optional[int] = None) -> None:
        if max_batch is not None and max_batch < 1:
            raise ConfigError(f"wham streaming: max_batch must be >= 1, got {max_batch}")
        self.init_backend, self.step_backend = init_backend, step_backend
        self.state_names = tuple(state_names)
        self.frame_shapes = {k: tuple(v) for k, v in frame_shapes.items()}
        self.init_shapes = {k: tuple(v) for k, v in init_shapes.items()}
        self.max_batch = max_batch
        self._states: Dict[Hashable, Dict[str, np.ndarray]] = {}
        self.frames: Dict[Hashable, int] = {}

    @classmethod
    def from_contract(cls, init_backend: Any, step_backend: Any, contract: Any,
                      max_batch: Optional[int] = None) -> WHAMTracks:
        """From WHAM's ``ModelContract`` (or its manifest dict): graphs ``init`` and ``step``."""
        if isinstance(contract, Mapping):
            from hmr_trt.contract import ModelContract

            contract = ModelContract.from_dict(contract)
        step, init = contract.graph("step"), contract.graph("init")
        states = tuple(t.name[len("next_"):] for t in step.outputs if t.name.startswith("next_"))
        frame = {t.name: tuple(t.shape[1:]) for t in step.inputs if t.name not in states}
        return cls(init_backend, step_backend, states, frame, {t.name: tuple(t.shape[1:]) for t in init.inputs},
                   max_batch=max_batch)

    @property
    def tracks(self) -> List[Hashable]:
        return list(self._states)

    def _batches(self, items: List[Hashable]) -> List[List[Hashable]]:
        size = self.max_batch or max(len(items), 1)
        return [items[i:i + size] for i in range(0, len(items), size)]

    def _stack(self, rows: Mapping[Hashable, Mapping[str, Any]], shapes: Mapping[str, Tuple[int, ...]],
               what: str) -> Dict[str, np.ndarray]:
        feed = {}
        for name, shape in shapes.items():
            arrs = []
            for track, row in rows.items():
                if name not in row:
                    raise InputSpecError(f"wham {what}: track {track!r} lacks {name!r} (needs {', '.join(shapes)})")
                a = np.asarray(row[name], dtype=np.float32)
                if a.shape != shape:
                    raise InputSpecError(f"wham {what}: {name} of track {track!r} has shape {a.shape}, "
                                         f"expected {shape}")
                arrs.append(a)
            feed[name] = np.stack(arrs)
        return feed

    def start(self, inits: Mapping[Hashable, Mapping[str, Any]]) -> None:
        """New tracks: {track: {init_global_orient (3, 3), init_body_pose (23, 3, 3), init_betas (10,),
        keypoints (37,)}} (the first frame's HMR 2.0 estimate and its normalised keypoints)."""
        if not inits:
            return
        for track in inits:
            if track in self._states:
                raise ConfigError(f"wham streaming: track {track!r} is already started; end it first")
        feed_all = self._stack(inits, self.init_shapes, "init")
        tracks = list(inits)
        for chunk in self._batches(tracks):
            idx = [tracks.index(t) for t in chunk]
            out = self.init_backend.infer({k: v[idx] for k, v in feed_all.items()})
            for i, track in enumerate(chunk):
                self._states[track] = {n: np.array(out[n][i], np.float32) for n in self.state_names}
                self.frames[track] = 0

    def step(self, frames: Mapping[Hashable, Mapping[str, Any]]) -> Dict[Hashable, Dict[str, np.ndarray]]:
        """One new frame for each started track in ``frames`` ({track: {keypoints, mask, features,
        cam_angvel, bbox, camera}}): that frame's outputs per track, states advanced."""
        if not frames:
            return {}
        for track in frames:
            if track not in self._states:
                raise ConfigError(f"wham streaming: track {track!r} has no state; start it with its first "
                                  "frame's SMPL estimate (start)")
        feed_all = self._stack(frames, self.frame_shapes, "step")
        tracks = list(frames)
        results: Dict[Hashable, Dict[str, np.ndarray]] = {}
        for chunk in self._batches(tracks):
            idx = [tracks.index(t) for t in chunk]
            feed = {k: v[idx] for k, v in feed_all.items()}
            for name in self.state_names:
                feed[name] = np.stack([self._states[t][name] for t in chunk])
            out = self.step_backend.infer(feed)
            for i, track in enumerate(chunk):
                self._states[track] = {n: np.array(out["next_" + n][i], np.float32) for n in self.state_names}
                self.frames[track] += 1
                results[track] = {k: v[i] for k, v in out.items() if not k.startswith("next_")}
        return results

    def end(self, track: Hashable) -> None:
        self._states.pop(track, None)
        self.frames.pop(track, None)


def open_wham(export_dir: Any, threads: int = 0, max_batch: Optional[int] = None) -> Tuple[WHAMTracks, Any]:
    """A WHAM export folder (``trt-export --model wham``) -> (``WHAMTracks`` on ONNX Runtime, an ExitStack to
    close). Both graphs are verified against the manifest and its contract first (runtime/graph_loader.py)."""
    import contextlib
    from pathlib import Path

    from hmr_trt.manifest import Manifest

    from .backends import OnnxRuntimeBackend
    from .graph_loader import check_contract, contract_from_manifest, graph_from_manifest

    root = Path(export_dir)
    manifest = Manifest.read(root)
    contract = check_contract(contract_from_manifest(manifest, str(root / "manifest.json")), str(root / "manifest.json"))
    if contract.family != "track" or contract.graph_for("init") is None:
        raise ConfigError(f"{root}: the export is of {contract.name} ({contract.family} family), not a WHAM-like "
                          "track model with init and step graphs")
    stack = contextlib.ExitStack()
    backends = {}
    for name in ("init", "step"):
        art = manifest.find(name, "onnx", "fp32")
        if art is None:
            raise ConfigError(f"{root}/manifest.json lists no ONNX for the {name} graph; re-run trt-export")
        verified = graph_from_manifest(root, manifest, art, contract)
        backends[name] = stack.enter_context(OnnxRuntimeBackend(verified.path, threads=threads))
    return WHAMTracks.from_contract(backends["init"], backends["step"], contract, max_batch=max_batch), stack


class WHAMStreamer:
    """The per-frame glue a video pipeline calls: raw keypoints (ViTPose, pixels with scores), the HMR 2.0
    feature, and on a track's first frame its HMR 2.0 SMPL estimate -> WHAM's outputs, one batched step
    per video frame for all live tracks.

    The box is the demo's rule on this frame's keypoints (``box_from_keypoints``; the demo also
    median-filters the boxes over about half a second centred on each frame, which needs future
    frames: not done here), the camera's angular velocity is zero (a static camera) unless given per
    frame, and a track's results are held until it has ``min_frames`` frames (the demo drops shorter
    tracks): ``end_track`` of a shorter one drops them, nothing emitted."""

    def __init__(self, tracks: WHAMTracks, width: float, height: float, focal: Optional[float] = None,
                 min_frames: int = 30) -> None:
        if min_frames < 1:
            raise ConfigError(f"wham streaming: min_frames must be >= 1, got {min_frames}")
        self.tracks = tracks
        self.width, self.height = float(width), float(height)
        self.camera = camera_row(width, height, focal)
        self.min_frames = int(min_frames)
        self._held: Dict[Hashable, List[Tuple[int, Dict[str, np.ndarray]]]] = {}
        self.dropped: List[Hashable] = []

    def step_frame(self, frame_index: int, people: Mapping[Hashable, Mapping[str, Any]]
                   ) -> List[Tuple[Hashable, int, Dict[str, np.ndarray]]]:
        """``people``: {track: {"keypoints": (17, 3), "features": (C,), "init": {"global_orient" (3, 3),
        "body_pose" (23, 3, 3), "betas" (10,)} on the track's first frame, optional "bbox" (cx, cy, scale),
        "cam_angvel" (6,)}} -> [(track, frame index, outputs)] released by this frame."""
        starts, frames = {}, {}
        for track, p in people.items():
            box = np.asarray(p["bbox"], np.float64) if p.get("bbox") is not None else box_from_keypoints(p["keypoints"])
            x, mask = normalize_keypoints(p["keypoints"], box, self.width, self.height)
            if track not in self.tracks.frames:
                init = p.get("init")
                if init is None:
                    raise InputSpecError(f"wham: track {track!r} starts at frame {frame_index} without its first "
                                         "frame's SMPL estimate (init): WHAM starts every track from one")
                starts[track] = {"init_global_orient": init["global_orient"], "init_body_pose": init["body_pose"],
                                 "init_betas": init["betas"], "keypoints": x}
            angvel = p.get("cam_angvel")
            frames[track] = {"keypoints": x, "mask": mask, "features": p["features"], "bbox": box,
                             "cam_angvel": np.zeros(6, np.float32) if angvel is None else angvel, "camera": self.camera}
        self.tracks._stack(frames, self.tracks.frame_shapes, "step")  # every shape checked before any state moves
        self.tracks.start(starts)
        released: List[Tuple[Hashable, int, Dict[str, np.ndarray]]] = []
        for track, out in self.tracks.step(frames).items():
            held = self._held.setdefault(track, [])
            held.append((int(frame_index), out))
            if self.tracks.frames[track] >= self.min_frames:
                released += [(track, f, o) for f, o in held]
                held.clear()
        return released

    def end_track(self, track: Hashable) -> None:
        """A track that left: forgotten; if it never reached ``min_frames`` its held results are dropped."""
        if self._held.pop(track, None) and self.tracks.frames.get(track, 0) < self.min_frames:
            self.dropped.append(track)
        self.tracks.end(track)
