"""``--format vibe``: the results as the peers' demos save them, for the tools that read those files.

VIBE's ``demo.py`` (and TCMR's, MPS-Net's and GLoT's, which follow it) saves one joblib file: a dict
from the integer track id to a dict of per-frame arrays. VIBE's renderer and Blender/FBX exporter read
``verts``, ``orig_cam``, ``pose``, ``betas`` and ``frame_ids`` from it. Each demo writes it its own
way, and the file follows the demo of the model that made it (``PEER_DEMOS``):

- the name: ``vibe_output.pkl`` (VIBE), ``tcmr_output.pkl`` (TCMR), ``mpsnet_output.pkl`` (MPS-Net),
  ``GLoT_output.pkl`` (GLoT). The other models' demos write no such file, and ``--format vibe``
  refuses them before anything runs;
- ``bboxes``: the tracker's squared detection box ``(cx, cy, side, side)``, side = the box's longer
  side; VIBE stores it as is, TCMR, MPS-Net and GLoT scale the side by 1.2 before saving;
- ``orig_cam``: the demos' ``convert_crop_cam_to_orig_img(pred_cam, bboxes, W, H)``;
- ``joints2d``: the demo's keypoint input, None when it tracks boxes (as this runtime does);
- ``joints2d_img_coord`` (VIBE only): the projected joints in frame pixels.

==================  ===========  =========  ====================================================
key                 shape        dtype      meaning
==================  ===========  =========  ====================================================
pred_cam            (N, 3)       float32    weak-perspective camera (s, tx, ty) of the ``bboxes``
                                            square (see below)
orig_cam            (N, 4)       float64    the camera in the whole image (sx, sy, tx, ty)
verts               (N, V, 3)    float32    mesh vertices, metres (V = 6890 for SMPL)
pose                (N, 72)      float32    SMPL pose, axis-angle (global orientation first)
betas               (N, 10)      float32    SMPL shape
joints3d            (N, J, 3)    float32    3D joints, metres: the body model's joints (J = 24 here;
                                            the demos' 49 need VIBE's extra joint regressors, which
                                            this runtime does not apply)
joints2d            None                    no keypoint input (tracking by boxes)
joints2d_img_coord  (N, J, 2)    float64    VIBE only: ``joints3d`` projected to frame pixels (x, y)
bboxes              (N, 4)       float64    (cx, cy, side, side) as the demo saves it
frame_ids           (N,)         int64      video frame index of each row
==================  ===========  =========  ====================================================

``pred_cam`` is the network's crop camera re-expressed for the saved square: this runtime crops the
detection box times the model's ``bbox_scale``, the demo saves another square (VIBE: the box itself),
so the scale is multiplied by crop side / saved side (translations are unchanged: both squares share
the box centre). Then the official conversion of the saved ``pred_cam`` and ``bboxes`` gives the saved
``orig_cam`` exactly, and the meshes land where this runtime's camera put them.

joblib and numpy only (no torch); the file is written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np

from hmr_trt.errors import ConfigError, InputSpecError
from hmr_trt.fileio import atomic_write


@dataclass(frozen=True)
class PeerDemo:
    file: str  # the file name the official demo writes
    box_scale: float  # the saved bboxes' side over the detection box's longer side
    joints_in_pixels: bool  # the demo saves joints2d_img_coord


PEER_DEMOS: Dict[str, PeerDemo] = {
    "vibe": PeerDemo("vibe_output.pkl", 1.0, True),  # mkocabas/VIBE demo.py
    "tcmr": PeerDemo("tcmr_output.pkl", 1.2, False),  # hongsukchoi/TCMR_RELEASE demo.py
    "mpsnet": PeerDemo("mpsnet_output.pkl", 1.2, False),  # MPS-Net/MPS-Net_release demo.py
    "glot": PeerDemo("GLoT_output.pkl", 1.2, False),  # sxl142/GLoT demo.py
}
VIBE_FILE = PEER_DEMOS["vibe"].file
CROP_SIZE = 224  # the demos' crop side, in VIBE's convert_crop_coords_to_orig_img
# key -> (shape after N, -1: any size; dtype), the arrays every peer file holds.
VIBE_KEYS: Dict[str, tuple] = {
    "pred_cam": ((3,), np.float32), "orig_cam": ((4,), np.float64), "verts": ((-1, 3), np.float32),
    "pose": ((72,), np.float32), "betas": ((10,), np.float32), "joints3d": ((-1, 3), np.float32),
    "bboxes": ((4,), np.float64), "frame_ids": ((), np.int64),
}
OPTIONAL_KEYS: Dict[str, tuple] = {"joints2d_img_coord": ((-1, 2), np.float64)}


def peer_demo(model: str) -> PeerDemo:
    """The demo whose file ``--format vibe`` writes for ``model``; a one-line ConfigError for the others."""
    demo = PEER_DEMOS.get(str(model))
    if demo is None:
        names = ", ".join(PEER_DEMOS)
        raise ConfigError(f"--format vibe: the official demo of {model} writes no such file (those of {names} do); "
                          "use --format npz")
    return demo


def vibe_track_id(track_id: Any) -> Any:
    """The peers' dicts are keyed by int; a track id that is an integer string becomes that int."""
    text = str(track_id)
    return int(text) if text.lstrip("-").isdigit() else text


