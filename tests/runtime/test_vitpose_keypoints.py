"""runtime/keypoints.py against the official ViTPose test pipeline and decoding (tests/fixtures/vitpose_official.npz,
made by tools/vitpose_official_parity.py from the official repository's own files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hmr_trt.errors import InputSpecError
from hmr_trt.runtime.keypoints import (
    box_center_scale,
    decode_heatmaps,
    heatmap_maxima,
    topdown_crop,
    topdown_crops,
)

OFFICIAL = Path(__file__).resolve().parents[1] / "fixtures" / "vitpose_official.npz"


@pytest.fixture(scope="module")
def official() -> dict:
    with np.load(OFFICIAL) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def frames(official, sample_video) -> dict:
    import cv2

    wanted, out, index = set(int(f) for f in official["frames"]), {}, 0
    cap = cv2.VideoCapture(str(sample_video))
    while len(out) < len(wanted):
        ok, frame = cap.read()
        assert ok, f"{sample_video} ended before frame {max(wanted)}"
        if index in wanted:
            out[index] = frame
        index += 1
    cap.release()
    return out


def test_crops_equal_the_official_pipeline(official, frames) -> None:
    """Box -> centre/scale (aspect 3:4, padding 1.25), the UDP warp and the normalisation, on real frames."""
    stride = int(official["crop_stride"])
    for i, (frame_index, box) in enumerate(zip(official["frames"], official["boxes"])):
        center, scale = box_center_scale(box)
        np.testing.assert_array_equal(center, official[f"crop{i}/center"])
        np.testing.assert_array_equal(scale, official[f"crop{i}/scale"])
        crop, trans = topdown_crop(frames[int(frame_index)], box)
        assert crop.shape == (3, 256, 192) and crop.dtype == np.float32 and trans.dtype == np.float32
        np.testing.assert_array_equal(trans, official[f"crop{i}/trans"])
        np.testing.assert_allclose(crop[:, ::stride, ::stride], official[f"crop{i}/normalised_strided"],
                                   rtol=0, atol=1e-6)


def test_batched_crops_equal_single_ones(official, frames) -> None:
    frame = frames[int(official["frames"][0])]
    boxes = official["boxes"][official["frames"] == official["frames"][0]]
    crops, trans = topdown_crops(frame, boxes)
    assert crops.shape == (len(boxes), 3, 256, 192) and trans.shape == (len(boxes), 2, 3)
    for i, box in enumerate(boxes):
        one, t = topdown_crop(frame, box)
        np.testing.assert_array_equal(crops[i], one)
        np.testing.assert_array_equal(trans[i], t)
    empty, empty_trans = topdown_crops(frame, np.zeros((0, 4), np.float32))
    assert empty.shape == (0, 3, 256, 192) and empty_trans.shape == (0, 2, 3)


def test_decode_equals_official_keypoints(official) -> None:
    """UDP + DARK (blur, log, Newton step) and the heatmap -> frame map; borders and maps with no positive
    value included. Frame pixels within 1e-3 (float32 round-off of a different but equal map), scores equal."""
    heatmaps = official["synthetic_heatmaps"].astype(np.float32)
    trans = np.stack([official[f"crop{i}/trans"] for i in range(len(heatmaps))])
    ours = decode_heatmaps(heatmaps, trans)
    want = official["synthetic_keypoints"]
    assert ours.shape == want.shape == (len(heatmaps), 17, 3) and ours.dtype == np.float32
    np.testing.assert_allclose(ours[..., :2], want[..., :2], rtol=0, atol=1e-3)
    np.testing.assert_array_equal(ours[..., 2], want[..., 2])
    # the refinement is at work: the keypoints are not the integer maxima mapped to the frame
    n, k = heatmaps.shape[:2]
    idx = heatmaps.reshape(n, k, -1).argmax(-1)
    integer = np.stack([idx % 48 * 191 / 47, idx // 48 * 255 / 63], -1)
    crop_xy = np.einsum("nab,nkb->nka", trans[:, :, :2], ours[..., :2]) + trans[:, None, :, 2]
    assert np.median(np.abs(crop_xy - integer)) > 0.1


def test_decode_is_per_person(official) -> None:
    heatmaps = official["synthetic_heatmaps"].astype(np.float32)
    trans = np.stack([official[f"crop{i}/trans"] for i in range(len(heatmaps))])
    both = decode_heatmaps(heatmaps, trans)
    np.testing.assert_array_equal(decode_heatmaps(heatmaps[2:3], trans[2:3]), both[2:3])
    assert decode_heatmaps(heatmaps[:0], trans[:0]).shape == (0, 17, 3)


def test_decode_from_given_maxima(official) -> None:
    """Parity pins the reference's maxima: its own cells give the plain decode; other cells refine from there,
    the score then the heatmap's value at the cell."""
    heatmaps = official["synthetic_heatmaps"].astype(np.float32)
    trans = np.stack([official[f"crop{i}/trans"] for i in range(len(heatmaps))])
    cells, scores = heatmap_maxima(heatmaps)
    np.testing.assert_array_equal(decode_heatmaps(heatmaps, trans, cells), decode_heatmaps(heatmaps, trans))
    moved = cells.copy()
    moved[0, 5] += (1, 0)
    got = decode_heatmaps(heatmaps, trans, moved)
    x, y = moved[0, 5].astype(int)
    assert got[0, 5, 2] == heatmaps[0, 5, y, x] < scores[0, 5]
    assert np.abs(got[0, 5, :2] - decode_heatmaps(heatmaps, trans)[0, 5, :2]).max() > 0
    np.testing.assert_array_equal(np.delete(got.reshape(-1, 3), 5, 0),
                                  np.delete(decode_heatmaps(heatmaps, trans).reshape(-1, 3), 5, 0))


@pytest.mark.parametrize("heatmaps, trans, match", [
    (np.zeros((2, 17, 32, 24), np.float32), np.zeros((2, 2, 3)), r"heatmaps must be \(N, K, 64, 48\), got \(2, 17, 32, 24\)"),
    (np.zeros((17, 64, 48), np.float32), np.zeros((1, 2, 3)), r"heatmaps must be .* got \(17, 64, 48\)"),
    (np.zeros((2, 17, 64, 48), np.float32), np.zeros((3, 2, 3)), r"trans must be \(2, 2, 3\) for 2 heatmap sets, got \(3, 2, 3\)"),
])
def test_decode_rejects_wrong_shapes(heatmaps, trans, match) -> None:
    with pytest.raises(InputSpecError, match=match):
        decode_heatmaps(heatmaps, trans)


def test_crop_rejects_bad_boxes_and_frames() -> None:
    frame = np.zeros((120, 160, 3), np.uint8)
    with pytest.raises(InputSpecError, match=r"a person box must be 4 finite numbers"):
        topdown_crop(frame, np.array([0, 0, np.nan, 10]))
    with pytest.raises(InputSpecError, match=r"a frame must be \(H, W, 3\) BGR, got shape \(120, 160\)"):
        topdown_crop(frame[..., 0], np.array([0, 0, 10, 10]))
    with pytest.raises(InputSpecError, match=r"person boxes must be \(N, 4\) or \(N, 5\)"):
        topdown_crops(frame, np.array([[0, 0, 10]]))
