"""Real-video parity inputs for the per-image families (adapters' ``video_inputs`` hooks).

``frame`` models (one crop per person): people found by the HOG detector on frames spread over the
video, cut as the runtime cuts them (square box at the contract's scale, ImageNet-normalised RGB).
``scene`` models (whole images): frames letterboxed as the runtime does (runtime/scene.letterbox).
Both read every ``STRIDE``-th frame so that the set covers the video, not one instant.

The cutting lives in ``calibration/images.py`` (torch-free), which INT8 calibration of these families
shares: parity sets start at frame 0, calibration images further on.
"""

from __future__ import annotations

from hmr_trt.calibration.images import STRIDE, letterboxed_frames, person_crops

__all__ = ["STRIDE", "letterboxed_frames", "person_crops"]
