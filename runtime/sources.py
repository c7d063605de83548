"""Where frames come from: a video file, a camera (``--video 0``) or a URL that OpenCV/FFmpeg reads.

``open_source(spec)`` opens it (one line and ``InputSpecError`` when it cannot) and returns a
``Source``: its ``info`` (size, fps, declared frame count, ``live``) and, iterated, ``Frame``s
(index, BGR image, the ``time.perf_counter()`` at which it was decoded).

A file is decoded in the loop's own thread, every frame. A live source (camera, ``rtsp://``,
``http(s)://`` MJPEG or HLS, ``udp://``, ...; URLs through PyAV when installed, else OpenCV's FFmpeg
backend, cameras through OpenCV) is decoded on its own thread into a small bounded
queue, so that a slow consumer never stalls the capture: with ``drop="oldest"`` a full queue
loses its oldest frame (counted in ``dropped``), with ``drop="none"`` the reader waits (and the
sender's own buffers fill). A live source that sends nothing for ``stall_s`` seconds ends:
``stalled`` is then True and ``end_reason`` says why. A frame of another size than the first
ends any source with ``InputSpecError`` (one line), after the frames before it.
numpy + OpenCV only; Python 3.9-compatible.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np

from hmr_trt.errors import ConfigError, InputSpecError

DROP_POLICIES = ("oldest", "none")
LIVE_QUEUE = 4  # frames decoded ahead of the loop for a live source
DEFAULT_STALL_S = 10.0
URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt", "hls")

SourceSpec = Union[str, int, "os.PathLike[str]"]


@dataclass(frozen=True)
class SourceInfo:
    input: str  # what the user gave
    kind: str  # "file" | "camera" | "url"
    width: int
    height: int
    fps: float  # 0.0 when unknown
    frames_declared: int  # the container's count; 0 when unknown (always for live sources)

    @property
    def live(self) -> bool:
        return self.kind != "file"


@dataclass(frozen=True)
class Frame:
    index: int
    image: np.ndarray  # BGR uint8 (H, W, 3)
    captured: float  # time.perf_counter() when decoded


def source_kind(spec: SourceSpec) -> str:
    """``camera`` for an integer (or a string of digits), ``url`` for ``scheme://...``, else ``file``."""
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        return "camera"
    text = os.fspath(spec) if not isinstance(spec, str) else spec
    scheme, sep, _ = str(text).partition("://")
    if sep and scheme.lower() in URL_SCHEMES:
        return "url"
    if sep and scheme.isalpha():
        raise InputSpecError(f"--video {text}: the scheme {scheme}:// is not one this runtime reads "
                             f"({', '.join(URL_SCHEMES)})")
    return "file"


