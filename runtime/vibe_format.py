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
- ``joints3d``: the demos' 49 joints (``PEER_JOINTS``) when ``--vibe-data`` gives VIBE's
  ``J_regressor_extra.npy`` and the export's body model is SMPL-shaped (6890 vertices, not hmr-trt's
  synthetic stand-in); otherwise the body model's 24 joints, and the run says why (``plan_peer_joints``);
- ``joints2d``: the demo's keypoint input, None when it tracks boxes (as this runtime does);
- ``joints2d_img_coord`` (VIBE only): ``joints3d`` projected as the demo projects them (SPIN's
  perspective camera, focal length 5000 on the 224-pixel crop, ``crop_keypoints``), mapped to frame pixels.

==================  ===========  =========  ====================================================
key                 shape        dtype      meaning
==================  ===========  =========  ====================================================
pred_cam            (N, 3)       float32    weak-perspective camera (s, tx, ty) of the ``bboxes``
                                            square (see below)
orig_cam            (N, 4)       float64    the camera in the whole image (sx, sy, tx, ty)
verts               (N, V, 3)    float32    mesh vertices, metres (V = 6890 for SMPL)
pose                (N, 72)      float32    SMPL pose, axis-angle (global orientation first)
betas               (N, 10)      float32    SMPL shape
joints3d            (N, J, 3)    float32    3D joints, metres: J = 49, the demos' joints (with
                                            ``--vibe-data`` and an SMPL body model), else J = 24,
                                            the body model's joints
joints2d            None                    no keypoint input (tracking by boxes)
joints2d_img_coord  (N, J, 2)    float64    VIBE only: ``joints3d`` projected to frame pixels (x, y)
bboxes              (N, 4)       float64    (cx, cy, side, side) as the demo saves it
frame_ids           (N,)         int64      video frame index of each row
==================  ===========  =========  ====================================================

The 49 joints. The demos' SMPL layer is smplx's ``SMPL`` (its 24 posed joints, then 21 vertices its
``VertexJointSelector`` picks: face, feet, fingertips), followed by ``J_regressor_extra @ vertices``
(9 rows, from ``J_regressor_extra.npy`` in VIBE's ``data/vibe_data``, TCMR's, MPS-Net's and GLoT's
``data/base_data``), and re-indexed by the demos' 49-name joint map. ``peer_joints`` does the same in
numpy from the body model's posed joints and vertices; ``PEER_JOINTS`` and ``SMPLX_SELECTED_VERTICES``
are that map and smplx's vertex table as data (tests check them against smplx and VIBE's
``lib/models/smpl.py``). ``J_regressor_h36m.npy``, in the same folder, is read only by the peers'
evaluation code, not by their demos; it is not needed here.

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

