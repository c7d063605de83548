"""Write a short synthetic clip of walking stick figures (the sample-video fallback without apt)."""

from __future__ import annotations

import sys

import cv2
import numpy as np


def main(dest: str, frames: int = 120, width: int = 640, height: int = 480) -> None:
    writer = cv2.VideoWriter(dest + ".part.avi", cv2.VideoWriter_fourcc(*"MJPG"), 10, (width, height))
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(60, 200, (height, width, 3), dtype=np.uint8), (31, 31), 0)
    for i in range(frames):
        frame = background.copy()
        for p, (x0, speed) in enumerate([(80, 3), (400, -2)]):
            x = int(x0 + speed * i) % width
            y, swing = 140 + 40 * p, int(25 * np.sin(i / 3 + p))
            color = (40 + 80 * p, 60, 180 - 60 * p)
            cv2.circle(frame, (x, y), 18, color, -1)
            cv2.line(frame, (x, y + 18), (x, y + 110), color, 14)
            cv2.line(frame, (x, y + 40), (x - 30 + swing, y + 90), color, 9)
            cv2.line(frame, (x, y + 40), (x + 30 - swing, y + 90), color, 9)
            cv2.line(frame, (x, y + 110), (x - 20 + swing, y + 200), color, 11)
            cv2.line(frame, (x, y + 110), (x + 20 - swing, y + 200), color, 11)
        writer.write(frame)
    writer.release()
    import os

    os.replace(dest + ".part.avi", dest)


if __name__ == "__main__":
    main(sys.argv[1])