def check_video_file(path: Path, shown: str) -> None:
    """A readable, non-empty regular file, or one line naming ``shown`` (the path as the user gave it)."""
    try:
        name_max = os.pathconf(str(path.parent) if path.parent.exists() else ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if any(len(os.fsencode(part)) > name_max for part in path.parts):
        raise InputSpecError(f"video not found: {shown[:80]}... (a name in the path is longer than "
                             f"{name_max} bytes)")
    try:
        exists, regular = path.exists(), path.is_file()
        size = path.stat().st_size if regular else 0
    except OSError as exc:
        raise InputSpecError(f"video not readable: {shown[:200]} ({exc.strerror or exc})") from exc
    if not exists:
        raise InputSpecError(f"video not found: {shown}")
    if path.is_dir():
        raise InputSpecError(f"--video {shown} is a folder; give a video file (or --videos for a folder)")
    if not regular:
        raise InputSpecError(f"--video {shown} is not a regular file (a device or pipe); give a video file, "
                             "a camera index or a stream URL")
    if size == 0:
        raise InputSpecError(f"video file is empty: {shown}")


class _AvCapture:
    """A stream URL through PyAV (FFmpeg), with cv2.VideoCapture's ``isOpened/read/get/release``: unlike
    OpenCV's FFmpeg backend, which rescales every frame to the first one's size, it hands frames at their
    real size, so a resolution change mid-stream is seen (and refused) instead of silently stretched."""

    def __init__(self, url: str, timeout_s: float) -> None:
        import av

        self._av = av
        try:
            self.container = av.open(url, timeout=(timeout_s, timeout_s))
            self.stream = self.container.streams.video[0]
        except (av.FFmpegError, OSError, IndexError, ValueError):
            self.container = None
            return
        self._frames = self.container.decode(self.stream)

    def isOpened(self) -> bool:  # noqa: N802 - cv2.VideoCapture's name
        return self.container is not None

    def read(self) -> tuple:
        if self.container is None:
            return False, None
        try:
            frame = next(self._frames)
        except (StopIteration, self._av.FFmpegError, OSError):
            return False, None
        return True, frame.to_ndarray(format="bgr24")

    def get(self, prop: int) -> float:
        import cv2

        if self.container is None:
            return 0.0
        if prop == cv2.CAP_PROP_FPS:
            rate = self.stream.average_rate or self.stream.guessed_rate
            return float(rate) if rate else 0.0
        return 0.0

    def release(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None


def _capture(spec: SourceSpec, kind: str, timeout_s: float) -> Any:
    import cv2

    ms = int(max(timeout_s, 0.1) * 1000)
    if kind == "camera":
        return cv2.VideoCapture(int(spec))
    if kind == "url":
        try:
            import av  # noqa: F401 - PyAV (the video extra) when installed: real frame sizes
        except ImportError:
            return cv2.VideoCapture(str(spec), cv2.CAP_FFMPEG,
                                    [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        return _AvCapture(str(spec), timeout_s)
    return cv2.VideoCapture(str(spec))


def _open_within(spec: SourceSpec, kind: str, timeout_s: float) -> Any:
    """The capture, opened on a helper thread so that a source that never answers costs ``timeout_s``."""
    box: dict = {}

    def opener() -> None:
        try:
            box["cap"] = _capture(spec, kind, timeout_s)
        except Exception as exc:  # noqa: BLE001 - reported as the one line below
            box["error"] = exc

    thread = threading.Thread(target=opener, name="hmr-trt-open", daemon=True)
    thread.start()
    thread.join(timeout_s + 1.0)
    what = f"camera {spec}" if kind == "camera" else f"stream {spec}"
    if thread.is_alive():
        raise InputSpecError(f"{what} did not answer within {timeout_s:g} s (--stall-s)")
    if "error" in box:
        raise InputSpecError(f"cannot open {what}: {box['error']}")
    return box["cap"]


class Source:
    """Frames of one opened source; iterate once. ``close()`` (or the end of iteration) releases it."""

    def __init__(self, cap: Any, info: SourceInfo, *, max_frames: Optional[int] = None, drop: str = "oldest",
                 stall_s: float = DEFAULT_STALL_S, first: Optional[np.ndarray] = None) -> None:
        self.cap, self.info, self.max_frames = cap, info, max_frames
        self.drop, self.stall_s = drop, float(stall_s)
        self.dropped = 0  # live frames lost because the loop fell behind (drop="oldest")
        self.decoded = 0  # frames handed to the loop
        self.stalled = False
        self.end_reason = ""
        self._first = first
        self._stop = threading.Event()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=LIVE_QUEUE)
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._last_put = time.perf_counter()  # when the reader last queued a frame

    # -- iteration --------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Frame]:
        frames = self._live() if self.info.live else self._file()
        try:
            for image, captured in frames:
                if self.max_frames is not None and self.decoded >= self.max_frames:
                    self.end_reason = f"--max-frames {self.max_frames}"
                    return
                if image.shape[:2] != (self.info.height, self.info.width) or image.ndim != 3:
                    raise InputSpecError(f"--video {self.info.input}: frame {self.decoded} is "
                                         f"{image.shape[1]}x{image.shape[0]}, the source started at "
                                         f"{self.info.width}x{self.info.height} (resolution changed mid-stream)")
                frame = Frame(self.decoded, image, captured)
                self.decoded += 1
                yield frame
        finally:
            self.close()

    def _file(self) -> Iterator[tuple]:
        while not self._stop.is_set():
            ok, image = self.cap.read()
            if not ok or image is None:
                self.end_reason = self.end_reason or "end of file"
                return
            yield image, time.perf_counter()

    def _live(self) -> Iterator[tuple]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._reader, name="hmr-trt-capture", daemon=True)
            self._thread.start()
        last = time.perf_counter()
        while True:
            try:
                item = self._queue.get(timeout=0.05)
            except queue.Empty:
                if self._stop.is_set():  # stopped, and every frame decoded before the stop has been handed on
                    return
                if time.perf_counter() - max(last, self._last_put) > self.stall_s:
                    self.stalled = True
                    self.end_reason = f"no frame for {self.stall_s:g} s (--stall-s): the stream stalled"
                    return
                continue
            if item is None:
                return
            last = time.perf_counter()
            yield item

    def _reader(self) -> None:
        if self._first is not None:
            self._put((self._first, time.perf_counter()))
            self._first = None
        while not self._stop.is_set():
            asked = time.perf_counter()
            try:
                ok, image = self.cap.read()
            except Exception as exc:  # noqa: BLE001 - a decoder error ends the stream like EOF
                ok, image = False, None
                self.end_reason = f"decoder error: {exc}"
            if not ok or image is None:
                if time.perf_counter() - asked >= 0.9 * self.stall_s:  # the reader's own timeout: a stall
                    self.stalled = True
                    self.end_reason = f"no frame for {self.stall_s:g} s (--stall-s): the stream stalled"
                self.end_reason = self.end_reason or "the stream ended"
                break
            self._put((image, time.perf_counter()))
        self._put(None)

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            if item is not None and self.drop == "oldest" and self._queue.full():
                try:
                    self._queue.get_nowait()
                    with self._lock:
                        self.dropped += 1
                except queue.Empty:
                    pass
            try:
                self._queue.put(item, timeout=0.1)
                self._last_put = time.perf_counter()
                return
            except queue.Full:
                continue

    # -- stopping ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the source to end (any thread, e.g. a signal handler): the capture stops, the frames it already
        decoded are still handed on, then iteration ends."""
        self._stop.set()
        if not self.end_reason:
            self.end_reason = "stopped (Ctrl-C or SIGTERM)"

    def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=max(self.stall_s, 1.0) + 1.0)
        if thread is None or not thread.is_alive():
            if self.cap is not None:
                self.cap.release()
                self.cap = None

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_source(spec: SourceSpec, *, max_frames: Optional[int] = None, drop: str = "oldest",
                stall_s: float = DEFAULT_STALL_S) -> Source:
    """Open a file, camera index or URL; one-line ``InputSpecError`` when it cannot be read."""
    if drop not in DROP_POLICIES:
        raise ConfigError(f"--live-drop must be one of {', '.join(DROP_POLICIES)}, got {drop!r}")
    if not stall_s > 0:
        raise ConfigError(f"--stall-s must be > 0, got {stall_s}")
    kind = source_kind(spec)
    shown = str(spec) if not isinstance(spec, os.PathLike) else os.fspath(spec)
    if kind == "file":
        check_video_file(Path(shown), shown)
        cap = _capture(shown, kind, stall_s)
        if not cap.isOpened():
            raise InputSpecError(f"cannot decode {shown}: not a video OpenCV can read")
        info = _info(cap, shown, kind)
        if info.width <= 0 or info.height <= 0:
            cap.release()
            raise InputSpecError(f"cannot decode {shown}: no video stream")
        return Source(cap, info, max_frames=max_frames, drop=drop, stall_s=stall_s)
    cap = _open_within(int(spec) if kind == "camera" else shown, kind, stall_s)
    what = f"camera {shown}" if kind == "camera" else f"stream {shown}"
    if not cap.isOpened():
        cap.release()
        hint = " (no such camera?)" if kind == "camera" else " (no answer, or not a video stream OpenCV/FFmpeg reads)"
        raise InputSpecError(f"cannot open {what}{hint}")
    ok, first = cap.read()  # a source that opens but sends no decodable frame fails here, in one line
    if not ok or first is None or first.ndim != 3:
        cap.release()
        raise InputSpecError(f"{what} opened but sent no decodable frame (garbage, or nothing, "
                             f"within {stall_s:g} s)")
    info = _info(cap, shown, kind, first)
    return Source(cap, info, max_frames=max_frames, drop=drop, stall_s=stall_s, first=first)


def _info(cap: Any, shown: str, kind: str, first: Optional[np.ndarray] = None) -> SourceInfo:
    import cv2

    if first is not None:
        height, width = first.shape[:2]
    else:
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not np.isfinite(fps) or fps < 0 or fps > 1000:
        fps = 0.0
    frames = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0) if kind == "file" else 0
    return SourceInfo(shown, kind, int(width), int(height), fps, frames)
