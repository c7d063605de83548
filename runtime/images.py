"""``trt-run --image PATH...``: still images through a ``frame`` or ``scene`` export, one result file each.

Frame models: the detector finds every person, each is cropped as in videos (the contract's crop
size and box scale) and all crops of all images go through the model graph in batches. Scene models:
each image is letterboxed and the maps graph gives its people (runtime/scene_stage.py). No tracker:
``image_<NNN>_<stem>.npz`` holds the image's people in rows (runtime/outputs.write_people_npz), and
``summary.json`` lists the files. Every image is read before anything runs, and every file is written
under a temporary name in ``--out``, all renamed into place at the end: a bad image leaves nothing behind.
numpy + OpenCV only; Python 3.9-compatible.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from hmr_trt.errors import ConfigError, InputSpecError
from hmr_trt.manifest import OutputFolder

from .cameras import crop_box_cxcyh, crop_cam_to_orig_cam, joints_to_pixels


def read_images(paths: List[Path]) -> List[np.ndarray]:
    """Every image as BGR uint8 (H, W, 3); the first unreadable one raises (before any work)."""
    import cv2

    if not paths:
        raise ConfigError("--image: no images given; pass one or more image files")
    images = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR) if Path(path).is_file() else None
        if image is None or image.size == 0:
            raise InputSpecError(f"--image {path}: cannot be read as an image (missing, empty or not a "
                                 "PNG/JPEG/... file); give readable image files")
        images.append(image)
    return images


def run_images(opts: Any) -> Dict[str, Any]:
    """``opts``: runtime.pipeline.RunOptions with ``images``; returns the summary (also ``out/summary.json``)."""
    from .pipeline import (
        SUMMARY_NAME,
        StageTimer,
        _check_family_options,
        _crop_geometry,
        _open,
        export_family,
    )

    paths = [Path(p) for p in (opts.images or [])]
    family = export_family(opts.export_dir)
    _check_family_options(opts, family, "image")
    images = read_images(paths)
    timer = StageTimer()
    start = time.perf_counter()
    with _open(opts) as backends:
        if family == "scene":
            people, detector = _scene_people(opts, backends, timer, images)
        else:
            people, detector = _frame_people(opts, backends, timer, images, _crop_geometry(backends))
        from .outputs import people_arrays, summary_text

        folder = OutputFolder(opts.out, publish="end")
        try:
            rows = []
            names = [f"image_{i:03d}_{path.stem}.npz" for i, path in enumerate(paths)]
            folder.check_free([SUMMARY_NAME, *names])
            for name, path, found in zip(names, paths, people):
                if not opts.vertices:
                    found.pop("vertices", None)
                arrays = people_arrays(str(path), found)
                with timer("writing"):
                    folder.write(name, lambda f, a=arrays: np.savez(f, **a))
                rows.append({"image": str(path), "file": name, "people": int(len(found["boxes"]))})
            total = time.perf_counter() - start
            summary = {"input": [str(p) for p in paths], "images": len(paths), "image_files": rows,
                       "model": backends.contract.name, "family": family, "backend": backends.description,
                       "providers": backends.providers, "precision": opts.precision, "detector": detector,
                       "export_dir": str(opts.export_dir), "weights": backends.weights_note,
                       "timings_s": {k: round(v, 4) for k, v in timer.seconds.items()}, "total_s": round(total, 3),
                       "frames_decoded": len(paths), "tracks": 0, "emit": "-",
                       "frames_per_second": round(len(paths) / total, 2) if total > 0 else None}
            folder.write(SUMMARY_NAME, lambda f: f.write(summary_text(summary)))
            folder.commit()
        except BaseException:
            folder.abort()
            raise
    return summary


def _frame_people(opts: Any, backends: Any, timer: Any, images: List[np.ndarray], geometry: Any) -> tuple:
    from .detect import describe_detector
    from .frame_stage import FrameStage
    from .pipeline import _detector

    detector = _detector(opts.detector, opts.threads)
    stage = FrameStage(backends, timer, opts.backbone_batch)
    found: List[tuple] = []  # per image: (boxes (P, 5), crop boxes (P, 4))
    for i, image in enumerate(images):
        with timer("detect"):
            dets = np.asarray(detector.detect(image), np.float32).reshape(-1, 5)
        crop_boxes = np.stack([geometry.box(d) for d in dets]) if len(dets) else np.zeros((0, 4), np.float32)
        for p, box in enumerate(crop_boxes):
            with timer("crop"):
                crop = geometry.crop(image, box)
            stage.add((i, p), i, crop)
        found.append((dets, crop_boxes))
    stage.end()
    outputs = {r.track_id: r.outputs for r in stage.results}
    people = []
    for i, (image, (dets, crop_boxes)) in enumerate(zip(images, found)):
        rows = [outputs[(i, p)] for p in range(len(dets))]
        h, w = image.shape[:2]
        cam = np.stack([r["cam"] for r in rows]) if rows else np.zeros((0, 3), np.float32)
        item = {"boxes": dets[:, :4], "scores": dets[:, 4], "cam": cam,
                "crop_boxes": crop_boxes.astype(np.float32),
                "orig_cam": crop_cam_to_orig_cam(cam, crop_box_cxcyh(crop_boxes), w, h)}
        for key in (rows[0] if rows else {}):
            if key != "cam":
                item[key] = np.stack([r[key] for r in rows])
        if "joints3d" in item:
            item["joints2d"] = joints_to_pixels(item["joints3d"], cam, crop_boxes).astype(np.float32)
        if not rows:  # no one found: empty rows of the model's outputs
            for spec in backends.contract.model_graph.outputs:
                if spec.name not in item:
                    item[spec.name] = np.zeros((0, *[int(d) for d in spec.shape[1:]]), np.float32)
        people.append(item)
    return people, describe_detector(detector)


def _scene_people(opts: Any, backends: Any, timer: Any, images: List[np.ndarray]) -> tuple:
    from .scene_stage import SceneStage, optional_threshold, result_row, scene_detector_note

    threshold = optional_threshold(opts.threshold)
    stage = SceneStage(backends, timer, threshold)
    step = max(int(opts.backbone_batch), 1)
    per_image: List[List[dict]] = []
    for i in range(0, len(images), step):
        per_image.extend(stage.people(images[i:i + step]))
    people = []
    for image, found in zip(images, per_image):
        h, w = image.shape[:2]
        rows = [result_row(p) for p in found]
        if rows:
            item = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
            item["scores"] = item.pop("score")
        else:
            item = {"pose_rotmat": np.zeros((0, 24, 3, 3), np.float32), "betas": np.zeros((0, 10), np.float32),
                    "cam": np.zeros((0, 3), np.float32), "vertices": np.zeros((0, 0, 3), np.float32),
                    "joints3d": np.zeros((0, 0, 3), np.float32), "crop_boxes": np.zeros((0, 4), np.float32),
                    "scores": np.zeros((0,), np.float32), "joints2d": np.zeros((0, 0, 2), np.float32)}
        item["boxes"] = np.array([p["box"] for p in found], np.float32).reshape(-1, 4)
        item["orig_cam"] = crop_cam_to_orig_cam(item["cam"], crop_box_cxcyh(item["crop_boxes"]), w, h)
        people.append(item)
    return people, scene_detector_note(threshold)
