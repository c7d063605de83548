"""Peak memory of ``trt-run`` on a short input and on one 10x longer: the streaming loop holds the open frames
and live tracks, not the history, so the peak should grow by well under 10%.

    python tools/stream_memory.py --export out/vibe [--frames 40] [--size 576x432] [--format jsonl --format npz]

Both runs are subprocesses of this one (their peak RSS from ``wait4``), on clips cut from data/vtest.avi
(looped when needed) at ``--size``; prints one JSON object with both peaks and their ratio.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import typer
from typing_extensions import Annotated

ROOT = Path(__file__).resolve().parents[1]


def clip(path: Path, frames: int, size: tuple) -> Path:
    import cv2

    cap = cv2.VideoCapture(str(ROOT / "data" / "vtest.avi"))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    for _ in range(frames):
        ok, frame = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = cap.read()
        writer.write(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
    writer.release()
    return path


def peak_rss_mib(cmd: list) -> tuple:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"trt-run failed: {err[-2000:]}")
    return usage.ru_maxrss / 1024.0, err


def main(export: Annotated[Path, typer.Option(help="An export that runs on video.")],
         frames: Annotated[int, typer.Option(help="Frames of the short input (the long one has 10x).")] = 40,
         size: Annotated[str, typer.Option(help="Frame size WxH.")] = "576x432",
         fmt: Annotated[list[str], typer.Option("--format")] = ["jsonl", "npz"],  # noqa: B006
         emit: Annotated[str, typer.Option()] = "last") -> None:
    w, h = (int(v) for v in size.split("x"))
    result = {"export": str(export), "size": size, "emit": emit, "format": fmt}
    with tempfile.TemporaryDirectory() as tmp:
        for name, n in (("short", frames), ("long", 10 * frames)):
            video = clip(Path(tmp) / f"{name}.avi", n, (w, h))
            cmd = [sys.executable, "-m", "hmr_trt.runtime", "--video", str(video), "--export", str(export), "--out",
                   str(Path(tmp) / name), "--emit", emit, "--backend", "onnxruntime", "--device", "cpu", "--quiet",
                   *[a for f in fmt for a in ("--format", f)]]
            peak, _ = peak_rss_mib(cmd)
            summary = json.loads((Path(tmp) / name / "summary.json").read_text())
            result[name] = {"frames": summary["frames_decoded"], "tracks": summary["tracks"],
                            "peak_rss_mib": round(peak, 1), "peak_open": summary["peak_open"],
                            "latency_ms": summary["latency_ms"]}
    result["growth"] = round(result["long"]["peak_rss_mib"] / result["short"]["peak_rss_mib"] - 1, 4)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    typer.run(main)
