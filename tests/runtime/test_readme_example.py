"""The README's Python API example runs as written (on a file source instead of the webcam)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[2]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("**Python API**"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_api_example_runs(vibe_video_export, mjpg_clip, tmp_path) -> None:
    code = readme_example()
    assert 'Runtime.open("out/demo/export"' in code and "rt.stream(source)" in code
    clip = tmp_path / "clip.avi"  # the first 18 frames: tracks of at least --min-track-frames (16) frames
    cap = cv2.VideoCapture(str(mjpg_clip))
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0,
                             (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))))
    for _ in range(18):
        writer.write(cap.read()[1])
    writer.release()
    (tmp_path / "out" / "demo").mkdir(parents=True)
    (tmp_path / "out" / "demo" / "export").symlink_to(vibe_video_export)  # the path the example names
    (tmp_path / "example.py").write_text(code)
    proc = subprocess.run([sys.executable, "example.py", str(clip)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    image = cv2.imread(str(tmp_path / "joints.jpg"))
    assert image is not None and image.shape[:2] == (432, 576)
