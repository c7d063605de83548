"""Peak memory of ``trt-run`` on a short input and on one 10x longer: the streaming loop holds the open frames
and live tracks, not the history, so the peak should grow by well under 10%.

    python tools/stream_memory.py --export out/vibe [--frames 40] [--size 576x432] [--format jsonl --format npz]

Both runs are subprocesses of this one (their peak RSS from ``wait4``): the first ``--frames`` frames of
data/vtest.avi at ``--size``, once and 10 times over (the same content, so only the length differs); prints one JSON object with both peaks and their ratio.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

ROOT = Path(__file__).resolve().parents[1]


def clip(path: Path, frames: int, size: tuple, repeat: int) -> Path:
    """The first ``frames`` frames of data/vtest.avi at ``size``, ``repeat`` times over: the long input holds
    the same content as the short one, 10 times, so only the length differs (not how many people at once)."""
    import cv2

    cap = cv2.VideoCapture(str(ROOT / "data" / "vtest.avi"))
    part = []
    for _ in range(frames):
        ok, frame = cap.read()
        if not ok:
            sys.exit("data/vtest.avi is shorter than --frames")
        part.append(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    for _ in range(repeat):
        for frame in part:
            writer.write(frame)
    writer.release()
    return path


CHILD = """
import atexit, os, sys, tracemalloc
tracemalloc.start()
atexit.register(lambda: open(os.environ["HMR_TRT_TRACE_OUT"], "w").write(str(tracemalloc.get_traced_memory()[1])))
sys.argv = ["trt-run", *sys.argv[1:]]
from hmr_trt.runtime.cli import main
main()
"""  # the run with Python's allocation tracer: numpy's arrays are traced, ONNX Runtime's arena is not


def peak_rss_mib(cmd: list, env: Optional[dict] = None) -> tuple:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"trt-run failed: {err[-2000:]}")
    return usage.ru_maxrss / 1024.0, err


def main(export: Annotated[Path, typer.Option(help="An export that runs on video.")],
         frames: Annotated[int, typer.Option(help="Frames of the short input (the long one has 10x).")] = 40,
         size: Annotated[str, typer.Option(help="Frame size WxH.")] = "576x432",
         fmt: Annotated[list[str], typer.Option("--format")] = ["jsonl", "npz"],  # noqa: B006
         emit: Annotated[str, typer.Option()] = "last",
         traced: Annotated[bool, typer.Option("--traced", help="Also the peak of Python/numpy allocations "
                                              "(tracemalloc; ONNX Runtime's own arena is not in it).")] = False,
         ) -> None:
    w, h = (int(v) for v in size.split("x"))
    result = {"export": str(export), "size": size, "emit": emit, "format": fmt}
    with tempfile.TemporaryDirectory() as tmp:
        for name, repeat in (("short", 1), ("long", 10)):
            video = clip(Path(tmp) / f"{name}.avi", frames, (w, h), repeat)
            args = ["--video", str(video), "--export", str(export), "--out", str(Path(tmp) / name), "--emit", emit,
                    "--backend", "onnxruntime", "--device", "cpu", "--quiet", *[a for f in fmt for a in ("--format", f)]]
            trace = Path(tmp) / f"{name}.trace"
            cmd = [sys.executable, "-c", CHILD, *args] if traced else [sys.executable, "-m", "hmr_trt.runtime", *args]
            peak, _ = peak_rss_mib(cmd, {"HMR_TRT_TRACE_OUT": str(trace)})
            summary = json.loads((Path(tmp) / name / "summary.json").read_text())
            result[name] = {"frames": summary["frames_decoded"], "tracks": summary["tracks"],
                            "peak_rss_mib": round(peak, 1), "peak_open": summary["peak_open"],
                            "latency_ms": summary["latency_ms"]}
            if traced:
                result[name]["python_numpy_peak_mib"] = round(int(trace.read_text()) / 2**20, 1)
    result["growth_rss"] = round(result["long"]["peak_rss_mib"] / result["short"]["peak_rss_mib"] - 1, 4)
    if traced:
        result["growth_python_numpy"] = round(result["long"]["python_numpy_peak_mib"]
                                              / result["short"]["python_numpy_peak_mib"] - 1, 4)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    typer.run(main)
