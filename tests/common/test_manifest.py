"""Manifest round trip, profiles, and the staged output directory (nothing half-written)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from hmr_trt.errors import ConfigError, HmrTrtError, OutputDirError
from hmr_trt.manifest import Artifact, Manifest, TensorSpec, sha256_of, staged_output
from hmr_trt.profile import ShapeProfile


def test_profile_parse_and_check() -> None:
    p = ShapeProfile.parse("1:8:64")
    assert (p.min, p.opt, p.max) == (1, 8, 64) and str(p) == "1:8:64"
    assert p.contains(64) and not p.contains(65)
    for bad in ("0:1:2", "4:2:8", "1:9:8", "a:b:c", "1:2"):
        with pytest.raises(ConfigError):
            ShapeProfile.parse(bad)
    with pytest.raises(ConfigError, match="outside the profile"):
        p.check(100)


def test_manifest_round_trip(tmp_path) -> None:
    (tmp_path / "a.onnx").write_bytes(b"abc")
    m = Manifest(model="coseg", config={"window": 16}, profile={"min": 1, "opt": 8, "max": 64})
    m.add(Artifact("temporal", "a.onnx", "onnx", "fp32", sha256_of(tmp_path / "a.onnx"),
                   [TensorSpec("features", ["batch", 16, 2048])], [TensorSpec("betas", ["batch", 16, 10])]))
    m.add(Artifact("temporal", "a.onnx", "onnx", "fp32", "x" * 64, [], []))  # replaces the first
    m.write(tmp_path)
    back = Manifest.read(tmp_path)
    assert len(back.artifacts) == 1 and back.find("temporal").sha256 == "x" * 64
    assert sha256_of(tmp_path / "a.onnx") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_reading_a_non_export_dir_fails(tmp_path) -> None:
    with pytest.raises(HmrTrtError, match="no manifest.json"):
        Manifest.read(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(HmrTrtError, match="not a valid hmr-trt manifest"):
        Manifest.read(tmp_path)


def test_staged_output_moves_into_place_only_on_success(tmp_path) -> None:
    out = tmp_path / "out"
    with staged_output(out) as stage:
        (stage / "manifest.json").write_text("{}")
        assert not out.exists()
    assert (out / "manifest.json").exists()
    with pytest.raises(RuntimeError), staged_output(out) as stage:
        (stage / "manifest.json").write_text('{"new": 1}')
        raise RuntimeError("boom")
    assert (out / "manifest.json").read_text() == "{}"  # the earlier output is intact
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging leftovers


def test_staged_output_survives_ctrl_c(tmp_path) -> None:
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), staged_output(out) as stage:
        (stage / "half.onnx").write_bytes(b"12")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_staged_output_refuses_foreign_content(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirError, match="other content"), staged_output(tmp_path):
        pass
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputDirError, match="not a directory"), staged_output(tmp_path / "f"):
        pass


def test_outputs_get_the_usual_permissions(tmp_path) -> None:
    """mkstemp/mkdtemp create 0600/0700 files; outputs must be readable like any file the user writes."""
    import os

    from hmr_trt.fileio import atomic_write

    old = os.umask(0o022)
    try:
        with staged_output(tmp_path / "out") as stage:
            atomic_write(stage / "manifest.json", lambda f: f.write(b"{}"))
        assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
        assert (tmp_path / "out" / "manifest.json").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


STAGED_AT_MOUNT = r"""
import subprocess, sys
from pathlib import Path
from hmr_trt.manifest import staged_output
out = Path(sys.argv[1])
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(out)], check=True)  # --out is a mount point (a volume)
for text in ("first", "second"):  # a fresh mount, then an earlier output replaced
    with staged_output(out, replace_marker="marker") as stage:
        (stage / "marker").write_text(text)
        (stage / "sub").mkdir()
        (stage / "sub" / "f.txt").write_text(text)
    assert sorted(p.name for p in out.iterdir()) == ["marker", "sub"], list(out.iterdir())
    assert (out / "sub" / "f.txt").read_text() == text
assert not [p for p in out.parent.iterdir() if p.name.startswith(".out.")], list(out.parent.iterdir())
print("ok")
"""


def test_staged_output_at_a_mount_point(tmp_path) -> None:
    """--out at a mount point (a container volume: its folder cannot be renamed, EBUSY): the finished output's
    entries are moved in instead of the folder, a second run replaces the first; nothing is left beside it.
    Run in a private mount namespace (unshare -m), so the mount disappears with the process."""

    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is missing")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a mount namespace here (needs root): {probe.stderr.decode().strip()}")
    out = tmp_path / "out"
    out.mkdir()
    run = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", STAGED_AT_MOUNT,
                          str(out)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


def test_staged_output_takes_a_foreign_marker_named_folder_for_the_users(tmp_path) -> None:
    """A Ray --videos run recognises its earlier output by its run file: a user's folder with a summary.json
    and notes is refused in one line, and left as it was."""
    from hmr_trt.manifest import RUN_FILE

    out = tmp_path / "mine"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputDirError, match="exists with other content"):
        with staged_output(out, replace_marker=RUN_FILE) as stage:
            (stage / "x").write_text("x")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "summary.json"]
    assert (out / "notes.txt").read_text() == "keep me"
