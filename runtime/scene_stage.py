"""The ``scene`` family (whole images, e.g. the instance-aware network): no detector, no crops.

Frames are letterboxed to the contract's ``image_size`` (runtime/scene.letterbox), batched through
the ``maps`` graph, and turned into people by ``scene.people_from_maps`` (peaks of the center map
above ``--threshold``, SMPL parameters sampled there, joints from the body-model graph, each person's
box from their projected joints). Tracks come from the same tracker as the other families, fed with
those boxes and the center scores. A person's ``cam`` is written in the convention of the crop
families, ``x = s * (X + tx)`` over the letterboxed square, and ``crop_boxes`` is that square in the
original image, so ``orig_cam``, ``joints2d`` and the render work as for crops.
numpy (+ OpenCV for resizing) only; Python 3.9-compatible.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .frame_stage import MODEL_STAGE, infer_model
from .scene import PadInfo, letterbox, people_from_maps
from .streaming import FrameResult

PEOPLE_STAGE = "people"  # peaks, sampling, body model, boxes


def padded_square(pad: PadInfo) -> np.ndarray:
    """The letterboxed square in original pixels, x1, y1, x2, y2."""
    return np.array([-pad.left, -pad.top, pad.padded - pad.left, pad.padded - pad.top], dtype=np.float32)


def spin_cam(cam: np.ndarray) -> np.ndarray:
    """The network's camera (s, tx, ty) with ``x = s * X + tx`` -> (s, tx / s, ty / s) with ``x = s * (X + tx)``."""
    cam = np.asarray(cam, dtype=np.float64)
    return np.array([cam[0], cam[1] / cam[0], cam[2] / cam[0]], dtype=np.float32)


class SceneStage:
    """``people(frames)``: whole frames (BGR) -> per frame the list of people (runtime/scene.py dicts, with
    ``vertices``, ``joints3d``, ``crop_box`` and the crop-convention ``cam``)."""

    def __init__(self, backends: Any, timer: Any, threshold: float) -> None:
        self.backends, self.timer, self.threshold = backends, timer, threshold
        contract = backends.contract
        self.graph = contract.model_graph
        self.size = int(contract.image_size or self.graph.inputs[0].shape[1])

    def people(self, frames_bgr: Sequence[np.ndarray], bgr: bool = True) -> List[List[Dict[str, Any]]]:
        if not frames_bgr:
            return []
        with self.timer("crop"):
            boxed = [letterbox(f, self.size, bgr=bgr) for f in frames_bgr]
            images = np.ascontiguousarray(np.stack([b[0] for b in boxed]))
        pads = [b[1] for b in boxed]
        with self.timer(MODEL_STAGE):
            maps = infer_model(self.backends, {self.graph.input_names[0]: images})
        meshes: Dict[str, np.ndarray] = {}

        def body(smpl: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
            with self.timer("body_model"):
                verts, joints = self.backends.infer_body(smpl["pose_rotmat"], smpl["betas"])
            meshes.update(vertices=verts, joints3d=joints)
            return {"joints3d": joints}

        with self.timer(PEOPLE_STAGE):
            found = people_from_maps(maps, self.threshold, pads, body_model=body)
        per_image: List[List[Dict[str, Any]]] = [[] for _ in frames_bgr]
        for n, person in enumerate(found):
            person["vertices"], person["joints3d"] = meshes["vertices"][n], meshes["joints3d"][n]
            person["crop_box"] = padded_square(pads[person["image"]])
            person["cam_network"], person["cam"] = person["cam"], spin_cam(person["cam"])
            per_image[person["image"]].append(person)
        return per_image


def detections(people: List[Dict[str, Any]]) -> np.ndarray:
    """People of one frame -> (N, 5) boxes x1, y1, x2, y2 and center score, for the tracker."""
    if not people:
        return np.zeros((0, 5), np.float32)
    return np.array([[*p["box"], p["score"]] for p in people], dtype=np.float32)


def track_results(frame_index: int, people: List[Dict[str, Any]], active: List[Tuple[Any, np.ndarray]],
                  ) -> List[FrameResult]:
    """The tracker's active tracks of one frame, each matched to the person whose box it was fed."""
    dets = detections(people)
    out = []
    for track_id, box in active:
        hits = np.flatnonzero(np.all(np.abs(dets[:, :4] - np.asarray(box)[:4]) < 1e-3, axis=1))
        if len(hits) == 0:
            continue  # a track the tracker coasted without a detection this frame
        p = people[int(hits[0])]
        out.append(FrameResult(track_id, frame_index, result_row(p)))
    return out


def result_row(person: Dict[str, Any], with_joints2d: bool = True) -> Dict[str, np.ndarray]:
    row = {"pose_rotmat": np.asarray(person["pose_rotmat"], np.float32), "betas": np.asarray(person["betas"], np.float32),
           "cam": np.asarray(person["cam"], np.float32), "vertices": np.asarray(person["vertices"], np.float32),
           "joints3d": np.asarray(person["joints3d"], np.float32), "crop_boxes": person["crop_box"],
           "score": np.float32(person["score"])}
    if with_joints2d and "joints2d" in person:
        row["joints2d"] = np.asarray(person["joints2d"], np.float32)
    return row


def scene_detector_note(threshold: float) -> str:
    return f"none (scene model: people from the center map, threshold {threshold:g})"


def optional_threshold(value: Optional[float]) -> float:
    from .scene import check_threshold

    return check_threshold(0.2 if value is None else value)
