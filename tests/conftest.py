"""Shared fixtures: one full-size export per test session (the expensive part), sample video."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def sample_video() -> Path:
    path = Path(os.environ.get("HMR_TRT_SAMPLE_VIDEO", ROOT / "data" / "vtest.avi"))
    if not path.is_file():
        pytest.skip(f"sample video {path} missing: run `make data/vtest.avi`")
    return path


@pytest.fixture(scope="session")
def full_export(tmp_path_factory, sample_video):
    """The default model exported with parity on random and real-video windows (about a minute)."""
    pytest.importorskip("torch")
    from hmr_trt.export.pipeline import ExportOptions, run_export

    out = tmp_path_factory.mktemp("export") / "coseg"
    result = run_export(ExportOptions(out=out, video=sample_video))
    return out, result
