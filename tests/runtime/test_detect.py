"""Person detectors: OpenCV's HOG on the sample video, NMS, and the ONNX detector's output layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hmr_trt.errors import ConfigError, InputSpecError
from hmr_trt.runtime.detect import HogPeopleDetector, OnnxDetector, letterbox, nms

cv2 = pytest.importorskip("cv2")


def _frame(video: Path, index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(video))
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = cap.read()
    finally:
        cap.release()
    assert ok, f"cannot read frame {index} of {video}"
    return frame


@pytest.fixture(scope="module")
def hog() -> HogPeopleDetector:
    return HogPeopleDetector()


def test_hog_finds_pedestrians_in_the_sample_video(hog, sample_video) -> None:
    frame = _frame(sample_video, 100)
    dets = hog.detect(frame)
    assert dets.dtype == np.float32 and dets.ndim == 2 and dets.shape[1] == 5
    h, w = frame.shape[:2]
    widths, heights = dets[:, 2] - dets[:, 0], dets[:, 3] - dets[:, 1]
    plausible = (heights > 40) & (heights < 0.8 * h) & (widths < heights)  # upright people, not the whole frame
    assert plausible.sum() >= 2, dets
    assert (dets[:, 0] >= 0).all() and (dets[:, 2] <= w).all() and (dets[:, 1] >= 0).all() and (dets[:, 3] <= h).all()
    assert (np.diff(dets[:, 4]) <= 0).all(), "sorted by score"


@pytest.mark.parametrize("value", [0, 128])
def test_hog_finds_nothing_in_a_blank_frame(hog, value) -> None:
    dets = hog.detect(np.full((576, 768, 3), value, dtype=np.uint8))
    assert dets.shape == (0, 5) and dets.dtype == np.float32


@pytest.mark.parametrize("shape", [(1, 1), (10, 10), (50, 50), (84, 42), (140, 40), (40, 140)])
def test_hog_on_frames_smaller_than_its_window(hog, shape) -> None:
    """Smaller than 64x128 after resizing: no detections (OpenCV itself crashes on some of these)."""
    assert hog.detect(np.zeros((*shape, 3), dtype=np.uint8)).shape == (0, 5)


def test_hog_refuses_bad_frames(hog) -> None:
    with pytest.raises(InputSpecError, match=r"\(H, W, 3\)"):
        hog.detect(np.zeros((64, 64), dtype=np.uint8))
    with pytest.raises(InputSpecError, match="uint8"):
        hog.detect(np.zeros((64, 64, 3), dtype=np.float32))


def test_hog_missing_in_opencv5_is_a_config_error(monkeypatch) -> None:
    monkeypatch.delattr(cv2, "HOGDescriptor")
    with pytest.raises(ConfigError, match="opencv-python-headless<5"):
        HogPeopleDetector()


def test_hog_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError):
        HogPeopleDetector(scale=1.0)
    with pytest.raises(ConfigError):
        HogPeopleDetector(tighten=(0.0, 1.0))


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    dets = np.array([[0, 0, 10, 20, 0.5], [1, 1, 11, 21, 0.9], [50, 50, 60, 70, -0.3]], dtype=np.float32)
    kept = nms(dets, 0.45)
    np.testing.assert_allclose(kept, dets[[1, 2]])  # negative scores (HOG margins) survive NMS
    assert nms(dets, 0.45, score_threshold=0.0).shape == (1, 5)
    assert nms(np.zeros((0, 5)), 0.45).shape == (0, 5)


# --- ONNX detector: tiny graphs that output fixed tensors ----------------------------------------

NET = 64  # network input side; the test frame is 128 x 96 (W x H): ratio 0.5, 8 px of padding top and bottom
FRAME_W, FRAME_H = 128, 96


def _constant_model(path: Path, output: np.ndarray, input_shape=(1, 3, NET, NET)) -> Path:
    """images -> output0 = output + 0 * mean(images): a detector whose answer ignores the image."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["boxes", "nothing"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "fixed_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output.shape))],
        initializer=[numpy_helper.from_array(output.astype(np.float32), "boxes"),
                     numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _yolov8_head(anchors: int = 100, classes: int = 80) -> np.ndarray:
    """(1, 4 + classes, anchors): a person, its near-duplicate, a weak person, a car, and empty anchors."""
    head = np.zeros((4 + classes, anchors), dtype=np.float32)
    head[:4, :] = [[10], [10], [4], [4]]
    head[:4, 0], head[4 + 0, 0] = [32, 32, 16, 32], 0.9  # person: net xyxy (24, 16, 40, 48)
    head[:4, 1], head[4 + 0, 1] = [33, 32, 16, 32], 0.8  # its duplicate: suppressed by NMS
    head[:4, 2], head[4 + 0, 2] = [10, 40, 8, 16], 0.1  # below conf_threshold
    head[:4, 3], head[4 + 2, 3] = [50, 30, 10, 10], 0.95  # class 2 (car): not a person
    return head[None]


def test_onnx_detector_parses_a_yolov8_head(tmp_path) -> None:
    det = OnnxDetector(_constant_model(tmp_path / "yolov8.onnx", _yolov8_head()))
    dets = det.detect(np.zeros((FRAME_H, FRAME_W, 3), dtype=np.uint8))
    # net (24, 16, 40, 48) -> minus padding (0, 8) -> / ratio 0.5 -> frame (48, 16, 80, 80)
    np.testing.assert_allclose(dets, [[48, 16, 80, 80, 0.9]], atol=1e-4)
    det.close()


def test_onnx_detector_parses_ready_made_boxes(tmp_path) -> None:
    boxes = np.array([[[24, 16, 40, 48, 0.7, 0], [0, 8, 64, 56, 0.99, 5], [0, 0, 1, 1, 0.0, 0]]], dtype=np.float32)
    det = OnnxDetector(_constant_model(tmp_path / "boxes.onnx", boxes))
    dets = det.detect(np.zeros((FRAME_H, FRAME_W, 3), dtype=np.uint8))
    np.testing.assert_allclose(dets, [[48, 16, 80, 80, 0.7]], atol=1e-4)


def test_onnx_detector_uses_input_size_for_dynamic_inputs(tmp_path) -> None:
    path = _constant_model(tmp_path / "dyn.onnx", _yolov8_head(), input_shape=("batch", 3, "height", "width"))
    det = OnnxDetector(path, input_size=(NET, NET))
    assert det.input_hw == (NET, NET)
    np.testing.assert_allclose(det.detect(np.zeros((FRAME_H, FRAME_W, 3), dtype=np.uint8))[:, :4], [[48, 16, 80, 80]],
                               atol=1e-4)


@pytest.mark.parametrize("shape", [(1, 25200, 85), (7, 5), (1, 2, 3, 4)])
def test_onnx_detector_refuses_unknown_layouts(tmp_path, shape) -> None:
    det = OnnxDetector(_constant_model(tmp_path / "odd.onnx", np.zeros(shape, dtype=np.float32)))
    with pytest.raises(InputSpecError, match=r"\(" + ", ".join(str(s) for s in shape) + r"\)"):
        det.detect(np.zeros((FRAME_H, FRAME_W, 3), dtype=np.uint8))


def test_letterbox_geometry() -> None:
    frame = np.full((FRAME_H, FRAME_W, 3), 255, dtype=np.uint8)
    blob, ratio, pad_x, pad_y = letterbox(frame, NET, NET)
    assert blob.shape == (1, 3, NET, NET) and blob.dtype == np.float32
    assert (ratio, pad_x, pad_y) == (0.5, 0.0, 8.0)
    np.testing.assert_allclose(blob[0, :, 0, 0], 114 / 255)  # padding
    np.testing.assert_allclose(blob[0, :, NET // 2, NET // 2], 1.0)  # image


# --- SSDLite (the default where converted), the auto choice, and recall on the hand labels -------------

from hmr_trt.runtime.detect import (  # noqa: E402
    SSDLITE_ONNX,
    SsdLiteDetector,
    cached_ssdlite,
    describe_detector,
    make_detector,
)
from hmr_trt.runtime.detect_eval import iou_matrix, match, read_labels, score_detector  # noqa: E402

LABELS = Path(__file__).resolve().parents[1] / "fixtures" / "vtest_people.json"


def _ssdlite_or_skip() -> SsdLiteDetector:
    if cached_ssdlite() is None:
        pytest.skip("SSDLite not converted on this machine: run `python tools/convert_ssdlite.py` (make demo does)")
    return SsdLiteDetector()


def test_ssdlite_outputs_to_frame_pixels() -> None:
    det = SsdLiteDetector.__new__(SsdLiteDetector)  # the decoding alone, on made-up graph outputs
    det.score_threshold = 0.3
    out = {SsdLiteDetector.COUNT: np.array([3.0]),
           SsdLiteDetector.SCORES: np.array([[0.9, 0.2, 0.6, 0.95]]),
           SsdLiteDetector.BOXES: np.array([[[0.1, 0.2, 0.5, 0.3], [0, 0, 1, 1], [0.5, 0.5, 1.2, 0.9],
                                             [0.0, 0.0, 0.1, 0.1]]])}
    dets = det.boxes_to_frame(out, 576, 768)  # the 4th box is past num_detections, the 2nd below threshold
    np.testing.assert_allclose(dets, [[0.2 * 768, 0.1 * 576, 0.3 * 768, 0.5 * 576, 0.9],
                                      [0.5 * 768, 0.5 * 576, 0.9 * 768, 576, 0.6]], rtol=1e-5)


def test_auto_falls_back_to_hog_and_ssdlite_says_how_to_convert(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HMR_TRT_CACHE", str(tmp_path))
    assert cached_ssdlite() is None
    assert isinstance(make_detector("auto"), HogPeopleDetector)
    with pytest.raises(ConfigError, match="tools/convert_ssdlite.py"):
        make_detector("ssdlite")
    with pytest.raises(ConfigError, match="auto, ssdlite, hog"):
        make_detector(str(tmp_path / "nothing.onnx"))


def test_labels_are_boxes_a_human_drew() -> None:
    labels = read_labels(LABELS)
    assert len(labels) >= 5 and sum(len(b) for b in labels.values()) >= 30
    for boxes in labels.values():
        h = boxes[:, 3] - boxes[:, 1]
        assert ((h > 20) & (h < 200)).all() and (boxes[:, 2] <= 768).all() and (boxes[:, 3] <= 576).all()


def test_matching_is_one_to_one() -> None:
    labels = np.array([[0, 0, 10, 20], [100, 100, 110, 120]], dtype=float)
    assert iou_matrix(labels, labels[:1]).round(3).tolist() == [[1.0], [0.0]]
    assert match(labels, np.array([[0, 0, 10, 20, 1], [1, 1, 10, 20, 1]])) == 1  # two boxes on one person count once
    assert match(labels, np.array([[0, 0, 10, 20, 1], [101, 100, 111, 121, 1]])) == 2
    assert match(labels, np.zeros((0, 5))) == 0


def test_ssdlite_recall_beats_hog_on_the_hand_labels(hog, sample_video) -> None:
    """The measurement in the README: recall on hand-labelled vtest frames (IoU >= 0.4)."""
    ssdlite = _ssdlite_or_skip()
    labels = read_labels(LABELS)
    frames = {i: _frame(sample_video, i) for i in labels}
    hog_score = score_detector("hog", hog.detect, frames, labels, repeats=0)
    ssd_score = score_detector("ssdlite", ssdlite.detect, frames, labels, repeats=0)
    assert hog_score.recall > 0.5, hog_score.as_dict()
    assert ssd_score.recall > hog_score.recall, (ssd_score.as_dict(), hog_score.as_dict())
    assert ssd_score.unmatched_detections <= 4, ssd_score.as_dict()
    assert describe_detector(ssdlite).startswith("SSDLite") and ssdlite.path.name == SSDLITE_ONNX


def test_conversion_tool_trusts_only_a_cache_entry_matching_its_sidecar(tmp_path, monkeypatch) -> None:
    """tools/convert_ssdlite.py skips the conversion only when the cached ONNX has the sidecar's sha256."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location(
        "convert_ssdlite", Path(__file__).resolve().parents[2] / "tools" / "convert_ssdlite.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setenv("HMR_TRT_CACHE", str(tmp_path))
    onnx_path = tool.default_out_dir() / tool.ONNX_NAME
    assert onnx_path.parent == tmp_path / "detectors" and onnx_path.name == SSDLITE_ONNX
    assert not tool.cached(onnx_path)
    onnx_path.parent.mkdir(parents=True)
    onnx_path.write_bytes(b"graph")
    assert not tool.cached(onnx_path)  # no sidecar
    onnx_path.with_suffix(".json").write_text(json.dumps({"onnx_sha256": tool.sha256(onnx_path)}))
    assert tool.cached(onnx_path)
    onnx_path.write_bytes(b"damaged")
    assert not tool.cached(onnx_path)
    assert cached_ssdlite() == onnx_path  # the runtime looks where the tool writes


def test_tracker_settings_follow_the_detector(hog) -> None:
    from hmr_trt.runtime.detect import tracker_params
    from hmr_trt.runtime.track import Tracker

    assert tracker_params(hog) == {}
    params = tracker_params(SsdLiteDetector.__new__(SsdLiteDetector))
    assert params == {"iou_threshold": 0.1, "kalman_update": 1.0}
    assert Tracker(**params).params["iou"] == 0.1
