"""The tracker wrapper: stable integer ids on synthetic box sequences, gaps, the short-track filter."""

from __future__ import annotations

import sys
from typing import Dict, List

import numpy as np
import pytest

from hmr_trt.errors import ConfigError, InputSpecError
from hmr_trt.runtime.track import Track, Tracker, TrackLog, filter_tracks

pytest.importorskip("edgefirst.tracker", reason="the tracker library (edgefirst-tracker) is not installed")


def _box(x: float, y: float, score: float = 0.9, w: float = 40, h: float = 100) -> List[float]:
    return [x, y, x + w, y + h, score]


def _ids_by_person(tracker: Tracker, frames: Dict[int, Dict[str, List[float]]]) -> Dict[str, List[int]]:
    """Feed {frame: {person: box}}; return each person's track id per frame it was detected in."""
    seen: Dict[str, List[int]] = {}
    for index in sorted(frames):
        people = frames[index]
        names = list(people)
        dets = np.array([people[n] for n in names], dtype=np.float32).reshape(-1, 5)
        out = tracker.update(index, dets)
        for track_id, box in out:
            match = [n for n in names if np.allclose(people[n], box)]
            assert len(match) == 1, (index, box)
            seen.setdefault(match[0], []).append(track_id)
    return seen


def test_one_moving_box_keeps_its_id() -> None:
    frames = {i: {"a": _box(100 + 3 * i, 200 + i)} for i in range(60)}
    ids = _ids_by_person(Tracker(), frames)
    assert ids == {"a": [1] * 60}


def test_two_boxes_get_two_stable_ids() -> None:
    frames = {i: {"a": _box(100 + 2 * i, 200), "b": _box(400 - 2 * i, 220)} for i in range(40)}  # 60 px apart at the end
    ids = _ids_by_person(Tracker(), frames)
    assert len(set(ids["a"])) == 1 and len(set(ids["b"])) == 1 and ids["a"][0] != ids["b"][0]
    assert len(ids["a"]) == len(ids["b"]) == 40


def test_crossing_boxes_keep_their_ids() -> None:
    frames = {i: {"a": _box(100 + 4 * i, 200), "b": _box(300 - 4 * i, 210, score=0.8)} for i in range(50)}
    ids = _ids_by_person(Tracker(), frames)
    assert len(set(ids["a"])) == 1 and len(set(ids["b"])) == 1 and ids["a"][0] != ids["b"][0]


def test_a_short_gap_keeps_the_id_and_a_long_one_starts_a_new_track() -> None:
    gap = {i: {"a": _box(100 + 3 * i, 200)} for i in range(40) if not 20 <= i < 25}  # 5 frames missed
    assert set(_ids_by_person(Tracker(max_age=10), gap)["a"]) == {1}
    long_gap = {i: {"a": _box(100 + 3 * i, 200)} for i in range(60) if not 20 <= i < 40}  # 20 frames missed
    assert set(_ids_by_person(Tracker(max_age=10), long_gap)["a"]) == {1, 2}


def test_low_scores_extend_tracks_but_do_not_start_them() -> None:
    tracker = Tracker(high_conf=0.5)
    assert tracker.update(0, np.array([_box(10, 10, score=0.2)])) == []
    assert [t for t, _ in tracker.update(1, np.array([_box(300, 10, score=0.9)]))] == [1]
    assert [t for t, _ in tracker.update(2, np.array([_box(302, 10, score=0.2)]))] == [1]


def test_results_are_detection_boxes_sorted_by_id() -> None:
    tracker = Tracker()
    dets = np.array([_box(400, 10), _box(10, 10), _box(200, 10)], dtype=np.float64)
    out = tracker.update(0, dets)
    assert [t for t, _ in out] == [1, 2, 3]
    for track_id, box in out:
        assert box.dtype == np.float32 and box.shape == (5,)
        np.testing.assert_allclose(box, dets[track_id - 1])


def test_empty_frames_and_reset() -> None:
    tracker = Tracker()
    assert tracker.update(0, np.zeros((0, 5))) == []
    assert tracker.update(1, np.array([_box(10, 10)]))[0][0] == 1
    assert tracker.update(2, [])[:1] == []
    tracker.reset()
    assert tracker.update(0, np.array([_box(500, 10)]))[0][0] == 1


def test_bad_input_is_refused() -> None:
    tracker = Tracker()
    tracker.update(5, np.array([_box(10, 10)]))
    with pytest.raises(InputSpecError, match="increase"):
        tracker.update(5, np.array([_box(10, 10)]))
    with pytest.raises(InputSpecError, match=r"\(N, 5\)"):
        tracker.update(6, np.zeros((2, 4)))
    with pytest.raises(InputSpecError, match="NaN"):
        tracker.update(7, np.array([[0, 0, np.nan, 1, 1]]))
    with pytest.raises(ConfigError):
        Tracker(iou_threshold=0.0)


def test_missing_library_is_a_config_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "edgefirst.tracker", None)
    with pytest.raises(ConfigError, match="edgefirst-tracker=="):
        Tracker()


def test_track_log_drops_short_tracks() -> None:
    log = TrackLog()
    for i in range(30):
        log.add(i, [(1, np.array(_box(i, 0)))] + ([(2, np.array(_box(300, 0)))] if i < 10 else []))
    assert len(log) == 2
    kept = log.tracks()  # default MIN_TRACK_LENGTH = 16 frames
    assert [t.track_id for t in kept] == [1]
    frames, boxes = kept[0].arrays()
    assert frames.tolist() == list(range(30)) and boxes.shape == (30, 5) and boxes.dtype == np.float32
    assert [t.track_id for t in log.tracks(min_length=10)] == [1, 2]
    assert [t.track_id for t in filter_tracks([Track(7, [0, 1], [np.zeros(4)] * 2)], min_length=2)] == [7]
    with pytest.raises(ConfigError):
        log.tracks(min_length=0)
