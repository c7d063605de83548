"""Calibration windows (W, T, C) float32 from saved per-frame features or from videos.

T and C are the model contract's ``window`` and ``feature_dim`` (the caller passes them). Two sources:
- ``.npz`` files of per-frame backbone features: key ``features`` of shape (N, C) for one
  track or (tracks, N, C), or one key per track named ``track_*`` of shape (N, C);
- videos, decoded and cropped as export/features.py does (window i covers frames
  [i*T, (i+1)*T) cropped at tile i of a 3 x 2 grid), featurised by the backbone ONNX on ORT.
Windows do not overlap unless ``stride`` < ``window``. torch-free: numpy, OpenCV and onnxruntime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from hmr_trt.errors import InputSpecError

VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
PathLike = Union[str, Path]


def windows_from_track(features: np.ndarray, window: int, stride: Optional[int] = None) -> np.ndarray:
    """(N, C) per-frame features of one track -> (W, window, C) windows, every ``stride`` frames."""
    stride = stride or window
    starts = range(0, len(features) - window + 1, stride)
    return np.stack([features[s:s + window] for s in starts]) if len(starts) else np.empty((0, window, features.shape[-1]),
                                                                                           np.float32)


def windows_from_features_npz(paths_or_folder: Union[PathLike, Sequence[PathLike]], window: int = 16,
                              stride: Optional[int] = None, *, feature_dim: int) -> np.ndarray:
    """Windows from ``.npz`` feature files (a folder of them, one file, or a list of files);
    ``feature_dim``: the contract's C."""
    _check_window(window, stride)
    paths = _files(paths_or_folder, (".npz",), "feature files (.npz)")
    windows, frames = [], []
    for path in paths:
        for name, track in _tracks(path, feature_dim):
            frames.append(f"{path.name}:{name} {len(track)}")
            w = windows_from_track(track, window, stride)
            if len(w):
                windows.append(w)
    if not windows:
        raise InputSpecError(f"too few frames for one window of {window}: tracks have {', '.join(frames)} frames")
    return np.ascontiguousarray(np.concatenate(windows), dtype=np.float32)


def windows_from_videos(folder_or_file: Union[PathLike, Sequence[PathLike]], backbone_onnx: PathLike,
                        window: int = 16, max_windows: int = 16, start_frame: int = 0,
                        threads: int = 0, feature_dim: Optional[int] = None) -> np.ndarray:
    """Up to ``max_windows`` windows of backbone features of video frames, from ``start_frame`` on.

    Every video contributes consecutive windows until ``max_windows`` are collected; use
    ``start_frame`` to take evaluation windows from a different part of the video than calibration.
    ``feature_dim``: the contract's C (default: the backbone graph's declared output width).
    """
    from hmr_trt.runtime.backends import OnnxRuntimeBackend

    _check_window(window, None)
    if max_windows < 1:
        raise InputSpecError(f"max_windows must be >= 1, got {max_windows}")
    paths = _files(folder_or_file, VIDEO_SUFFIXES, "videos")
    windows: List[np.ndarray] = []
    seen = []
    with OnnxRuntimeBackend(backbone_onnx, threads=threads) as backbone:
        width = feature_dim or int(backbone.outputs[0].shape[-1])
        for path in paths:
            crops, frames = [], 0
            for crop in _video_crops(path, window, max_windows - len(windows), start_frame):
                crops.append(crop)
                frames += 1
                if len(crops) == window:
                    windows.append(_features(backbone, np.stack(crops), path, width))
                    crops = []
            seen.append(f"{path.name}: {frames}")
            if len(windows) >= max_windows:
                break
    if not windows:
        raise InputSpecError(f"too few frames for one window of {window}: decodable frames after frame "
                             f"{start_frame}: {', '.join(seen)}")
    return np.ascontiguousarray(np.stack(windows), dtype=np.float32)


def _video_crops(path: Path, window: int, n_windows: int, start_frame: int) -> Iterator[np.ndarray]:
    """RGB crops of frames [start, start + n_windows * window), window i cropped at tile i."""
    from hmr_trt.runtime.crops import crop_from_frame, tile_boxes
    from hmr_trt.runtime.video import frames_from_video

    boxes = None
    for index, frame in frames_from_video(path, max_frames=start_frame + n_windows * window):
        if index < start_frame:
            continue
        if boxes is None:
            boxes = tile_boxes(frame.shape[0], frame.shape[1], n_windows)
        yield crop_from_frame(frame, boxes[(index - start_frame) // window])


def _features(backbone, crops_rgb: np.ndarray, path: Path, width: int) -> np.ndarray:  # (T, 224, 224, 3) -> (T, C)
    from hmr_trt.runtime.crops import normalise_crops

    out = backbone.infer({backbone.inputs[0].name: normalise_crops(crops_rgb)})
    feats = next(iter(out.values()))
    if feats.ndim != 2 or feats.shape[1] != width:
        raise InputSpecError(f"backbone gave features of shape {feats.shape} for {path.name}; expected (N, {width})")
    return feats


def _tracks(path: Path, feature_dim: int) -> Iterable[Tuple[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError) as exc:
        raise InputSpecError(f"{path}: not a readable .npz file ({exc})") from exc
    tracks = sorted(k for k in arrays if k.startswith("track_"))
    if "features" in arrays:
        feats = arrays["features"]
        if feats.ndim == 2:
            items = [("features", feats)]
        elif feats.ndim == 3:
            items = [(f"features[{i}]", f) for i, f in enumerate(feats)]
        else:
            raise InputSpecError(f"{path}: 'features' has shape {feats.shape}; expected (N, {feature_dim}) "
                                 f"or (tracks, N, {feature_dim})")
    elif tracks:
        items = [(k, arrays[k]) for k in tracks]
    else:
        raise InputSpecError(f"{path}: no 'features' or 'track_*' arrays (found {sorted(arrays) or 'none'})")
    for name, feats in items:
        if feats.ndim != 2 or feats.shape[1] != feature_dim:
            raise InputSpecError(f"{path}: '{name}' has shape {feats.shape}; expected (N, {feature_dim}) "
                                 f"per-frame features of width {feature_dim}")
        if not np.issubdtype(feats.dtype, np.floating) or not np.isfinite(feats).all():
            raise InputSpecError(f"{path}: '{name}' must hold finite floating-point features ({feats.dtype})")
        yield name, feats.astype(np.float32)


def _files(src: Union[PathLike, Sequence[PathLike]], suffixes: Tuple[str, ...], what: str) -> List[Path]:
    if isinstance(src, (str, Path)):
        path = Path(src)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
            if not files:
                raise InputSpecError(f"{path}: no {what} in this folder")
            return files
        if not path.is_file():
            raise InputSpecError(f"{path}: no such file or folder")
        return [path]
    files = [Path(p) for p in src]
    if not files:
        raise InputSpecError(f"no {what} given")
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise InputSpecError(f"not found: {', '.join(missing)}")
    return files


def _check_window(window: int, stride: Optional[int]) -> None:
    if window < 1:
        raise InputSpecError(f"window must be >= 1, got {window}")
    if stride is not None and stride < 1:
        raise InputSpecError(f"stride must be >= 1, got {stride}")
