"""trt-run where nobody watches: progress lines when stderr is not a terminal; SIGTERM on a file run leaves nothing."""

from __future__ import annotations

from typer.testing import CliRunner

from hmr_trt.runtime import cli

runner = CliRunner()


def test_progress_lines_without_a_terminal(vibe_video_export, mjpg_clip, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(cli, "PROGRESS_EVERY_S", 0.0)  # every frame, instead of every 5 s
    result = runner.invoke(cli.app, ["--video", str(mjpg_clip), "--export", str(vibe_video_export), "--out",
                                     str(tmp_path / "out"), "--max-frames", "3", "--min-track-frames", "1",
                                     "--backend", "onnxruntime", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    lines = [x for x in result.output.splitlines() if x.startswith("frames ") and "frames/s" in x]
    assert [x.split(",")[0] for x in lines] == ["frames 1/3", "frames 2/3", "frames 3/3"], result.output
    assert all("open tracks" in x for x in lines)


def test_sigterm_on_a_file_run_leaves_nothing(vibe_video_export, mjpg_clip, tmp_path) -> None:
    """A file input interrupted by SIGTERM (as by Ctrl-C): no --out, no temporary file, nothing rendered."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "hmr_trt.runtime", "--video", str(mjpg_clip), "--export",
                             str(vibe_video_export), "--out", str(out), "--render", str(tmp_path / "r.mp4"),
                             "--format", "jsonl", "--min-track-frames", "1", "--backend", "onnxruntime", "--device",
                             "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out.is_dir() and any(out.iterdir())):
        time.sleep(0.1)  # until the run has its temporary files in --out
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "interrupted" in output and "Traceback" not in output
    assert sorted(p.name for p in tmp_path.iterdir()) == [], output