def vibe_entry(arrays: Mapping[str, Any]) -> Dict[str, Any]:
    """Check one track's arrays (same N everywhere) and cast them to the dtypes the demos save;
    ``joints2d`` is None (the demos' keypoint input, absent when tracking boxes)."""
    missing = sorted(set(VIBE_KEYS) - set(arrays))
    if missing:
        raise InputSpecError(f"vibe output: track arrays lack {missing}; expected keys {list(VIBE_KEYS)}")
    if arrays.get("joints2d") is not None:
        raise InputSpecError("vibe output: 'joints2d' is the demos' keypoint input; tracking by boxes it is None")
    n = len(np.asarray(arrays["frame_ids"]))
    entry: Dict[str, Any] = {}
    for key, (tail, dtype) in {**VIBE_KEYS, **OPTIONAL_KEYS}.items():
        if key not in arrays:
            continue
        arr = np.asarray(arrays[key], dtype=dtype)
        ok = arr.ndim == 1 + len(tail) and arr.shape[0] == n and all(t in (-1, s) for t, s in zip(tail, arr.shape[1:]))
        if not ok:
            want = "(" + ", ".join(["N"] + ["?" if t == -1 else str(t) for t in tail]) + ")"
            raise InputSpecError(f"vibe output: '{key}' must be {want} with N = {n}, got shape {arr.shape}")
        entry[key] = np.ascontiguousarray(arr)
    entry["joints2d"] = None
    return entry


def write_vibe_output(path: Union[str, Path], tracks: Mapping[Any, Mapping[str, Any]]) -> Path:
    """Write ``{track id: {key: array}}`` as the peers' joblib file at ``path`` (atomically)."""
    try:
        import joblib
    except ImportError as exc:
        raise ConfigError("--format vibe needs joblib: pip install joblib") from exc
    results = {vibe_track_id(t): vibe_entry(a) for t, a in tracks.items()}
    return atomic_write(path, lambda f: joblib.dump(results, f))


def peer_track(demo: PeerDemo, *, frames: np.ndarray, boxes: np.ndarray, crop_boxes: np.ndarray, cam: np.ndarray,
               verts: np.ndarray, pose: np.ndarray, betas: np.ndarray, joints3d: np.ndarray, width: int,
               height: int) -> Dict[str, Any]:
    """One track's entry as ``demo`` saves it, from this runtime's results: detection ``boxes`` and
    the ``crop_boxes`` (N, 4) x1, y1, x2, y2 the crops were cut from, the crop camera ``cam`` (N, 3),
    ``pose`` (N, 72) axis-angle, ``joints3d`` (N, J, 3)."""
    from .cameras import crop_cam_to_orig_cam

    b = np.asarray(boxes, dtype=np.float64)[:, :4]
    c = np.asarray(crop_boxes, dtype=np.float64)[:, :4]
    side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) * demo.box_scale
    bboxes = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, side, side], axis=1)
    pred_cam = np.asarray(cam, dtype=np.float64).copy()
    pred_cam[:, 0] *= (c[:, 2] - c[:, 0]) / side  # the crop camera, for the saved square
    pred_cam = pred_cam.astype(np.float32).astype(np.float64)  # saved as float32, converted from that (as theirs)
    entry: Dict[str, Any] = {
        "pred_cam": pred_cam.astype(np.float32),
        "orig_cam": crop_cam_to_orig_cam(pred_cam, bboxes, width, height, dtype=np.float64),
        "verts": verts, "pose": pose, "betas": betas, "joints3d": joints3d, "joints2d": None,
        "bboxes": bboxes, "frame_ids": np.asarray(frames, dtype=np.int64),
    }
    if demo.joints_in_pixels:
        j = np.asarray(joints3d, dtype=np.float64)
        s, t = pred_cam[:, None, :1], pred_cam[:, None, 1:]
        normalised = s * (j[:, :, :2] + t)  # the demo's projection into the crop, [-1, 1]
        entry["joints2d_img_coord"] = (bboxes[:, None, :2] - side[:, None, None] / 2
                                       + (normalised + 1) / 2 * side[:, None, None])
    return entry


def write_peer_output(out_dir: Union[str, Path], model: str, tracks: Mapping[Any, Mapping[str, Any]],
                      width: Optional[int], height: Optional[int]) -> Path:
    """The file ``model``'s demo writes, in ``out_dir``: ``tracks`` holds per track ``frames``, ``boxes``,
    ``crop_boxes``, ``cam``, ``vertices``, ``pose`` (axis-angle), ``betas``, ``joints3d``."""
    demo = peer_demo(model)
    if not width or not height:
        raise ConfigError("--format vibe needs the video's size (cameras in image coordinates)")
    entries = {}
    for track_id, t in tracks.items():
        entries[track_id] = peer_track(demo, frames=t["frames"], boxes=t["boxes"], crop_boxes=t["crop_boxes"],
                                       cam=t["cam"], verts=t["vertices"], pose=t["pose"], betas=t["betas"],
                                       joints3d=t["joints3d"], width=int(width), height=int(height))
    return write_vibe_output(Path(out_dir) / demo.file, entries)
