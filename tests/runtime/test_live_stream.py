"""Done-when of the streaming runtime: a real video served as an MJPEG stream over HTTP on loopback (own
network namespace, fixed frame rate); ``trt-run --emit last --format jsonl`` writes frame K's line while the
server is still sending, no later than LAG frames after K was sent; SIGINT ends the run normally (valid
frames.jsonl, track files, summary.json, exit 0). The stream's per-frame results equal the file's, and
``Runtime.stream``'s equal ``trt-run``'s."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from hmr_trt.runtime.cli import app

from .conftest import HERE, PYTHON, in_namespaces

FPS = 4  # the server's frame rate
K = 4  # the frame whose line is watched for
LAG = 24  # frames: line K exists before the server has sent frame K + LAG (6 s at FPS; a frame takes ~1 s here)
runner = CliRunner()
RUN = ["--emit", "last", "--min-track-frames", "2", "--backend", "onnxruntime", "--device", "cpu"]


def read_lines(path) -> list:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(len(rows))), "one line per input frame, in order"
    return rows


def same_people(a: list, b: list, what: str) -> None:
    assert [p["track_id"] for p in a] == [p["track_id"] for p in b], what
    for pa, pb in zip(a, b):
        for key in ("box", "pose", "betas", "cam", "orig_cam", "joints2d"):
            np.testing.assert_allclose(np.asarray(pa[key], float), np.asarray(pb[key], float), atol=2e-4,
                                       err_msg=f"{what}: {key} of track {pa['track_id']}")


@pytest.fixture(scope="module")
def live_run(vibe_video_export, mjpg_clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("live") / "out"
    proc = in_namespaces([PYTHON, HERE / "mjpeg_serve.py", mjpg_clip, vibe_video_export, out, FPS, K, LAG],
                         timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), out


def test_lines_leave_while_the_stream_runs_and_sigint_keeps_everything(live_run) -> None:
    report, out = live_run
    assert report["rc"] == 0, report["output"]
    sent = report["sent_when_k_final"]
    assert sent is not None, report["output"]
    assert sent < report["total"], "the server had finished: the run did not stream"
    assert sent <= K + LAG, f"frame {K}'s line appeared only after the server sent {sent} frames"
    lines = read_lines(out / "frames.jsonl")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["source"] == "url"
    assert summary["ended"].startswith("stopped") and summary["frames_dropped_live"] == 0
    assert len(lines) == summary["frames_decoded"] > K
    assert summary["latency_ms"]["frames"] == len(lines) and summary["latency_ms"]["p50"] > 0
    assert summary["tracks"] >= 1 and any(line["people"] for line in lines)
    for row in summary["track_files"]:
        data = np.load(out / row["file"])
        assert data["pose_axis_angle"].shape == (row["frames"], 72) and np.isfinite(data["vertices"]).all()
    listed = json.loads((out / ".hmr-trt-run.json").read_text())["files"]
    assert set(listed) == {p.name for p in out.iterdir() if p.name != ".hmr-trt-run.json"}
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_stream_file_and_python_api_agree(live_run, vibe_video_export, mjpg_clip, tmp_path) -> None:
    from hmr_trt.runtime import Runtime

    _, out = live_run
    live = read_lines(out / "frames.jsonl")
    n = len(live)
    result = runner.invoke(app, ["--video", str(mjpg_clip), "--export", str(vibe_video_export), "--out",
                                 str(tmp_path / "file"), "--format", "jsonl", "--max-frames", str(n), "--quiet", *RUN])
    assert result.exit_code == 0, result.output
    filed = read_lines(tmp_path / "file" / "frames.jsonl")
    assert len(filed) == n
    for a, b in zip(live, filed):
        same_people(a["people"], b["people"], f"frame {a['frame']}: stream vs file")
    with Runtime.open(vibe_video_export, backend="onnxruntime", emit="last", min_track_frames=2,
                      device="cpu") as rt:
        api = list(rt.stream(str(mjpg_clip), max_frames=n))
    assert [r.index for r in api] == list(range(n))
    for r, b in zip(api, filed):
        people = [{"track_id": p.track_id, "box": p.box, "pose": p.pose, "betas": p.betas, "cam": p.cam,
                   "orig_cam": p.orig_cam, "joints2d": p.joints2d} for p in r.people]
        same_people(people, b["people"], f"frame {r.index}: Runtime.stream vs trt-run")
        for p in r.people:
            assert p.pose.shape == (72,) and p.betas.shape == (10,) and p.orig_cam.shape == (4,)
            assert p.joints2d.ndim == 2 and p.joints2d.shape[1] == 2 and p.vertices is not None
