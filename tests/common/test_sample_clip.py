"""The sample-video fallback (no apt): tools/make_clip.py writes a clip OpenCV decodes in full."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_generated_clip_decodes(tmp_path) -> None:
    cv2 = pytest.importorskip("cv2")
    dest = tmp_path / "clip.avi"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_clip.py"), str(dest)], check=True)
    cap = cv2.VideoCapture(str(dest))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 120 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 640
    assert not list(tmp_path.glob("*.part*"))
