"""Test support (run in its own network namespace by test_sources.py): streams that misbehave, each served on
loopback, and what ``open_source`` / ``trt-run`` make of them. Prints one JSON object.

Usage: python bad_streams.py CLIP EXPORT OUTDIR
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from hmr_trt.errors import InputSpecError
from hmr_trt.runtime.sources import open_source

BOUNDARY = "hmrtrtframe"
STALL = 2.0


def serve(handler) -> int:  # noqa: ANN001
    """A TCP server on loopback calling ``handler(conn)`` for each connection; returns its port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)

    def loop() -> None:
        while True:
            conn, _ = sock.accept()
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return sock.getsockname()[1]


def mjpeg(frames: list, then: str = "close"):  # noqa: ANN201
    def handler(conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            conn.sendall(f"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary={BOUNDARY}\r\n\r\n"
                         .encode())
            for image in frames:
                jpeg = cv2.imencode(".jpg", image)[1].tobytes()
                conn.sendall(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                             .encode() + jpeg + b"\r\n")
                time.sleep(0.05)
            if then == "hang":
                time.sleep(3600)
        except OSError:
            pass
        finally:
            conn.close()
    return handler


def silent(conn: socket.socket) -> None:
    time.sleep(3600)


def garbage(conn: socket.socket) -> None:
    try:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=x\r\n\r\n")
        rng = np.random.default_rng(0)
        for _ in range(200):
            conn.sendall(b"--x\r\nContent-Type: image/jpeg\r\n\r\n" + rng.bytes(4000) + b"\r\n")
    except OSError:
        pass
    finally:
        conn.close()


def attempt(url: str, iterate: bool = False) -> dict:
    start = time.monotonic()
    try:
        with open_source(url, stall_s=STALL) as src:
            n = sum(1 for _ in src) if iterate else 0
            return {"ok": True, "frames": n, "stalled": src.stalled, "reason": src.end_reason,
                    "seconds": time.monotonic() - start}
    except InputSpecError as exc:
        return {"ok": False, "error": str(exc), "seconds": time.monotonic() - start}


def trt_run(url: str, export: str, out: Path) -> dict:
    cmd = [sys.executable, "-m", "hmr_trt.runtime", "--video", url, "--export", export, "--out", str(out),
           "--emit", "last", "--format", "jsonl", "--min-track-frames", "1", "--stall-s", str(STALL), "--backend",
           "onnxruntime", "--device", "cpu", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return {"rc": proc.returncode, "output": proc.stdout + proc.stderr,
            "files": sorted(p.name for p in out.iterdir()) if out.is_dir() else None}


def main() -> None:
    clip, export, outdir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    cap = cv2.VideoCapture(clip)
    frames = [cap.read()[1] for _ in range(8)]
    small = [cv2.resize(f, (320, 240)) for f in frames]
    report = {}
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    port = refused.getsockname()[1]
    refused.close()  # nothing listens there
    report["refused"] = attempt(f"http://127.0.0.1:{port}/x.mjpg")
    report["silent"] = attempt(f"http://127.0.0.1:{serve(silent)}/x.mjpg")
    report["garbage"] = attempt(f"http://127.0.0.1:{serve(garbage)}/x.mjpg")
    report["stall"] = attempt(f"http://127.0.0.1:{serve(mjpeg(frames[:6], 'hang'))}/x.mjpg", iterate=True)
    report["resize"] = attempt(f"http://127.0.0.1:{serve(mjpeg(frames[:3] + small[3:]))}/x.mjpg", iterate=True)
    report["run_stall"] = trt_run(f"http://127.0.0.1:{serve(mjpeg(frames[:6], 'hang'))}/x.mjpg", export,
                                  outdir / "stall")
    report["run_resize"] = trt_run(f"http://127.0.0.1:{serve(mjpeg(frames[:5] + small[5:]))}/x.mjpg", export,
                                   outdir / "resize")
    print(json.dumps(report))
    sys.stdout.flush()
    os._exit(0)  # the servers' threads sleep on


if __name__ == "__main__":
    main()
