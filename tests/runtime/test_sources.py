"""Sources that cannot be read end in one line: a camera that does not exist, a URL that does not answer,
garbage, a stream that stalls (a normal end, exit 0) or changes resolution (exit 1, what was final kept), a
300-character path, /dev/zero, a folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from hmr_trt.errors import ConfigError, InputSpecError
from hmr_trt.runtime.cli import app
from hmr_trt.runtime.sources import open_source, source_kind

from .conftest import HERE, PYTHON, in_namespaces

runner = CliRunner()


def test_source_kinds() -> None:
    assert source_kind("0") == "camera" and source_kind(2) == "camera"
    assert source_kind("rtsp://cam/1") == "url" and source_kind("http://h:8080/s.mjpg") == "url"
    assert source_kind("udp://127.0.0.1:5000") == "url" and source_kind("clip.mp4") == "file"
    with pytest.raises(InputSpecError, match="gopher://"):
        source_kind("gopher://x/y")
    with pytest.raises(ConfigError, match="--live-drop"):
        open_source("0", drop="newest")


def test_camera_that_does_not_exist() -> None:
    with pytest.raises(InputSpecError, match="cannot open camera 63"):
        open_source("63", stall_s=2)


@pytest.mark.parametrize("case", ["long", "dev_zero", "folder"])
def test_bad_paths_give_one_line_and_touch_nothing(case, tmp_path) -> None:
    video = {"long": str(tmp_path / ("v" * 300 + ".mp4")), "dev_zero": "/dev/zero", "folder": str(tmp_path)}[case]
    match = {"long": "longer than", "dev_zero": "not a regular file", "folder": "is a folder"}[case]
    out = tmp_path / "out"
    result = runner.invoke(app, ["--video", video, "--export", str(tmp_path), "--out", str(out), "--quiet"])
    assert result.exit_code == 1, result.output
    assert match in result.output and "Traceback" not in result.output and "OSError" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists()


def test_misbehaving_streams(vibe_video_export, mjpg_clip, tmp_path) -> None:
    proc = in_namespaces([PYTHON, HERE / "bad_streams.py", mjpg_clip, vibe_video_export, tmp_path], timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not r["refused"]["ok"] and "cannot open stream" in r["refused"]["error"]
    assert not r["silent"]["ok"] and r["silent"]["seconds"] < 2.0 + 5  # one line within --stall-s (+ slack)
    assert "did not answer" in r["silent"]["error"] or "cannot open" in r["silent"]["error"]
    assert not r["garbage"]["ok"], r["garbage"]
    assert r["stall"]["ok"] and r["stall"]["frames"] == 6 and r["stall"]["stalled"], r["stall"]
    assert not r["resize"]["ok"] and "resolution changed" in r["resize"]["error"]
    # trt-run: a stall ends a live run normally; a resolution change is exit 1 with what was final kept
    stall, resize = r["run_stall"], r["run_resize"]
    assert stall["rc"] == 0, stall["output"]
    summary = json.loads((tmp_path / "stall" / "summary.json").read_text())
    assert summary["stalled"] is True and "stalled" in summary["ended"]
    assert summary["frames_decoded"] + summary["frames_dropped_live"] == 6  # --live-drop oldest: a full queue drops
    assert len((tmp_path / "stall" / "frames.jsonl").read_text().splitlines()) == summary["frames_decoded"]
    assert resize["rc"] == 1 and "resolution changed" in resize["output"], resize["output"]
    assert "Traceback" not in resize["output"]
    summary = json.loads((tmp_path / "resize" / "summary.json").read_text())
    assert summary["ended"].startswith("error:") and summary["frames_decoded"] + summary["frames_dropped_live"] == 5
    lines = [json.loads(x) for x in (tmp_path / "resize" / "frames.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == list(range(summary["frames_decoded"]))
    assert not [f for f in resize["files"] if f.endswith(".tmp")]
    np.testing.assert_equal(sorted(resize["files"]), sorted([".hmr-trt-run.json", "frames.jsonl", "summary.json"]))
