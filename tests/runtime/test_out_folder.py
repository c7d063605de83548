"""--out keeps what the run did not write: a foreign file stays, a foreign file in the way is refused (one line),
an earlier run's files (listed in its run file) are replaced, --render may sit inside --out, and --out may be a
mount point, an empty folder or a fresh path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from hmr_trt.manifest import RUN_FILE
from hmr_trt.runtime.cli import app

from .conftest import PYTHON, in_namespaces

runner = CliRunner()


@pytest.fixture()
def features(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "f.npz"
    np.savez(path, track_a=rng.random((20, 2048), np.float32), track_b=rng.random((18, 2048), np.float32))
    return path


def run(export, features, out, *extra) -> object:
    return runner.invoke(app, ["--features", str(features), "--export", str(export), "--out", str(out),
                               "--backend", "onnxruntime", "--device", "cpu", "--quiet", *extra])


def listed(out) -> set:
    return set(json.loads((out / RUN_FILE).read_text())["files"])


def test_foreign_file_is_kept_and_an_earlier_run_is_replaced(vibe_video_export, features, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = run(vibe_video_export, features, out)
    assert result.exit_code == 0, result.output
    assert (out / "notes.txt").read_text() == "mine"
    assert listed(out) == {"summary.json", "track_a.npz", "track_b.npz"}
    # an earlier run's file that this run does not write again is removed; the user's stays
    (out / "track_old.npz").write_bytes(b"from an earlier run")
    (out / RUN_FILE).write_text(json.dumps({"files": sorted(listed(out) | {"track_old.npz"})}))
    result = run(vibe_video_export, features, out)
    assert result.exit_code == 0, result.output
    assert not (out / "track_old.npz").exists() and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == sorted([RUN_FILE, "notes.txt", "summary.json", "track_a.npz",
                                                            "track_b.npz"])


def test_foreign_file_in_the_way_is_refused(vibe_video_export, features, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text('{"mine": true}')
    (out / "notes.txt").write_text("mine")
    result = run(vibe_video_export, features, out)
    assert result.exit_code == 1 and "holds summary.json, which no earlier hmr-trt run there wrote" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "summary.json"]
    assert (out / "summary.json").read_text() == '{"mine": true}'


@pytest.mark.parametrize("kind", ["fresh", "empty"])
def test_fresh_and_empty_folders(vibe_video_export, features, tmp_path, kind) -> None:
    out = tmp_path / "a" / "b"
    if kind == "empty":
        out.mkdir(parents=True)
    result = run(vibe_video_export, features, out)
    assert result.exit_code == 0, result.output
    assert listed(out) == {p.name for p in out.iterdir()} - {RUN_FILE}


def test_render_inside_out_is_kept(vibe_video_export, mjpg_clip, tmp_path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["--video", str(mjpg_clip), "--export", str(vibe_video_export), "--out", str(out),
                                 "--render", str(out / "render.mp4"), "--max-frames", "4", "--min-track-frames", "1",
                                 "--emit", "last", "--backend", "onnxruntime", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    import cv2

    cap = cv2.VideoCapture(str(out / "render.mp4"))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == 4
    assert "render.mp4" in listed(out)
    assert json.loads((out / "summary.json").read_text())["render"] == str(out / "render.mp4")


def test_out_at_a_mount_point(vibe_video_export, features, tmp_path) -> None:
    """--out is a bind mount (a container volume) in a private mount namespace: renaming the folder itself would
    fail (EBUSY); files are renamed one by one inside it."""
    volume, mount = tmp_path / "volume", tmp_path / "mnt"
    volume.mkdir()
    mount.mkdir()
    (volume / "notes.txt").write_text("mine")
    script = (f'mount --bind "{volume}" "{mount}" && exec "{PYTHON}" -m hmr_trt.runtime --features "{features}" '
              f'--export "{vibe_video_export}" --out "{mount}" --backend onnxruntime --device cpu --quiet')
    proc = in_namespaces(["sh", "-c", script], timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "Errno" not in proc.stderr
    assert sorted(p.name for p in volume.iterdir()) == sorted([RUN_FILE, "notes.txt", "summary.json",
                                                               "track_a.npz", "track_b.npz"])
    assert (volume / "notes.txt").read_text() == "mine"


def test_output_folder_publishes_at_the_end_or_file_by_file(tmp_path) -> None:
    from hmr_trt.errors import OutputDirError
    from hmr_trt.manifest import OutputFolder

    out = tmp_path / "out"
    first = OutputFolder(out, publish="end")
    first.write("a.npz", lambda f: f.write(b"old a"))
    first.write("summary.json", lambda f: f.write(b"{}"))
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".tmp")) == []  # nothing in place yet
    first.commit()
    assert listed(out) == {"a.npz", "summary.json"}
    # a file run interrupted mid-way: the earlier output stays exactly as it was, no temporary file is left
    second = OutputFolder(out, publish="end")
    second.write("a.npz", lambda f: f.write(b"new a"))
    second.write("b.npz", lambda f: f.write(b"new b"))
    second.abort()
    assert sorted(p.name for p in out.iterdir()) == [RUN_FILE, "a.npz", "summary.json"]
    assert (out / "a.npz").read_bytes() == b"old a"
    # a live run: each file is in place (and listed) as soon as it is complete
    live = OutputFolder(out, publish="now")
    live.write("c.npz", lambda f: f.write(b"c"))
    assert (out / "c.npz").read_bytes() == b"c" and "c.npz" in listed(out)
    (out / "mine.txt").write_text("mine")
    with pytest.raises(OutputDirError, match="holds mine.txt"):
        live.write("mine.txt", lambda f: f.write(b"x"))
    live.commit()  # the earlier run's a.npz and summary.json were not written again: removed; mine.txt kept
    assert sorted(p.name for p in out.iterdir()) == [RUN_FILE, "c.npz", "mine.txt"]
