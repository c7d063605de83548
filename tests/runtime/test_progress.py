"""When stderr is not a terminal (``make demo > log``), trt-run prints a progress line every few seconds."""

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
