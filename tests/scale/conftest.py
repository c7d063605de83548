from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=1)
def _tiny():
    from hmr_trt import registry

    adapter = registry.adapter("coseg")
    cfg = adapter.tiny_config()
    return adapter.exportable(adapter.reference(cfg), "temporal").eval(), cfg.feature_dim  # exportable FDE form


def tiny_window_model() -> tuple[torch.nn.Module, int]:
    """A small window model that emits all T frames (coseg's structure at tiny widths)."""
    return _tiny()


import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def isolated(args: list, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``args`` in its own network namespace (loopback only) and PID namespace: when it ends or times
    out, every process it started (servers, Ray workers) is killed with it. Skips where that is impossible."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is missing: servers and clusters only run in their own network namespace")
    probe = subprocess.run(["unshare", "-n", "-p", "-f", "-m", "--mount-proc", "--kill-child", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create network/PID namespaces here (needs root): {probe.stderr.decode().strip()}")
    cmd = ["unshare", "-n", "-p", "-f", "-m", "--mount-proc", "--kill-child", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def short_clips(sample_video, tmp_path_factory) -> Path:
    """Two 30-frame clips of the sample video and one broken file, in one folder."""
    import cv2

    folder = tmp_path_factory.mktemp("videos")
    cap = cv2.VideoCapture(str(sample_video))
    frames = []
    while len(frames) < 90:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    for name, part in (("walk_a", frames[:30]), ("walk_b", frames[60:90])):
        h, w = part[0].shape[:2]
        writer = cv2.VideoWriter(str(folder / f"{name}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
        for f in part:
            writer.write(f)
        writer.release()
    (folder / "broken.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI not really a video" * 10)
    return folder
