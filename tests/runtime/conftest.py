"""Fixtures for the streaming runtime's tests: a small VIBE export that runs on real video (ResNet-50 features,
a small GRU, a step graph for --emit last), a short MJPG clip of the sample video, and a runner for scenarios
that must live in their own network (and mount) namespace."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CLIP_SIZE = (576, 432)  # the HOG detector finds the sample video's people at this size, at ~0.3 s a frame
CLIP_FRAMES = 60


@pytest.fixture(scope="session")
def vibe_video_export(tmp_path_factory):
    """VIBE's structure at small GRU widths on the real 2048-wide backbone features (about 30 s)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from hmr_trt import registry
    from hmr_trt.export.pipeline import ExportOptions, run_export
    from hmr_trt.profile import ShapeProfile

    adapter = registry.adapter("vibe")
    cfg = dataclasses.replace(adapter.tiny_config(), feature_dim=2048)
    out = tmp_path_factory.mktemp("vibe_video") / "export"
    run_export(ExportOptions(out=out, model="vibe", config=cfg, profile=ShapeProfile(1, 4, 8), parity_windows=3,
                             build_engines=False))
    return out


@pytest.fixture(scope="session")
def mjpg_clip(sample_video, tmp_path_factory) -> Path:
    """The sample video's first frames at CLIP_SIZE as an MJPG .avi: its packets are whole JPEGs, so the same
    bytes served over HTTP decode to the same pixels as the file."""
    import cv2

    path = tmp_path_factory.mktemp("clip") / "clip.avi"
    cap = cv2.VideoCapture(str(sample_video))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, CLIP_SIZE)
    for _ in range(CLIP_FRAMES):
        ok, frame = cap.read()
        assert ok
        writer.write(cv2.resize(frame, CLIP_SIZE, interpolation=cv2.INTER_AREA))
    writer.release()
    cap.release()
    return path


def in_namespaces(args: list, timeout: float, mount: bool = False) -> subprocess.CompletedProcess:
    """``args`` in its own network namespace (loopback up) and PID namespace (everything it starts dies with
    it), and with ``mount`` its own mount namespace; skips where namespaces cannot be made (needs root)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is missing: servers only run in their own network namespace")
    base = ["unshare", "-n", "-p", "-f", "--kill-child", "-m", "--mount-proc"]
    probe = subprocess.run([*base, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create network/PID/mount namespaces here (needs root): {probe.stderr.decode().strip()}")
    cmd = [*base, "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *map(str, args)]
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


PYTHON = sys.executable
