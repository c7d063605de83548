"""Top-down keypoint crops and heatmap decoding, as ViTPose's official test pipeline does them.

WHAM's demo runs ViTPose-H with the ``ViTPose_huge_coco_256x192`` config through mmpose's
``inference_top_down_pose_model``; these are the rules that run there, written from reading the code:

* **Box -> centre and scale.** The detector's (x1, y1, x2, y2) box becomes (x, y, w, h) with
  ``w = x2 - x1 + 1`` and ``h = y2 - y1 + 1``; the centre is ``(x + w/2, y + h/2)``; the box is widened
  or heightened to the crop's width:height ratio (192:256), and the scale is that size in units of
  200 pixels, padded by 1.25 (all float32, as there).
* **Crop (UDP).** The config sets ``use_udp``: the crop is the unbiased warp that maps the box's
  ``scale * 200`` pixels onto ``size - 1`` crop pixels around the centre (no rotation at test time),
  bilinear, black outside the frame, on the RGB frame; then /255 and ImageNet mean/std (float32).
* **Decode (UDP + DARK).** With ``use_udp`` and Gaussian heatmaps the 'default' post-process (the
  +/-0.25 pixel shift) is not the one that runs: the maximum of each heatmap gives the integer
  location and the score, then the heatmaps are blurred (11x11 Gaussian, sigma from the kernel size),
  clipped to [0.001, 50], logged, and one Newton step on the edge-padded log map (finite-difference
  gradient and Hessian, Hessian + float32 eps on its diagonal) refines the location. A heatmap
  location maps to the crop by ``(size - 1) / (heatmap size - 1)`` per axis (UDP), and the crop to
  the frame by the crop's inverse affine map.
* **Flip test.** The config's ``flip_test`` is on and WHAM's demo keeps it: the heatmaps of the
  horizontally flipped crop, flipped back with left/right keypoints swapped (``COCO_FLIP_PAIRS``), are
  averaged with the plain ones before decoding (no heatmap shift: ``shift_heatmap`` is off). The
  ViTPose export does this inside the graph, so its ``heatmaps`` output decodes as it is.

The export (``trt-export --model vitpose``): input ``crops`` (N, 3, 256, 192) float32 (``topdown_crops``),
output ``heatmaps`` (N, 17, 64, 48) float32, flip test inside; ``open_keypoint_model`` opens it (TensorRT engine
or ONNX Runtime, as ``trt-run`` chooses) for one batched call over every person's crop::

    with open_keypoint_model("out/vitpose") as vitpose:
        keypoints = vitpose.keypoints(frame_bgr, boxes_xyxy)  # (N, 17, 3) [x, y, score] in frame pixels

numpy + OpenCV only (OpenCV imported where used), so it runs on a bare Python 3.9 GPU image.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Optional, Tuple, Union

import numpy as np

from hmr_trt.errors import ConfigError, InputSpecError
from hmr_trt.runtime.crops import normalise_crops

INPUT_SIZE = (192, 256)  # crop (width, height)
HEATMAP_SIZE = (48, 64)  # heatmap (width, height)
NUM_KEYPOINTS = 17  # COCO order: nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles (left first)
BOX_PADDING = 1.25
PIXEL_STD = 200.0  # mmpose's scale unit
DARK_KERNEL = 11  # the config's modulate_kernel
COCO_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))


def box_center_scale(box_xyxy: np.ndarray, input_size: Tuple[int, int] = INPUT_SIZE) -> Tuple[np.ndarray, np.ndarray]:
    """(x1, y1, x2, y2[, score]) -> (centre (2,), scale (2,)) float32, scale in units of 200 px, padded."""
    b = np.asarray(box_xyxy, dtype=np.float32).reshape(-1)
    if b.size < 4 or not np.all(np.isfinite(b[:4])):
        raise InputSpecError(f"a person box must be 4 finite numbers (x1, y1, x2, y2), got {b.tolist()}")
    one = np.float32(1)
    x, y = b[0], b[1]
    w, h = b[2] - b[0] + one, b[3] - b[1] + one  # the official xyxy -> xywh keeps the +1 pixel
    center = np.array([x + w * np.float32(0.5), y + h * np.float32(0.5)], dtype=np.float32)
    aspect = np.float32(input_size[0] / input_size[1])
    if w > aspect * h:
        h = w / aspect
    elif w < aspect * h:
        w = h * aspect
    scale = np.array([w / np.float32(PIXEL_STD), h / np.float32(PIXEL_STD)], dtype=np.float32)
    return center, scale * np.float32(BOX_PADDING)


def crop_warp(center: np.ndarray, scale: np.ndarray, input_size: Tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """The unbiased (UDP) frame -> crop affine map (2, 3) float32 of a box's centre and scale."""
    c = np.asarray(center, dtype=np.float32)
    roi = np.asarray(scale, dtype=np.float32) * np.float32(PIXEL_STD)  # the box's size in frame pixels
    sx = (input_size[0] - 1.0) / float(roi[0])
    sy = (input_size[1] - 1.0) / float(roi[1])
    half = np.float32(0.5) * roi - c  # float32, as the official matrix sums it
    return np.array([[sx, 0.0, sx * float(half[0])], [0.0, sy, sy * float(half[1])]], dtype=np.float32)


