"""Per-frame backbone features of real video frames, for parity and calibration windows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from hmr_trt.errors import InputSpecError
from hmr_trt.runtime.crops import crop_from_frame, normalise_crops, tile_boxes
from hmr_trt.runtime.video import frames_from_video


@torch.no_grad()
def features_from_crops(backbone: torch.nn.Module, crops_rgb: np.ndarray, chunk: int = 16) -> np.ndarray:
    """uint8 (N, 224, 224, 3) RGB crops -> float32 (N, 2048) features."""
    out = [backbone(torch.from_numpy(normalise_crops(crops_rgb[i:i + chunk]))).numpy()
           for i in range(0, len(crops_rgb), chunk)]
    return np.concatenate(out).astype(np.float32)


def features_from_video_tiles(video: str | Path, n_windows: int, window: int, backbone: Any = None) -> np.ndarray:
    """(n_windows, window, 2048) features: window i covers frames [i*T, (i+1)*T) cropped at tile i.

    Different windows see different parts of the scene at different times, so the features (and
    the model's outputs) vary across windows the way they do across real tracks.
    """
    from .backbone import ResNet50Backbone

    backbone = backbone if backbone is not None else ResNet50Backbone.from_seed(0)
    frames = [f for _, f in frames_from_video(video, max_frames=n_windows * window)]
    if len(frames) < n_windows * window:
        raise InputSpecError(f"{video} has {len(frames)} decodable frames; {n_windows * window} are needed")
    h, w = frames[0].shape[:2]
    boxes = tile_boxes(h, w, n_windows)
    crops = np.stack([crop_from_frame(frames[i], boxes[i // window]) for i in range(n_windows * window)])
    return features_from_crops(backbone, crops).reshape(n_windows, window, -1)