# --- the demos' 49 joints ----------------------------------------------------------------------------
SMPL_VERTICES = 6890  # the SMPL mesh the vertex table and VIBE's extra regressor index
SMPL_JOINTS = 24
EXTRA_REGRESSOR_FILE = "J_regressor_extra.npy"  # VIBE: data/vibe_data; TCMR, MPS-Net, GLoT: data/base_data
EXTRA_JOINTS = 9
# The vertices smplx's SMPL appends to its 24 joints, in its order (its 'smplh' vertex_ids: face, feet, fingertips).
SMPLX_SELECTED_VERTICES = (
    ("nose", 332), ("reye", 6260), ("leye", 2800), ("rear", 4071), ("lear", 583),
    ("LBigToe", 3216), ("LSmallToe", 3226), ("LHeel", 3387), ("RBigToe", 6617), ("RSmallToe", 6624), ("RHeel", 6787),
    ("lthumb", 2746), ("lindex", 2319), ("lmiddle", 2445), ("lring", 2556), ("lpinky", 2673),
    ("rthumb", 6191), ("rindex", 5782), ("rmiddle", 5905), ("rring", 6016), ("rpinky", 6133),
)
# The demos' 49 joints: name -> row of [24 SMPL joints | the 21 selected vertices | the 9 extra-regressor rows].
PEER_JOINTS = (
    ("OP Nose", 24), ("OP Neck", 12), ("OP RShoulder", 17), ("OP RElbow", 19), ("OP RWrist", 21),
    ("OP LShoulder", 16), ("OP LElbow", 18), ("OP LWrist", 20), ("OP MidHip", 0), ("OP RHip", 2), ("OP RKnee", 5),
    ("OP RAnkle", 8), ("OP LHip", 1), ("OP LKnee", 4), ("OP LAnkle", 7), ("OP REye", 25), ("OP LEye", 26),
    ("OP REar", 27), ("OP LEar", 28), ("OP LBigToe", 29), ("OP LSmallToe", 30), ("OP LHeel", 31),
    ("OP RBigToe", 32), ("OP RSmallToe", 33), ("OP RHeel", 34),
    ("Right Ankle", 8), ("Right Knee", 5), ("Right Hip", 45), ("Left Hip", 46), ("Left Knee", 4),
    ("Left Ankle", 7), ("Right Wrist", 21), ("Right Elbow", 19), ("Right Shoulder", 17), ("Left Shoulder", 16),
    ("Left Elbow", 18), ("Left Wrist", 20), ("Neck (LSP)", 47), ("Top of Head (LSP)", 48),
    ("Pelvis (MPII)", 49), ("Thorax (MPII)", 50), ("Spine (H36M)", 51), ("Jaw (H36M)", 52), ("Head (H36M)", 53),
    ("Nose", 24), ("Left Eye", 26), ("Right Eye", 25), ("Left Ear", 28), ("Right Ear", 27),
)
FOCAL = 5000.0  # SPIN's projection in the demos' models (lib/models/spin.py), on the CROP_SIZE crop


