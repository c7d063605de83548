"""``--format vibe``: the results as the peers' demos save them, for the tools that read that file.

VIBE's ``demo.py`` (and TCMR's, MPS-Net's and GLoT's, which copy it) saves one joblib file,
``vibe_output.pkl``: a dict from the integer track id to a dict of per-frame arrays. VIBE's
Blender/FBX exporter and the peers' renderers read ``pose``, ``betas``, ``verts``, ``orig_cam``
and ``frame_ids`` from it. The keys and shapes written here (N frames of the track):

==========  ================  ==============================================================
key         shape             meaning
==========  ================  ==============================================================
pred_cam    (N, 3)            weak-perspective camera (s, tx, ty) of the square crop
orig_cam    (N, 4)            the same camera in the whole image (sx, sy, tx, ty), as
                              ``convert_crop_cam_to_orig_img`` computes it from ``bboxes``
verts       (N, V, 3)         mesh vertices, metres (V = 6890 for SMPL)
pose        (N, 72)           SMPL pose, axis-angle (global orientation first)
betas       (N, 10)           SMPL shape
joints3d    (N, J, 3)         3D joints, metres (the body model's joints)
joints2d    (N, J, 2)         the same joints projected to frame pixels (x, y). VIBE stores its
                              OpenPose input here (None when it tracks boxes); TCMR-style
                              readers that want pixels find them here
bboxes      (N, 4)            the crop square as VIBE's (cx, cy, w, h), w = h = its side in pixels
frame_ids   (N,)              video frame index of each row
==========  ================  ==============================================================

joblib and numpy only (no torch); the file is written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Union

import numpy as np

from hmr_trt.errors import ConfigError, InputSpecError
from hmr_trt.fileio import atomic_write

VIBE_FILE = "vibe_output.pkl"
# key -> shape after N (-1: any size), as the peers' demos write them.
VIBE_KEYS: Dict[str, tuple] = {
    "pred_cam": (3,), "orig_cam": (4,), "verts": (-1, 3), "pose": (72,), "betas": (10,),
    "joints3d": (-1, 3), "joints2d": (-1, 2), "bboxes": (4,), "frame_ids": (),
}


def vibe_track_id(track_id: Any) -> Any:
    """The peers' dicts are keyed by int; a track id that is an integer string becomes that int."""
    text = str(track_id)
    return int(text) if text.lstrip("-").isdigit() else text


def vibe_entry(arrays: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Check one track's arrays against ``VIBE_KEYS`` (same N everywhere) and cast them (float32, int64 ids)."""
    missing = sorted(set(VIBE_KEYS) - set(arrays))
    if missing:
        raise InputSpecError(f"vibe output: track arrays lack {missing}; expected keys {list(VIBE_KEYS)}")
    n = len(np.asarray(arrays["frame_ids"]))
    entry: Dict[str, np.ndarray] = {}
    for key, tail in VIBE_KEYS.items():
        arr = np.asarray(arrays[key], dtype=np.int64 if key == "frame_ids" else np.float32)
        ok = arr.ndim == 1 + len(tail) and arr.shape[0] == n and all(t in (-1, s) for t, s in zip(tail, arr.shape[1:]))
        if not ok:
            want = "(" + ", ".join(["N"] + ["?" if t == -1 else str(t) for t in tail]) + ")"
            raise InputSpecError(f"vibe output: '{key}' must be {want} with N = {n}, got shape {arr.shape}")
        entry[key] = np.ascontiguousarray(arr)
    return entry


def write_vibe_output(path: Union[str, Path], tracks: Mapping[Any, Mapping[str, np.ndarray]]) -> Path:
    """Write ``{track id: {key: array}}`` as the peers' joblib file at ``path`` (atomically)."""
    try:
        import joblib
    except ImportError as exc:
        raise ConfigError("--format vibe needs joblib: pip install joblib") from exc
    results = {vibe_track_id(t): vibe_entry(a) for t, a in tracks.items()}
    return atomic_write(path, lambda f: joblib.dump(results, f))
