"""Paths and checkpoints given to trt-export, trt-build and trt-triton: one line naming the path as the user
gave it, exit code 1, no OSError traceback, nothing written; checkpoints that cannot be read say why, and
never suggest the unsafe load; GLoT takes --window like its peers."""

from __future__ import annotations

import dataclasses
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hmr_trt.errors import CheckpointError, ConfigError, HmrTrtError
from hmr_trt.manifest import Manifest

runner = CliRunner()
LONG = "p" * 300  # one path part longer than any file system allows (255)


def invoke(app, args: list[str]):
    result = runner.invoke(app, args)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    return result, errors


def assert_one_line(result, errors, match: str, out: Path | None = None) -> None:
    assert result.exit_code == 1, result.output
    assert len(errors) == 1 and match in errors[0], result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not an OSError
    assert "Traceback" not in result.output
    if out is not None:
        assert not out.exists() and not list(out.parent.glob(f".{out.name}*")), "nothing may be written"


@pytest.mark.parametrize("option", ["--checkpoint", "--smpl-model", "--backbone-checkpoint", "--mean-params",
                                    "--video", "--calib", "--decomr-data"])
def test_trt_export_300_character_paths(tmp_path, option) -> None:
    from hmr_trt.export.cli import app

    path, out = tmp_path / f"{LONG}.pt", tmp_path / "out"
    result, errors = invoke(app, [option, str(path), "--out", str(out)])
    assert_one_line(result, errors, f"{option} {path}: name too long for the file system (", out)


def test_trt_export_300_character_out(tmp_path) -> None:
    from hmr_trt.export.cli import app

    out = tmp_path / LONG
    result, errors = invoke(app, ["--out", str(out)])
    assert_one_line(result, errors, f"--out {out}: name too long for the file system")
    assert list(tmp_path.iterdir()) == []


def test_trt_export_device_and_folder_for_a_checkpoint(tmp_path) -> None:
    from hmr_trt.export.cli import app

    out = tmp_path / "out"
    result, errors = invoke(app, ["--checkpoint", "/dev/zero", "--out", str(out)])
    assert_one_line(result, errors, "--checkpoint /dev/zero: is not a regular file (a device, pipe or socket)", out)
    result, errors = invoke(app, ["--checkpoint", str(tmp_path), "--out", str(out)])
    assert result.exit_code != 0 and not out.exists()  # typer's dir_okay=False says it first, or ours does


def test_trt_build_and_trt_triton_300_character_paths(tmp_path) -> None:
    from hmr_trt.engines.cli import app as build
    from hmr_trt.engines.triton_cli import app as triton

    source, out = tmp_path / LONG, tmp_path / "out"
    result, errors = invoke(build, [str(source), "--precision", "fp32", "--out", str(out)])
    assert_one_line(result, errors, f"{source}: name too long for the file system", out)
    result, errors = invoke(triton, [str(source), "--out", str(out)])
    assert_one_line(result, errors, f"export folder {source}: name too long for the file system", out)


def test_trt_triton_300_character_out_is_one_line(tmp_path) -> None:
    """--out reaches the output-folder code; an OSError there is still one line (cli_common.run_cli)."""
    from hmr_trt.engines.triton_cli import app

    export = tmp_path / "export"
    _tiny_export(export)
    out = tmp_path / LONG
    result, errors = invoke(app, [str(export), "--out", str(out)])
    assert_one_line(result, errors, f"{out}: File name too long")


def _tiny_export(out: Path) -> Path:
    pytest.importorskip("torch")
    from hmr_trt import registry
    from hmr_trt.export.pipeline import ExportOptions, run_export
    from hmr_trt.profile import ShapeProfile

    run_export(ExportOptions(out=out, model="mpsnet", config=dataclasses.replace(registry.adapter("mpsnet").tiny_config(), trained_like=False),
                             with_backbone=False, profile=ShapeProfile(1, 2, 4), parity_windows=2, build_engines=False,
                             step=False))
    return out


def test_a_missing_export_folder_is_named_as_given(tmp_path) -> None:
    from hmr_trt.engines.cli import app as build
    from hmr_trt.engines.triton_cli import app as triton

    missing = tmp_path / "exports" / "glot"
    (tmp_path / "exports").mkdir()
    with pytest.raises(HmrTrtError, match=f"^export folder {missing}: not found$"):
        Manifest.read(missing)
    result, errors = invoke(triton, [str(missing), "--out", str(tmp_path / "repo")])
    assert_one_line(result, errors, f"error: export folder {missing}: not found", tmp_path / "repo")
    result, errors = invoke(build, [str(missing), "--precision", "fp32", "--out", str(tmp_path / "e")])
    assert_one_line(result, errors, f"error: {missing}: no such export directory", tmp_path / "e")
    empty = tmp_path / "exports" / "empty"
    empty.mkdir()
    with pytest.raises(HmrTrtError, match=f"^no manifest.json in {empty}: is this an hmr-trt export folder"):
        Manifest.read(empty)