def topdown_crop(frame_bgr: np.ndarray, box_xyxy: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """One person's crop: (crop float32 (3, 256, 192) normalised, trans float32 (2, 3) frame -> crop)."""
    import cv2

    if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
        raise InputSpecError(f"a frame must be (H, W, 3) BGR, got shape {tuple(frame_bgr.shape)}")
    trans = crop_warp(*box_center_scale(box_xyxy))
    crop = cv2.warpAffine(frame_bgr, trans, INPUT_SIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return normalise_crops(crop[None, :, :, ::-1])[0], trans  # BGR -> RGB, /255, ImageNet mean/std


def topdown_crops(frame_bgr: np.ndarray, boxes_xyxy: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Every person's crop of one frame: (crops (N, 3, 256, 192), trans (N, 2, 3)), for one batched call."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float32)
    if boxes.size and (boxes.ndim != 2 or boxes.shape[1] < 4):
        raise InputSpecError(f"person boxes must be (N, 4) or (N, 5) (x1, y1, x2, y2[, score]), "
                             f"got {tuple(boxes.shape)}")
    if boxes.size == 0:
        return np.zeros((0, 3, INPUT_SIZE[1], INPUT_SIZE[0]), np.float32), np.zeros((0, 2, 3), np.float32)
    pairs = [topdown_crop(frame_bgr, b) for b in boxes]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def heatmap_maxima(heatmaps: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(N, K, H, W) -> integer (x, y) float32 (N, K, 2) of each heatmap's first maximum ((-1, -1) where it is not
    positive, as the official code marks it), and the maximum (N, K): the keypoint's score."""
    n, k, _, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, -1)
    idx = flat.argmax(axis=2)
    score = flat.max(axis=2)
    xy = np.stack([idx % w, idx // w], axis=-1).astype(np.float32)
    xy[score <= 0] = -1.0
    return xy, score


def _dark_refine(xy: np.ndarray, heatmaps: np.ndarray, kernel: int = DARK_KERNEL) -> np.ndarray:
    """One Newton step on the blurred log heatmap at each integer maximum (UDP's DARK)."""
    import cv2

    n, k, h, w = heatmaps.shape
    logs = np.empty_like(heatmaps)
    for i in range(n):
        for j in range(k):
            logs[i, j] = cv2.GaussianBlur(heatmaps[i, j], (kernel, kernel), 0)
    np.log(np.clip(logs, 0.001, 50), out=logs)
    # The official code reads the edge-padded maps as one flat array: a location of (-1, -1) (a map with
    # no positive value) reads its neighbours before the map's own start, so index the same way.
    flat = np.pad(logs, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge").ravel()
    row = w + 2
    base = (xy[..., 0] + 1 + (xy[..., 1] + 1) * row + row * (h + 2) * np.arange(n * k).reshape(n, k))
    at = base.astype(int)

    def v(offset: int) -> np.ndarray:
        return flat[at + offset]

    centre, right, left, down, up = v(0), v(1), v(-1), v(row), v(-row)
    dx, dy = 0.5 * (right - left), 0.5 * (down - up)
    dxx = right - 2 * centre + left
    dyy = down - 2 * centre + up
    dxy = 0.5 * (v(row + 1) - right - down + centre + centre - left - up + v(-row - 1))  # float32, summed in order
    hess = np.stack([np.stack([dxx, dxy], -1), np.stack([dxy, dyy], -1)], -2)  # (N, K, 2, 2)
    inv = np.linalg.inv(hess + np.finfo(np.float32).eps * np.eye(2))
    step = np.einsum("nkab,nkb->nka", inv, np.stack([dx, dy], -1))
    return (xy - step).astype(np.float32)


def decode_heatmaps(heatmaps: np.ndarray, trans: np.ndarray, maxima: np.ndarray | None = None) -> np.ndarray:
    """Heatmaps (N, 17, 64, 48) and each crop's frame -> crop map (N, 2, 3) -> (N, 17, 3) [x, y, score] in
    frame pixels, float32 (the official UDP + DARK decoding).

    ``maxima``: (N, K, 2) integer cells to refine from instead of the heatmaps' own (``heatmap_maxima``), the
    score then the heatmap's value there; parity pins the reference's so that two runtimes are compared on
    the continuous part (the maximum is a discrete decision two float32 runtimes may take apart on a tie)."""
    hm = np.asarray(heatmaps)
    tr = np.asarray(trans, dtype=np.float64)
    if hm.ndim != 4 or hm.shape[2:] != (HEATMAP_SIZE[1], HEATMAP_SIZE[0]):
        raise InputSpecError(f"heatmaps must be (N, K, {HEATMAP_SIZE[1]}, {HEATMAP_SIZE[0]}), "
                             f"got {tuple(hm.shape)}")
    if tr.shape != (hm.shape[0], 2, 3):
        raise InputSpecError(f"trans must be ({hm.shape[0]}, 2, 3) for {hm.shape[0]} heatmap sets, "
                             f"got {tuple(tr.shape)}")
    n, k = hm.shape[:2]
    if n == 0:
        return np.zeros((0, k, 3), np.float32)
    hm = np.ascontiguousarray(hm, dtype=np.float32)
    xy, score = heatmap_maxima(hm)
    if maxima is not None:
        xy = np.asarray(maxima, dtype=np.float32).reshape(n, k, 2)
        cells = np.clip(xy, 0, None).astype(int)
        score = np.where(xy[..., 0] < 0, score, hm[np.arange(n)[:, None], np.arange(k)[None], cells[..., 1],
                                                    cells[..., 0]])
    xy = _dark_refine(xy, hm)
    # heatmap -> crop (UDP: the end pixels' centres map onto each other) -> frame (the inverse affine map)
    per_pixel = np.array([(INPUT_SIZE[0] - 1.0) / (HEATMAP_SIZE[0] - 1.0),
                          (INPUT_SIZE[1] - 1.0) / (HEATMAP_SIZE[1] - 1.0)])
    crop_xy = xy.astype(np.float64) * per_pixel
    lin, off = tr[:, :, :2], tr[:, :, 2]
    frame_xy = np.einsum("nab,nkb->nka", np.linalg.inv(lin), crop_xy - off[:, None, :])
    return np.concatenate([frame_xy, score[..., None]], axis=-1).astype(np.float32)


class KeypointModel:
    """An opened keypoint export: crops -> heatmaps on its backend, decoded to frame pixels here."""

    def __init__(self, backend: Any, contract: Any) -> None:
        self.backend, self.contract = backend, contract
        graph = contract.model_graph
        self.input_name, self.output_name = graph.input_names[0], graph.output_names[0]
        self.crop_shape = tuple(graph.inputs[0].shape[1:])

    def heatmaps(self, crops: np.ndarray) -> np.ndarray:
        """(N, 3, 256, 192) normalised crops -> (N, 17, 64, 48) heatmaps (flip test included), in chunks of the
        backend's largest batch."""
        x = np.ascontiguousarray(crops, dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.crop_shape:
            raise InputSpecError(f"crops must be (N, {', '.join(map(str, self.crop_shape))}) (topdown_crops), "
                                 f"got {tuple(x.shape)}")
        if len(x) == 0:
            rows, cols = HEATMAP_SIZE[1], HEATMAP_SIZE[0]
            return np.zeros((0, int(self.contract.model_graph.outputs[0].shape[1]), rows, cols), np.float32)
        from .backends_select import _chunked

        return np.asarray(_chunked(self.backend, {self.input_name: x})[self.output_name], dtype=np.float32)

    def keypoints_of_crops(self, crops: np.ndarray, trans: np.ndarray) -> np.ndarray:
        """Crops and their frame -> crop maps (``topdown_crops``; any mix of frames) -> (N, 17, 3) frame keypoints."""
        return decode_heatmaps(self.heatmaps(crops), trans)

    def keypoints(self, frame_bgr: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Every person of one frame in one call: (N, 4|5) boxes -> (N, 17, 3) [x, y, score] in frame pixels."""
        crops, trans = topdown_crops(frame_bgr, boxes_xyxy)
        return self.keypoints_of_crops(crops, trans)


def check_keypoint_contract(contract: Any, where: str) -> None:
    """A keypoint export's contract (``body_model: "keypoints"``, one crops -> heatmaps graph), else one line."""
    graph = contract.model_graph
    if contract.body_model != "keypoints" or len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ConfigError(f"{where} is a {contract.name} export ({contract.family} model, body model "
                          f"{contract.body_model!r}), not a keypoint model: export one with "
                          "trt-export --model vitpose")
    if tuple(graph.outputs[0].shape[2:]) != (HEATMAP_SIZE[1], HEATMAP_SIZE[0]):
        raise ConfigError(f"{where}: its heatmaps are {graph.outputs[0].shape[1:]}, this decoder reads "
                          f"(K, {HEATMAP_SIZE[1]}, {HEATMAP_SIZE[0]})")


@contextlib.contextmanager
def open_keypoint_model(export_dir: Union[str, Path], backend: str = "auto", precision: str = "fp32",
                        threads: int = 0, device: str = "auto", ort_providers: Optional[str] = None,
                        triton_url: Optional[str] = None) -> Iterator[KeypointModel]:
    """Open a ViTPose export (its engine when one runs here, else its ONNX on ONNX Runtime); checked to be a
    keypoint model before any graph is loaded."""
    from hmr_trt.manifest import Manifest

    from .backends_select import contract_of, open_backends

    check_keypoint_contract(contract_of(Manifest.read(Path(export_dir))), str(export_dir))
    with open_backends(Path(export_dir), backend, precision, threads, need_backbone=False, device=device,
                       ort_providers=ort_providers, triton_url=triton_url) as backends:
        yield KeypointModel(backends.temporal, backends.contract)
