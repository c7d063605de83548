"""trt-run --videos DIR --ray: three videos (one broken) through two Ray actors, in a network namespace."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from hmr_trt.runtime.pipeline import RunOptions, run_video

from .conftest import isolated

pytest.importorskip("ray", reason="Ray (the ray extra) is not installed")


def test_three_videos_two_actors_one_broken(full_export, short_clips, tmp_path) -> None:
    export_dir, _ = full_export
    run = isolated([sys.executable, Path(__file__).with_name("scenario_ray.py"), export_dir, short_clips, tmp_path],
                   timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert "no Ray cluster answers at 127.0.0.1:1" in results["unreachable"]
    assert not (tmp_path / "unreachable").exists()
    summary = results["summary"]
    assert (summary["ok"], summary["failed"], summary["actors"]) == (2, 1, 2)
    rows = {Path(r["video"]).name: r for r in summary["videos"]}
    assert rows["broken.avi"]["status"] == "failed" and "broken.avi" in rows["broken.avi"]["error"]
    assert sorted(results["progress"]) == ["broken.avi", "walk_a.avi", "walk_b.avi"]
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["ok"] == 2 and not (tmp_path / "run" / "broken").exists()
    # a video through an actor equals the same video run locally
    local = tmp_path / "local"
    run_video(RunOptions(out=local, export_dir=export_dir, video=short_clips / "walk_a.avi", backend="onnxruntime",
                         emit="all", min_track_frames=8))
    remote = sorted((tmp_path / "run" / "walk_a").glob("track_*.npz"))
    assert remote and [p.name for p in remote] == [p.name for p in sorted(local.glob("track_*.npz"))]
    for path in remote:
        with np.load(path) as a, np.load(local / path.name) as b:
            np.testing.assert_allclose(a["vertices"], b["vertices"], atol=1e-5)


def test_empty_folder_and_missing_flag(tmp_path, full_export) -> None:
    from typer.testing import CliRunner

    from hmr_trt.runtime.cli import app

    export_dir, _ = full_export
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(app, ["--videos", str(tmp_path / "empty"), "--ray", "--export", str(export_dir),
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 1 and "no videos in it" in res.output and not (tmp_path / "out").exists()
    res = CliRunner().invoke(app, ["--videos", str(tmp_path / "empty"), "--export", str(export_dir),
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 1 and "add --ray" in res.output
