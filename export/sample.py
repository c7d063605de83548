"""Where the sample video lives (fetched by `make data/vtest.avi`; see tools/fetch_sample_video.sh)."""

from __future__ import annotations

import os
from pathlib import Path

SAMPLE_ENV = "HMR_TRT_SAMPLE_VIDEO"


def default_sample_video() -> Path | None:
    """$HMR_TRT_SAMPLE_VIDEO, else data/vtest.avi under the current directory, if it exists."""
    for candidate in (os.environ.get(SAMPLE_ENV), "data/vtest.avi"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None