# ------------------------------------------------------------------ checkpoints


class Exploit:
    def __reduce__(self):
        return (shutil.copyfile, (__file__, "/tmp/hmr-trt-exploit-ran"))


@pytest.fixture
def checkpoints(tmp_path) -> dict:
    torch = pytest.importorskip("torch")
    good = tmp_path / "good.pt"
    torch.save({"gen_state_dict": {"w": torch.zeros(4000)}}, good)
    legacy = tmp_path / "legacy.pt"
    torch.save({"gen_state_dict": {"w": torch.zeros(4000)}}, legacy, _use_new_zipfile_serialization=False)
    files = {"empty": b"", "truncated zip": good.read_bytes()[:3000], "truncated legacy": legacy.read_bytes()[:3000],
             "text": b"not a checkpoint\n", "raw pickle": pickle.dumps({"gen_state_dict": Exploit()})}
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name.replace(' ', '_')}.pth.tar"
        paths[name].write_bytes(data)
    paths["pickled code"] = tmp_path / "pickled_code.pth.tar"
    torch.save({"gen_state_dict": Exploit()}, paths["pickled code"])  # a checkpoint that would run code
    return paths


EXPECTED = {
    "empty": "it is empty (0 bytes): its download or copy did not finish; fetch the released file again",
    "truncated zip": "(3000 bytes): it is truncated or corrupt (it ends before the data it announces)",
    "truncated legacy": "(3000 bytes): it is truncated or corrupt (it ends before the data it announces)",
    "text": "it is not a PyTorch checkpoint torch.load can read (",
    "raw pickle": "it is not a PyTorch checkpoint torch.load can read (UnpicklingError: Unsupported operand",
    "pickled code": "it holds Python objects besides tensors and numbers (shutil.copyfile): hmr-trt reads "
                    "checkpoints without executing pickled code, so it refuses this file",
}


def test_unreadable_checkpoints_say_why_in_words(checkpoints) -> None:
    from hmr_trt.export.models.checkpoint import load_torch_file

    Path("/tmp/hmr-trt-exploit-ran").unlink(missing_ok=True)
    for name, path in checkpoints.items():
        with pytest.raises(CheckpointError) as err:
            load_torch_file(path, "glot")
        message = str(err.value)
        assert message.startswith(f"glot: cannot read checkpoint {path}") and EXPECTED[name] in message, message
        assert "\n" not in message and "weights_only" not in message and "will likely succeed" not in message
    assert not Path("/tmp/hmr-trt-exploit-ran").exists(), "the pickled code ran"


def test_trt_export_zero_byte_checkpoint(checkpoints, tmp_path) -> None:
    """Through the command, in its own interpreter: one line, exit 1, nothing written."""
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "hmr_trt.export", "--model", "mpsnet", "--checkpoint",
                             str(checkpoints["empty"]), "--out", str(out)], capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert errors == [f"error: mpsnet: cannot read checkpoint {checkpoints['empty']}: {EXPECTED['empty']}"], result.stderr
    assert not out.exists() and not list(tmp_path.glob(".out*"))


# ------------------------------------------------------------------ --window for GLoT


def test_glot_takes_window_like_its_peers(tmp_path) -> None:
    pytest.importorskip("torch")
    from hmr_trt.export.cli import app
    from hmr_trt.export.pipeline import ExportOptions, _validate_options

    for window in (16, 12):  # 16: the released seqlen
        job = _validate_options(ExportOptions(out=tmp_path / "o", model="glot", window=window))
        assert job.cfg.seqlen == job.contract.window == window
        assert job.contract.graph("temporal").inputs[0].shape == ("batch", window, 2048)
    with pytest.raises(ConfigError, match="mpsnet config: window must be >= 13"):  # a peer, for comparison
        _validate_options(ExportOptions(out=tmp_path / "o", model="mpsnet", window=8))
    out = tmp_path / "out"
    result, errors = invoke(app, ["--model", "glot", "--window", "4", "--out", str(out)])
    assert_one_line(result, errors, "glot: --window 4 is too short: GLoT's local branch reads 2 * stride_short + 1 "
                    "= 9 frames around the middle, so --window must be >= 9 (the released config and checkpoint "
                    "use 16)", out)
