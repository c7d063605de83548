"""The ``frame`` family (one crop per person per frame, e.g. DecoMR): crops batched across people and frames.

The window family streams per-frame features into temporal windows; a frame model needs no window:
each crop goes through the model graph once, in batches of ``--backbone-batch`` crops gathered over
every person of every frame, and each row of the outputs is that person's result for that frame.
The streamer is not used. ``crop_size`` and ``bbox_scale`` come from the export's contract.
numpy only; Python 3.9-compatible.
"""

from __future__ import annotations

from typing import Any, List

import numpy as np

from .crops import CropBatcher
from .streaming import FrameResult

MODEL_STAGE = "model"  # the timer's stage for the model graph of per-image families


class FrameStage(CropBatcher):
    """``add(track_id, frame_index, crop)`` until ``end()``; ``results``: one FrameResult per crop."""

    def __init__(self, backends: Any, timer: Any, batch: int) -> None:
        super().__init__(timer, batch)
        self.backends = backends
        self.graph = backends.contract.model_graph

    def _run(self, pending: List[tuple], images: np.ndarray) -> None:
        with self.timer(MODEL_STAGE):
            outputs = infer_model(self.backends, {self.graph.input_names[0]: images})
        for i, (track_id, frame_index, _) in enumerate(pending):
            self.results.append(FrameResult(track_id, frame_index, {k: v[i] for k, v in outputs.items()}))

    def step(self) -> List[FrameResult]:
        """Run the crops waiting now (results land in ``results``)."""
        self.run()
        return []

    def end_track(self, track_id: Any) -> List[FrameResult]:
        self.run()
        return []


def infer_model(backends: Any, feed: dict) -> dict:
    """The model graph on ``feed``, in chunks of the backend's largest batch (an engine's profile max)."""
    from .backends_select import _chunked

    return {k: np.asarray(v, dtype=np.float32) for k, v in _chunked(backends.temporal, feed).items()}
