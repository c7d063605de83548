"""trt-export's bad input: one clear line, exit code 1, nothing written to --out."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from hmr_trt.export.cli import app

runner = CliRunner()


def _fails(args: list[str], match: str, out) -> None:
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and match in lines[0], result.output
    assert not out.exists() or not any(out.iterdir()), "nothing may be written on failure"
    assert not list(out.parent.glob(f".{out.name}.staging-*")), "staging directory left behind"


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--window", "15"], "window must be an even number"),
        (["--batch", "8:4:2"], "min <= opt <= max"),
        (["--batch", "1:8"], "MIN:OPT:MAX"),
        (["--batch", "2:8:64"], "parity batch 1 is below the profile's min 2"),
        (["--checkpoint", "/nonexistent/ckpt.pt"], "--checkpoint /nonexistent/ckpt.pt: file not found"),
        (["--smpl-model", "/nonexistent/SMPL.pkl"], "--smpl-model /nonexistent/SMPL.pkl: file not found"),
    ],
)
def test_bad_options(tmp_path, args, match) -> None:
    _fails(args, match, tmp_path / "out")


def test_empty_calibration_folder(tmp_path) -> None:
    (tmp_path / "calib").mkdir()
    _fails(["--precision", "int8", "--calib", str(tmp_path / "calib")], "no videos or .npz", tmp_path / "out")


def test_calibration_features_of_the_wrong_width(tmp_path) -> None:
    import numpy as np

    np.savez(tmp_path / "f.npz", features=np.zeros((40, 512), np.float32))
    _fails(["--precision", "int8", "--calib", str(tmp_path / "f.npz")], "512", tmp_path / "out")


@pytest.mark.parametrize("model", ["decomr", "instancehmr"])
@pytest.mark.parametrize("where", ["file", "folder"])
def test_feature_files_cannot_calibrate_frame_or_scene_models(tmp_path, model, where) -> None:
    import numpy as np

    folder = tmp_path / "calib"
    folder.mkdir()
    np.savez(folder / "f.npz", features=np.zeros((40, 2048), np.float32))
    source = folder / "f.npz" if where == "file" else folder
    _fails(["--model", model, "--precision", "int8", "--calib", str(source)],
           f".npz feature files calibrate window models only; {model} is a", tmp_path / "out")


def test_corrupt_checkpoint(tmp_path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    _fails(["--checkpoint", str(bad)], "cannot read checkpoint", tmp_path / "out")


def test_corrupt_smpl_file(tmp_path) -> None:
    bad = tmp_path / "SMPL_NEUTRAL.pkl"
    bad.write_bytes(b"\x80\x02garbage")
    result = runner.invoke(app, ["--smpl-model", str(bad), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "error:" in result.output and "SMPL_NEUTRAL.pkl" in result.output
    assert not (tmp_path / "out").exists()


def test_unwritable_out(tmp_path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = runner.invoke(app, ["--out", str(blocker / "sub")])
    assert result.exit_code == 1 and "cannot write to --out" in result.output


def test_out_with_other_content_is_refused(tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    result = runner.invoke(app, ["--out", str(out)])
    assert result.exit_code == 1 and "exists with other content" in result.output
    assert (out / "precious.txt").read_text() == "keep me"


def test_exit_code_from_a_real_process(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "hmr_trt.export", "--window", "7", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: window must be an even number")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--precision", "fp16", "--recipe", "nope"], "coseg has no precision recipe 'nope'; it has fp16, fp16-rnn32, int8"),
        (["--precision", "fp16", "--recipe", "int8"], "recipe 'int8' is int8, not fp16"),
        (["--recipe", "fp16"], "--recipe fp16 applies to --precision fp16 or int8, not fp32"),
        (["--precision", "fp16", "--strict", "--max-drift-mm", "1"], "not both"),
        (["--precision", "fp16", "--max-drift-mm", "-1"], "--max-drift-mm must be > 0"),
        (["--model", "nosuchmodel"], "nosuchmodel"),
    ],
)
def test_bad_precision_options(tmp_path, args, match) -> None:
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and match in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_accept_drift_is_gone(tmp_path) -> None:
    result = runner.invoke(app, ["--precision", "fp16", "--accept-drift", "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "--accept-drift" in result.output


def _save(obj, path):
    import torch

    torch.save(obj, path)
    return path


def test_checkpoint_of_another_model_names_the_keys(tmp_path) -> None:
    import torch

    other = _save({"gen_state_dict": {"encoder.gru.weight_ih_l0": torch.zeros(3, 4)}}, tmp_path / "vibe.pth.tar")
    _fails(["--checkpoint", str(other)], "coseg: checkpoint", tmp_path / "out")
    result = runner.invoke(app, ["--checkpoint", str(other), "--out", str(tmp_path / "out2")])
    line = [x for x in result.output.splitlines() if x.startswith("error:")][0]
    assert "does not match the coseg model" in line and "missing keys" in line and "unexpected keys (1): encoder" in line


def test_truncated_and_non_state_dict_checkpoints(tmp_path) -> None:
    from hmr_trt import registry

    adapter = registry.adapter("coseg")
    good = _save(adapter.reference(adapter.tiny_config()).state_dict(), tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _fails(["--checkpoint", str(truncated)], "coseg: cannot read checkpoint", tmp_path / "out")
    listed = _save([1, 2, 3], tmp_path / "list.pt")
    _fails(["--checkpoint", str(listed)], "holds no state dict of tensors", tmp_path / "out")
    _fails(["--checkpoint", str(good)], "shape mismatches", tmp_path / "out")  # a tiny-config file: other widths


def test_size_tiny_refuses_a_checkpoint(tmp_path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"not read")
    _fails(["--size", "tiny", "--checkpoint", str(ckpt)], "--size tiny is an untrained configuration", tmp_path / "out")


def test_size_tiny_is_the_tiny_config_labelled_in_the_manifest_and_the_console(tmp_path) -> None:
    """`trt-export --model vitpose --size tiny`: the adapter's tiny config, said on the console and first in the
    manifest's notes (which trt-run prints), never taken for the released network."""
    from hmr_trt import registry
    from hmr_trt.export.pipeline import TINY_NOTE
    from hmr_trt.manifest import Manifest

    if "vitpose" not in registry.names():
        pytest.skip("no vitpose model registered")
    result = runner.invoke(app, ["--model", "vitpose", "--size", "tiny", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "UNTRAINED" in " ".join(result.output.split())
    manifest = Manifest.read(tmp_path / "out")
    assert manifest.config == registry.adapter("vitpose").tiny_config().to_dict()
    assert manifest.config != registry.adapter("vitpose").default_config().to_dict()
    assert manifest.notes[0] == TINY_NOTE
    # a keypoint model's verdict line speaks of keypoints in crop pixels, not of vertices in mm
    text = " ".join(result.output.split())
    assert re.search(r"fp32: PASS worst mean keypoint drift [\d.e+-]+ px \(\w+ crops, batch \d+\) vs goal [\d.]+ px",
                     text), text
    assert "vertex drift" not in text and "all drifts in pixels of the crop" in text
