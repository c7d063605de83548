"""runtime/video.py: frames_at, the frames of given indices (used by the tools that compare with official code)."""

from __future__ import annotations

import numpy as np
import pytest

from hmr_trt.errors import InputSpecError
from hmr_trt.runtime.video import frames_at, frames_from_video

pytest.importorskip("cv2")


def test_frames_at_gives_the_decoded_frames_of_those_indices(sample_video) -> None:
    every = dict(frames_from_video(sample_video, 8))
    picked = frames_at(sample_video, {7, 0, 3})
    assert sorted(picked) == [0, 3, 7]
    assert all(np.array_equal(picked[i], every[i]) for i in picked)
    assert frames_at(sample_video, set()) == {}


def test_frames_at_past_the_end_names_the_missing_indices(sample_video) -> None:
    with pytest.raises(InputSpecError, match=r"has no frames \[100000\]"):
        frames_at(sample_video, {2, 100000})
