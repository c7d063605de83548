"""Where results go: one table of output formats (``FORMATS``), each a sink fed as results become final.

A sink sees ``frame(output)`` for every input frame once all of its people are final (in frame
order), ``track(track_id, arrays)`` when a track has ended (its whole rows, runtime/outputs.py keys)
and ``close()`` at the end of the run. Files go through ``hmr_trt.manifest.OutputFolder``: temporary
names in --out renamed into place per file, never touching what the run did not write.

=========  ==============================================  ===========================================
format     files                                           written
=========  ==============================================  ===========================================
npz        ``track_<id>.npz`` (runtime/outputs.py keys)    when the track ends (the rest at the end)
vibe       + the peer demo's ``*_output.pkl``                at the end, from the track files
jsonl      ``frames.jsonl``: one line per input frame      as each frame becomes final (flushed)
=========  ==============================================  ===========================================

``--render`` (not a format: it takes a path anywhere) is a sink too, drawing each frame as it
becomes final. numpy (+ OpenCV, joblib for vibe) only; Python 3.9-compatible.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from hmr_trt.errors import ConfigError, OutputDirError
from hmr_trt.manifest import OutputFolder

JSONL_NAME = "frames.jsonl"


@dataclass(frozen=True)
class Person:
    """One person in one frame, in the original image (``None`` where the model has no such output)."""

    track_id: Any
    box: np.ndarray  # (4,) detection box x1, y1, x2, y2, pixels
    pose: Optional[np.ndarray]  # (72,) SMPL axis-angle (global orient first)
    betas: Optional[np.ndarray]  # (10,)
    cam: np.ndarray  # (3,) weak-perspective camera of the square crop (s, tx, ty)
    orig_cam: Optional[np.ndarray]  # (4,) the camera in the original image (sx, sy, tx, ty)
    joints2d: Optional[np.ndarray]  # (J, 2) pixels
    joints3d: Optional[np.ndarray]  # (J, 3) metres
    vertices: Optional[np.ndarray]  # (V, 3) metres; None with vertices=False
    crop_box: Optional[np.ndarray]  # (4,) the square the crop was cut from
    # model outputs beyond these (track models: WHAM's root_world (3, 3), trans_world (3,) metres, contact (4,),
    # cam_t (3,) the camera translation in the full image)
    extras: Dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class FrameOutput:
    """One input frame once all of its people are final."""

    index: int
    people: Tuple[Person, ...]
    captured: float  # time.perf_counter() when the frame was decoded (or handed in)
    final: float  # time.perf_counter() when its last person became final
    image: Optional[np.ndarray] = None  # the BGR frame, kept only for sinks that draw on it

    @property
    def latency_s(self) -> float:
        return self.final - self.captured


def _row(value: Optional[np.ndarray]) -> Any:
    return None if value is None else np.round(np.asarray(value, np.float64), 6).tolist()


class JsonlSink:
    """``frames.jsonl``: ``{"frame", "latency_ms", "people": [{"track_id", "box", "pose", "betas", "cam",
    "orig_cam", "joints2d"}]}`` per input frame, one line each, flushed when the frame is final."""

    def __init__(self, folder: OutputFolder) -> None:
        self.folder = folder
        self.name = JSONL_NAME
        if folder.publish == "now":  # live: the file is in place from the start and grows line by line
            self.path = folder.claim(self.name)
            self.tmp: Optional[Path] = None
            folder.record(self.path)
            target = self.path
        else:
            self.tmp = folder.temp_path(self.name)
            target = self.tmp
        try:
            self.file = open(target, "w", encoding="utf-8")
        except OSError as exc:
            raise OutputDirError(f"cannot write {folder.out / self.name}: {exc.strerror or exc}") from exc
        self.lines = 0

    def frame(self, out: FrameOutput) -> None:
        people = [{"track_id": p.track_id, "box": _row(p.box), "pose": _row(p.pose), "betas": _row(p.betas),
                   "cam": _row(p.cam), "orig_cam": _row(p.orig_cam), "joints2d": _row(p.joints2d),
                   **{k: _row(v) for k, v in p.extras.items()}}
                  for p in out.people]
        line = json.dumps({"frame": out.index, "latency_ms": round(out.latency_s * 1000, 3), "people": people},
                          allow_nan=False, default=str)
        self.file.write(line + "\n")  # whole lines only: a reader never sees half of one
        self.file.flush()
        self.lines += 1

    def track(self, track_id: Any, arrays: Dict[str, np.ndarray]) -> None:
        pass

    def close(self) -> List[str]:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if self.tmp is not None:
            self.folder.place(self.name, self.tmp)
        return [self.name]

    def abort(self) -> None:
        if not self.file.closed:
            self.file.close()


class NpzSink:
    """``track_<id>.npz`` per track, written when the track ends."""

    def __init__(self, folder: OutputFolder) -> None:
        self.folder = folder
        self.rows: List[Dict[str, Any]] = []
        self.paths: Dict[Any, Path] = {}  # track id -> where its file is now (temporary name until commit)

    def frame(self, out: FrameOutput) -> None:
        pass

    def track(self, track_id: Any, arrays: Dict[str, np.ndarray]) -> None:
        name = f"track_{track_id}.npz"
        tmp = self.folder.temp_path(name)
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        except OSError as exc:
            raise OutputDirError(f"cannot write {self.folder.out / name}: {exc.strerror or exc}") from exc
        self.paths[track_id] = tmp if self.folder.publish == "end" else self.folder.out / name
        self.folder.place(name, tmp)
        frames = arrays["frame_indices"]
        self.rows.append({"id": str(track_id), "file": name, "frames": int(len(frames)),
                          "first_frame": int(frames.min()), "last_frame": int(frames.max())})

    def close(self) -> List[str]:
        return [r["file"] for r in self.rows]

    def abort(self) -> None:
        pass


class VibeSink:
    """The file the model's own demo writes (``vibe_output.pkl``, ``tcmr_output.pkl``, ``mpsnet_output.pkl``,
    ``GLoT_output.pkl``; runtime/vibe_format.py), assembled at the end from the track files on disk."""

    def __init__(self, folder: OutputFolder, npz: NpzSink, model: str, size: Tuple[int, int],
                 joints: Any = None) -> None:
        from .vibe_format import peer_demo

        self.folder, self.npz = folder, npz
        self.demo = peer_demo(model)  # a model whose demo writes no such file: one line, before any frame
        self.width, self.height = size
        self.extra = getattr(joints, "extra", None)  # VIBE's J_regressor_extra: the demos' 49 joints

    def frame(self, out: FrameOutput) -> None:
        pass

    def track(self, track_id: Any, arrays: Dict[str, np.ndarray]) -> None:
        if "crop_boxes" not in arrays or "pose_axis_angle" not in arrays or "vertices" not in arrays:
            raise ConfigError("--format vibe needs SMPL poses, vertices and cameras in image coordinates (a video "
                              "and a model with a body model)")

    def close(self) -> List[str]:
        from .vibe_format import peer_joints, peer_track, write_vibe_output

        entries = {}
        for track_id, path in self.npz.paths.items():
            with np.load(path, allow_pickle=False) as m:
                joints = m["joints3d"] if self.extra is None else peer_joints(m["joints3d"], m["vertices"], self.extra)
                entries[track_id] = peer_track(
                    self.demo, frames=m["frame_indices"], boxes=m["boxes"], crop_boxes=m["crop_boxes"], cam=m["cam"],
                    verts=m["vertices"], pose=m["pose_axis_angle"], betas=m["betas"], joints3d=joints,
                    width=int(self.width), height=int(self.height))
        tmp = self.folder.temp_path(self.demo.file)
        write_vibe_output(tmp, entries)
        self.folder.place(self.demo.file, tmp)
        return [self.demo.file]

    def abort(self) -> None:
        pass


class RenderSink:
    """``--render``: each final frame drawn with its people's meshes, written as it becomes final."""

    def __init__(self, path: Path, fps: float, size: Tuple[int, int], faces: np.ndarray, caption: Sequence[str],
                 placement: str) -> None:
        from .render import VideoWriterAtomic

        self.path, self.faces, self.caption, self.placement = Path(path), faces, list(caption), placement
        self.writer = VideoWriterAtomic(self.path, fps if fps and fps > 0 else 25.0, size)
        self.timer: Optional[Callable[[str], Any]] = None

    def frame(self, out: FrameOutput) -> None:
        from .render import render_tracks

        tracks = {p.track_id: {"frames": [out.index], "boxes": [p.box], "crop_boxes": [p.crop_box],
                               "vertices": [p.vertices], "cam": [p.cam]}
                  for p in out.people if p.vertices is not None and p.crop_box is not None}
        render_tracks([(out.index, out.image)], self.writer, tracks, self.faces, self.caption, self.placement)

    def track(self, track_id: Any, arrays: Dict[str, np.ndarray]) -> None:
        pass

    def close(self) -> List[str]:
        self.writer.close()
        return []

    def abort(self) -> None:
        self.writer.abort()


