"""Test support: serve an MJPG .avi's own JPEG packets as an HTTP MJPEG stream (multipart/x-mixed-replace) at a
fixed frame rate, and run ``trt-run`` against it; run inside its own network namespace (tests/runtime/
test_live_stream.py). The same JPEG bytes decode to the same pixels as the file, so results can be compared.

Usage: python mjpeg_serve.py AVI EXPORT OUT FPS FRAME_K LAG
Prints one JSON line: the server's frame count when frame K's line appeared, the run's exit code, output.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BOUNDARY = "hmrtrtframe"


def jpeg_packets(avi: str) -> list:
    import av

    with av.open(avi) as container:
        stream = container.streams.video[0]
        return [bytes(p) for p in container.demux(stream) if p.size]


class Server:
    def __init__(self, packets: list, fps: float) -> None:
        self.packets, self.fps, self.sent = packets, fps, 0
        self.done = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # noqa: ANN002
                pass

            def setup(self) -> None:
                self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)  # little buffered ahead
                super().setup()

            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace;boundary={BOUNDARY}")
                self.end_headers()
                start = time.perf_counter()
                try:
                    for i, jpeg in enumerate(outer.packets):
                        delay = start + i / outer.fps - time.perf_counter()
                        if delay > 0:
                            time.sleep(delay)
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}"
                                         "\r\n\r\n".encode() + jpeg + b"\r\n")
                        self.wfile.flush()
                        outer.sent = i + 1
                except (BrokenPipeError, ConnectionResetError):
                    pass
                outer.done.set()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def lines(path: Path) -> list:
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]


def main() -> None:
    avi, export, out, fps, k, lag = sys.argv[1], sys.argv[2], Path(sys.argv[3]), float(sys.argv[4]), \
        int(sys.argv[5]), int(sys.argv[6])
    server = Server(jpeg_packets(avi), fps)
    url = f"http://127.0.0.1:{server.port}/stream.mjpg"
    cmd = [sys.executable, "-m", "hmr_trt.runtime", "--video", url, "--export", export, "--out", str(out),
           "--emit", "last", "--format", "jsonl", "--format", "npz", "--live-drop", "none", "--min-track-frames",
           "2", "--stall-s", "20", "--backend", "onnxruntime", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if any(line["frame"] == k for line in lines(out / "frames.jsonl")):
            seen = server.sent
            break
        time.sleep(0.05)
    report = {"total": len(server.packets), "sent_when_k_final": seen, "k": k, "lag": lag}
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        output, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    report.update(rc=proc.returncode, output=output[-3000:], sent_at_end=server.sent)
    server.stop()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