def load_extra_regressor(path: Union[str, Path], vertices: int, option: str = "--vibe-data") -> np.ndarray:
    """``J_regressor_extra.npy`` (``path`` is the file or the folder holding it), checked against a body model
    of ``vertices`` vertices: a plain numeric .npy (no pickles), (9, vertices), finite. One-line ConfigError."""
    path = Path(path)
    file = path / EXTRA_REGRESSOR_FILE if path.is_dir() else path
    if not file.is_file():
        where = f"{path} holds no {EXTRA_REGRESSOR_FILE}" if path.is_dir() else f"{path}: no such file"
        raise ConfigError(f"{option}: {where} (VIBE's data/vibe_data folder, TCMR's or GLoT's data/base_data)")
    try:
        arr = np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        reason = "it holds pickled data, which is never loaded" if "pickle" in str(exc) else \
            (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise ConfigError(f"{option}: {file} is not a plain .npy array ({reason})") from None
    if not isinstance(arr, np.ndarray):
        if hasattr(arr, "close"):
            arr.close()
        raise ConfigError(f"{option}: {file} is an .npz archive; {EXTRA_REGRESSOR_FILE} is a single .npy array")
    if arr.dtype.kind not in "fiu":
        raise ConfigError(f"{option}: {file} holds {arr.dtype} values; expected numbers")
    want = (EXTRA_JOINTS, int(vertices))
    if arr.shape != want:
        what = "rows (extra joints)" if arr.ndim == 2 and arr.shape[1] == vertices else "vertices"
        raise ConfigError(f"{option}: {file} has shape {arr.shape}, the export's body model needs {want} "
                          f"({EXTRA_JOINTS} extra joints x its {vertices} vertices): its {what} differ")
    if not np.isfinite(arr).all():
        raise ConfigError(f"{option}: {file} holds non-finite values")
    return np.ascontiguousarray(arr, dtype=np.float32)


def peer_joints(joints: np.ndarray, vertices: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """The demos' 49 joints (N, 49, 3) from the body model's posed ``joints`` (N, 24, 3), posed ``vertices``
    (N, 6890, 3) and the extra regressor (9, 6890), in float32 as the demos compute them."""
    j = np.asarray(joints, dtype=np.float32)
    v = np.asarray(vertices, dtype=np.float32)
    if j.ndim != 3 or j.shape[1:] != (SMPL_JOINTS, 3) or v.ndim != 3 or v.shape[1:] != (SMPL_VERTICES, 3) \
            or len(j) != len(v):
        raise InputSpecError(f"49 joints: need (N, {SMPL_JOINTS}, 3) joints and (N, {SMPL_VERTICES}, 3) vertices, "
                             f"got {j.shape} and {v.shape}")
    selected = v[:, [i for _, i in SMPLX_SELECTED_VERTICES]]
    regressed = np.einsum("jv,nvc->njc", np.asarray(extra, np.float32), v)
    stacked = np.concatenate([j, selected, regressed], axis=1)  # smplx's 45 joints, then the 9 regressed
    return np.ascontiguousarray(stacked[:, [i for _, i in PEER_JOINTS]])


@dataclass(frozen=True)
class PeerJointsPlan:
    """What ``joints3d`` holds in the peer file: ``extra`` set -> the 49 joints; ``note`` says which and why."""
    count: int
    note: str
    extra: Optional[np.ndarray] = None


def plan_peer_joints(vertices: int, synthetic: bool, vibe_data: Optional[Union[str, Path]],
                     file: str = VIBE_FILE) -> PeerJointsPlan:
    """The 49 joints when ``vibe_data`` gives the extra regressor and the body model (``vertices``, hmr-trt's
    ``synthetic`` stand-in or not) is SMPL-shaped; else the 24. A regressor that does not fit: one line."""
    if vibe_data is not None:
        if synthetic:
            raise ConfigError(f"--vibe-data: VIBE's extra joints regress SMPL's {SMPL_VERTICES} vertices; the export's "
                              f"body model is hmr-trt's synthetic one ({vertices} vertices, not SMPL): re-export with "
                              "trt-export --smpl-model, or drop --vibe-data (24 joints are written)")
        extra = load_extra_regressor(vibe_data, vertices)
        if vertices != SMPL_VERTICES:  # a (9, V) file for another mesh: smplx's vertex table is SMPL's
            raise ConfigError(f"--vibe-data: the export's body model has {vertices} vertices, not SMPL's "
                              f"{SMPL_VERTICES}; the demos' 49 joints are defined on SMPL's mesh")
        source = Path(vibe_data) / EXTRA_REGRESSOR_FILE if Path(vibe_data).is_dir() else Path(vibe_data)
        return PeerJointsPlan(len(PEER_JOINTS), f"{file}: joints3d holds the demos' 49 joints (the body model's 24 "
                              f"joints, smplx's vertex joints and the 9 of {source})", extra)
    if synthetic:
        why = "the export's body model is hmr-trt's synthetic one, not SMPL (trt-export --smpl-model)"
    elif vertices != SMPL_VERTICES:
        why = f"the export's body model has {vertices} vertices, not SMPL's {SMPL_VERTICES}"
    else:
        why = f"the demos' 49 need --vibe-data DIR (VIBE's data/vibe_data, holding {EXTRA_REGRESSOR_FILE})"
    return PeerJointsPlan(SMPL_JOINTS, f"{file}: joints3d holds the body model's 24 joints, not the demos' 49: {why}")


def crop_keypoints(joints: np.ndarray, pred_cam: np.ndarray) -> np.ndarray:
    """(N, J, 2) in [-1, 1] of the crop: the demos' projection of ``joints`` (N, J, 3) by ``pred_cam`` (N, 3):
    the camera at depth 2 f / (224 s) looking at the joints shifted by (tx, ty), focal length f = 5000."""
    j = np.asarray(joints, dtype=np.float64)
    c = np.asarray(pred_cam, dtype=np.float64)
    depth = 2 * FOCAL / (CROP_SIZE * c[:, 0] + 1e-9)
    shifted = j + np.stack([c[:, 1], c[:, 2], depth], axis=1)[:, None, :]
    return FOCAL * shifted[:, :, :2] / shifted[:, :, 2:] / (CROP_SIZE / 2)



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
        normalised = crop_keypoints(joints3d, pred_cam)  # the demo's projection into the crop, [-1, 1]
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