FORMATS: Dict[str, str] = {  # name -> what it writes (the CLI's --format choices come from here)
    "npz": "track_<id>.npz per track, when the track ends",
    "vibe": "also the file the model's own demo writes (vibe_output.pkl, tcmr_output.pkl, mpsnet_output.pkl, "
            "GLoT_output.pkl), at the end",
    "jsonl": f"{JSONL_NAME}: one line per input frame, as each frame becomes final",
}


def formats_of(value: Any) -> Tuple[str, ...]:
    """``"npz"``, ``"npz,jsonl"`` or a sequence of names -> the checked formats; vibe brings npz with it."""
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else list(value)) if str(v).strip()]
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {', '.join(bad) or 'nothing'}")
    if "vibe" in names and "npz" not in names:
        names.insert(0, "npz")
    return tuple(dict.fromkeys(names))


def make_sinks(folder: OutputFolder, formats: Sequence[str], model: str = "", size: Tuple[int, int] = (0, 0),
               joints: Any = None) -> Dict[str, Any]:
    """The sinks of ``formats``, by name, in a fixed order (npz before vibe, which reads its files); ``joints``:
    vibe's ``PeerJointsPlan`` (the 49 joints when it holds the extra regressor)."""
    sinks: Dict[str, Any] = {}
    if "npz" in formats:
        sinks["npz"] = NpzSink(folder)
    if "vibe" in formats:
        sinks["vibe"] = VibeSink(folder, sinks["npz"], model, size, joints)
    if "jsonl" in formats:
        sinks["jsonl"] = JsonlSink(folder)
    return sinks
