"""``--format vibe``: the peers' joblib file as each model's official demo writes it, read back with joblib,
and (with the official repositories at $HMR_TRT_OFFICIAL_VIBE / _TCMR / _GLOT) through the official
readers' code: the demos' camera and keypoint conversions and the renderer's projection matrix, loaded
from the official files at test time."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pytest

from hmr_trt.errors import ConfigError, InputSpecError
from hmr_trt.runtime.crops import square_box
from hmr_trt.runtime.render import fit_cam_to_box, project_weak_perspective
from hmr_trt.runtime.vibe_format import (
    PEER_DEMOS,
    VIBE_FILE,
    VIBE_KEYS,
    peer_demo,
    peer_track,
    vibe_track_id,
    write_peer_output,
    write_vibe_output,
)

joblib = pytest.importorskip("joblib")

# The peers' demos: per track, N frames, SMPL's 6890 vertices (joints: whatever the body model gives).
PEER_SHAPES = {"pred_cam": (3,), "orig_cam": (4,), "verts": (6890, 3), "pose": (72,), "betas": (10,),
               "joints3d": (49, 3), "bboxes": (4,), "frame_ids": ()}
W, H = 768, 576


def _track(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    out = {k: (np.arange(n) + 5 if k == "frame_ids" else rng.normal(size=(n, *shape)))
           for k, shape in PEER_SHAPES.items()}
    out["joints2d"] = None
    return out


def test_written_file_reads_back_with_joblib_as_the_peers_demos_write_it(tmp_path) -> None:
    tracks = {"1": _track(7, 0), 12: _track(3, 1)}
    path = write_vibe_output(tmp_path / VIBE_FILE, tracks)
    loaded = joblib.load(path)
    assert set(loaded) == {1, 12} and all(isinstance(k, int) for k in loaded)
    for key, n in ((1, 7), (12, 3)):
        entry = loaded[key]
        assert set(entry) == set(VIBE_KEYS) | {"joints2d"} and entry["joints2d"] is None
        for name, shape in PEER_SHAPES.items():
            assert entry[name].shape == (n, *shape), name
            assert entry[name].dtype == VIBE_KEYS[name][1], name
        np.testing.assert_allclose(entry["pose"], tracks["1" if key == 1 else 12]["pose"], rtol=1e-6)
    assert loaded[1]["orig_cam"].dtype == np.float64 and loaded[1]["bboxes"].dtype == np.float64  # as VIBE's
    np.testing.assert_array_equal(loaded[1]["frame_ids"], np.arange(7) + 5)
    assert not [p for p in tmp_path.iterdir() if p.name != VIBE_FILE], "no temp files left"


def test_wrong_shapes_and_missing_keys_are_refused(tmp_path) -> None:
    bad = _track(4, 2)
    bad["pose"] = bad["pose"][:, :69]
    with pytest.raises(InputSpecError, match=r"'pose' must be \(N, 72\)"):
        write_vibe_output(tmp_path / VIBE_FILE, {1: bad})
    short = _track(4, 3)
    short["orig_cam"] = short["orig_cam"][:3]
    with pytest.raises(InputSpecError, match="N = 4"):
        write_vibe_output(tmp_path / VIBE_FILE, {1: short})
    missing = _track(4, 4)
    del missing["orig_cam"]
    with pytest.raises(InputSpecError, match="orig_cam"):
        write_vibe_output(tmp_path / VIBE_FILE, {1: missing})
    keypoints = _track(4, 5)
    keypoints["joints2d"] = np.zeros((4, 49, 2))
    with pytest.raises(InputSpecError, match="keypoint input"):
        write_vibe_output(tmp_path / VIBE_FILE, {1: keypoints})
    assert not (tmp_path / VIBE_FILE).exists()


def test_track_ids() -> None:
    assert vibe_track_id("7") == 7 and vibe_track_id(3) == 3 and vibe_track_id("a7") == "a7"


def test_models_without_such_a_demo_file_are_refused_in_one_line(tmp_path) -> None:
    for model in ("coseg", "decomr", "instancehmr"):
        with pytest.raises(ConfigError, match="writes no such file") as err:
            peer_demo(model)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError):
        write_peer_output(tmp_path, "coseg", {1: {}}, W, H)
    assert list(tmp_path.iterdir()) == []
    assert {m: d.file for m, d in PEER_DEMOS.items()} == {
        "vibe": "vibe_output.pkl", "tcmr": "tcmr_output.pkl", "mpsnet": "mpsnet_output.pkl", "glot": "GLoT_output.pkl"}


# --- people in their boxes, as the runtime gives them ------------------------------------------------

def _people(crop_scale: float, n: int = 5):
    """A standing person-shaped mesh placed in n detection boxes by the crop camera (the runtime's
    projection), with the crop squares the runtime would cut at ``crop_scale``."""
    from hmr_trt.export.synthetic_smpl import make_synthetic_smpl

    smpl = make_synthetic_smpl(0)
    # y down, facing the camera; the T-pose's arms pulled in so that the outline has a person box's shape
    v = np.asarray(smpl["v_template"], np.float64) * np.array([0.35, -1.0, -1.0])
    joints = np.asarray(smpl["J_regressor"], np.float64) @ v
    boxes = np.array([[100, 200, 140, 320], [300, 150, 360, 300], [600, 300, 630, 380], [20, 20, 80, 200],
                      [700, 400, 760, 570]], np.float64)[:n]
    crops = np.stack([square_box(b, crop_scale) for b in boxes]).astype(np.float64)
    cams = np.stack([fit_cam_to_box(v, b, c) for b, c in zip(boxes, crops)]).astype(np.float64)
    return v, joints, boxes, crops, cams


def _entry(model: str, crop_scale: float):
    v, joints, boxes, crops, cams = _people(crop_scale)
    n = len(boxes)
    entry = peer_track(PEER_DEMOS[model], frames=np.arange(n), boxes=boxes, crop_boxes=crops, cam=cams,
                       verts=np.repeat(v[None], n, 0).astype(np.float32), pose=np.zeros((n, 72), np.float32),
                       betas=np.zeros((n, 10), np.float32), joints3d=np.repeat(joints[None], n, 0).astype(np.float32),
                       width=W, height=H)
    return entry, v, boxes, crops, cams


@pytest.mark.parametrize("model,crop_scale", [("vibe", 1.1), ("tcmr", 1.2), ("mpsnet", 1.1), ("glot", 1.2)])
def test_peer_entries_follow_each_demo(model, crop_scale, tmp_path) -> None:
    entry, v, boxes, crops, cams = _entry(model, crop_scale)
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    scale = 1.0 if model == "vibe" else 1.2  # VIBE saves the squared box as is; the others scale it by 1.2
    np.testing.assert_allclose(entry["bboxes"][:, 2:], np.stack([side, side], 1) * scale)
    np.testing.assert_allclose(entry["bboxes"][:, :2], (boxes[:, :2] + boxes[:, 2:]) / 2)
    assert entry["joints2d"] is None and ("joints2d_img_coord" in entry) == (model == "vibe")
    path = write_peer_output(tmp_path, model, {3: {"frames": entry["frame_ids"], "boxes": boxes, "crop_boxes": crops,
                                                   "cam": cams, "vertices": entry["verts"], "pose": entry["pose"],
                                                   "betas": entry["betas"], "joints3d": entry["joints3d"]}}, W, H)
    assert path.name == PEER_DEMOS[model].file
    saved = joblib.load(path)[3]
    assert saved["orig_cam"].dtype == np.float64 and saved["bboxes"].dtype == np.float64
    # the orig_cam places each mesh where the runtime's crop camera does
    for i in range(len(boxes)):
        sx, sy, tx, ty = saved["orig_cam"][i]
        px = np.stack([(1 + sx * (v[:, 0] + tx)) / 2 * W, (1 + sy * (v[:, 1] + ty)) / 2 * H], 1)
        np.testing.assert_allclose(px, project_weak_perspective(v, cams[i], crops[i]), atol=1e-3)


# --- the official readers ---------------------------------------------------------------------------

OFFICIAL = {"vibe": "VIBE", "tcmr": "TCMR", "glot": "GLOT"}


def _official(model: str) -> Path:
    root = os.environ.get(f"HMR_TRT_OFFICIAL_{OFFICIAL[model]}")
    if not root or not (Path(root) / "lib" / "utils" / "demo_utils.py").is_file():
        pytest.skip(f"set HMR_TRT_OFFICIAL_{OFFICIAL[model]} to a checkout of the official {model} repository")
    return Path(root)


def _functions(path: Path, names: set, namespace: dict) -> dict:
    """The named top-level functions (or class methods, 'Class.method') of an official file, compiled from
    that file as it is (its module imports heavy libraries, so the module itself is not imported)."""
    tree = ast.parse(path.read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in names:
            found[node.name] = node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and f"{node.name}.{item.name}" in names:
                    found[f"{node.name}.{item.name}"] = item
    assert set(found) == names, f"{path} lacks {names - set(found)}"
    out = {}
    for name, node in found.items():
        scope = dict(namespace)
        exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), scope)
        out[name] = scope[node.name]
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def official_projection(root: Path, verts: np.ndarray, orig_cam: np.ndarray, width: int, height: int) -> np.ndarray:
    """(V, 2) pixels where the official Renderer draws ``verts`` for one ``orig_cam``: its render() turns the
    mesh 180 degrees about x and uses WeakPerspectiveCamera's projection matrix (read from renderer.py);
    pyrender maps NDC to the viewport with y up."""
    get_p = _functions(root / "lib" / "utils" / "renderer.py", {"WeakPerspectiveCamera.get_projection_matrix"},
                       {"np": np})["WeakPerspectiveCamera.get_projection_matrix"]

    class Camera:
        scale = orig_cam[:2]
        translation = orig_cam[2:]

    p = get_p(Camera())
    v = np.asarray(verts, np.float64) * np.array([1.0, -1.0, -1.0])  # Rx(180 degrees)
    clip = np.concatenate([v, np.ones((len(v), 1))], 1) @ p.T
    ndc = clip[:, :2] / clip[:, 3:4]
    return np.stack([(ndc[:, 0] + 1) / 2 * width, (1 - ndc[:, 1]) / 2 * height], 1)


@pytest.mark.parametrize("model,crop_scale", [("vibe", 1.1), ("tcmr", 1.2), ("glot", 1.2)])
def test_official_readers_put_the_meshes_on_the_people(model, crop_scale) -> None:
    root = _official(model)
    names = {"convert_crop_cam_to_orig_img"} | ({"convert_crop_coords_to_orig_img"} if model == "vibe" else set())
    fns = _functions(root / "lib" / "utils" / "demo_utils.py", names, {"np": np})
    entry, v, boxes, crops, cams = _entry(model, crop_scale)
    # the demo's conversion of the saved pred_cam and bboxes gives the saved orig_cam
    np.testing.assert_allclose(fns["convert_crop_cam_to_orig_img"](entry["pred_cam"], entry["bboxes"], W, H),
                               entry["orig_cam"], rtol=1e-12, atol=1e-9)
    ious = []
    for i, box in enumerate(boxes):
        px = official_projection(root, entry["verts"][i], entry["orig_cam"][i], W, H)
        np.testing.assert_allclose(px, project_weak_perspective(v, cams[i], crops[i]), atol=1e-3)  # as ours
        drawn = np.array([*px.min(0), *px.max(0)])
        ious.append(_iou(drawn, box))
    assert min(ious) > 0.85, ious  # on the person (the outline's aspect is not quite the box's)
    if model == "vibe":  # VIBE's keypoints: its models' crop projection (spin.py), mapped through the saved box
        torch = pytest.importorskip("torch")
        spin = _functions(root / "lib" / "models" / "spin.py", {"projection", "perspective_projection"},
                          {"torch": torch})
        scope = spin["projection"].__globals__
        scope["perspective_projection"] = spin["perspective_projection"]
        normalised = scope["projection"](torch.from_numpy(entry["joints3d"].astype(np.float32)),
                                         torch.from_numpy(entry["pred_cam"].astype(np.float32))).numpy()
        pixels = fns["convert_crop_coords_to_orig_img"](entry["bboxes"], normalised.copy(), 224)
        np.testing.assert_allclose(pixels, entry["joints2d_img_coord"], atol=1e-3)  # pixels; theirs in float32
