"""The Python API: ``Runtime.open(export_dir)`` once, then ``rt.stream(frames)`` -> each frame's people.

::

    from hmr_trt.runtime import Runtime

    with Runtime.open("out/vibe", backend="auto", emit="last") as rt:
        for result in rt.stream(0):              # a camera index, a file, a URL, or BGR uint8 HxWx3 arrays
            for person in result.people:         # .track_id .box (4,) .pose (72,) .betas (10,) .cam (3,)
                print(person.track_id, person.joints2d.shape)  # .orig_cam (4,) .joints2d (J, 2) .vertices

``stream`` runs the same loop as ``trt-run`` (runtime/pipeline.FrameLoop: the family's stage, the body
model, the cameras in image coordinates) and yields a ``FrameOutput`` per input frame as soon as all of
its people are final: with ``emit="last"`` right after the frame itself (one step-graph call per frame
where the export has one), with ``"center"`` T//2 frames later, with ``"all"`` at the end of each window.
Frames come out in input order, each exactly once; nothing is written to disk. A person's attributes
that the model does not have (a vertices-only model's ``pose``) are None.
numpy + OpenCV only; Python 3.9-compatible.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

import numpy as np

from hmr_trt.errors import ConfigError, InputSpecError

from .sinks import FrameOutput, Person
from .sources import DEFAULT_STALL_S, Frame, open_source
from .track import MIN_TRACK_LENGTH

__all__ = ["FrameOutput", "Person", "Runtime"]

FrameSource = Union[str, int, "os.PathLike[str]", Iterable[np.ndarray]]


class Runtime:
    """An opened export (contract, graphs, backends, detector settings); ``stream`` as often as needed."""

    def __init__(self, opts: Any, family: str) -> None:
        self.opts, self.family = opts, family
        self._backends_cm: Any = None
        self.backends: Any = None
        self.last_summary: dict = {}

    @classmethod
    def open(cls, export_dir: Union[str, Path], backend: str = "auto", emit: str = "last", *,
             precision: str = "fp32", detector: str = "auto", min_track_frames: int = MIN_TRACK_LENGTH,
             vertices: bool = True, threads: int = 0, device: str = "auto", border: str = "nearest",
             live_drop: str = "oldest", stall_s: float = DEFAULT_STALL_S, threshold: Optional[float] = None,
             ) -> Runtime:
        """Read the export once and open its backends (``backend``: auto | tensorrt | onnxruntime)."""
        from .pipeline import RunOptions, _check_family_options, _check_options, _open, export_family

        opts = RunOptions(out=Path("."), export_dir=Path(export_dir), backend=backend, precision=precision, emit=emit,
                          detector=detector, min_track_frames=min_track_frames, vertices=vertices, threads=threads,
                          device=device, border=border, live_drop=live_drop, stall_s=stall_s, threshold=threshold)
        _check_options(opts)
        family = export_family(opts.export_dir)
        _check_family_options(opts, family, "video")
        rt = cls(opts, family)
        rt._backends_cm = _open(opts)
        rt.backends = rt._backends_cm.__enter__()
        return rt

    def close(self) -> None:
        cm, self._backends_cm = self._backends_cm, None
        if cm is not None:
            cm.__exit__(None, None, None)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def stream(self, frames: FrameSource, max_frames: Optional[int] = None,
               keep_images: bool = True) -> Iterator[FrameOutput]:
        """Each input frame's people, in order, as soon as they are final. ``frames``: a source string or
        camera index (as ``trt-run --video``), or any iterable of BGR uint8 (H, W, 3) arrays of one size.
        ``keep_images``: each ``FrameOutput`` carries its frame as ``image`` (held only until it is final)."""
        from .pipeline import FrameLoop, StageTimer, make_stage

        if self.backends is None:
            raise ConfigError("Runtime is closed: use it inside 'with Runtime.open(...) as rt:'")
        timer = StageTimer()
        stage = make_stage(self.family, self.backends, timer, self.opts)
        if isinstance(frames, (str, int, os.PathLike)):
            source = open_source(frames, max_frames=max_frames, drop=self.opts.live_drop, stall_s=self.opts.stall_s)
            size = (source.info.width, source.info.height)
            items: Iterable[Frame] = source
        else:
            source = None
            first, items = _arrays(frames, max_frames)
            size = (first.shape[1], first.shape[0]) if first is not None else (0, 0)
        loop = FrameLoop(stage, self.backends, timer, size, vertices=self.opts.vertices, keep_images=keep_images,
                         keep_rows=False)
        try:
            yield from loop.run(items, on_track=lambda t, a: None)
        finally:
            if source is not None:
                source.close()
            self.last_summary = {"timings_s": dict(timer.seconds), "latency_ms": loop.latency.summary(),
                                 "frames_dropped_live": source.dropped if source is not None else 0}


def _arrays(frames: Iterable[np.ndarray], max_frames: Optional[int]) -> tuple:
    """(first frame or None, Frame iterator) over arrays; each checked for dtype, layout and size."""
    it = iter(frames)
    first = next(it, None)

    def gen() -> Iterator[Frame]:
        if first is None:
            return
        shape = np.shape(first)
        index = 0
        for image in _chain(first, it):
            if max_frames is not None and index >= max_frames:
                return
            arr = np.asarray(image)
            if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
                raise InputSpecError(f"Runtime.stream: frame {index} is {arr.dtype} {arr.shape}; expected BGR uint8 "
                                     "(H, W, 3)")
            if arr.shape != shape:
                raise InputSpecError(f"Runtime.stream: frame {index} is {arr.shape[1]}x{arr.shape[0]}, the stream "
                                     f"started at {shape[1]}x{shape[0]}")
            yield Frame(index, arr, time.perf_counter())
            index += 1

    if first is not None:
        first = np.asarray(first)
    return first, gen()


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest
