"""trt-build: one clear line and exit code 1 for bad input or a missing TensorRT; engines + manifest otherwise.

The build itself is faked (``target`` and ``build_fn``, or monkeypatched ``current_target`` and
``build_serialized`` for the command), so this runs without TensorRT or a GPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from hmr_trt.contract import GraphSpec, ModelContract, smpl_body_graph, spin_backbone_graph, window_outputs
from hmr_trt.contract import TensorSpec as GraphTensor
from hmr_trt.engines import builder, export_engines
from hmr_trt.engines.builder import BuildRequest
from hmr_trt.engines.cli import app
from hmr_trt.engines.export_engines import (
    BuildOptions,
    add_engines_to_export,
    build_engines_for_export,
    graph_profile,
    select_artifacts,
)
from hmr_trt.engines.sidecar import sidecar_path
from hmr_trt.errors import ConfigError, EngineError
from hmr_trt.manifest import Artifact, Manifest, TensorSpec, sha256_of
from hmr_trt.profile import ShapeProfile
from hmr_trt.runtime.engine_loader import verify_engine
from hmr_trt.runtime.trt_compat import Target

runner = CliRunner()
H100 = Target("10.3.0", "NVIDIA H100 80GB HBM3", "sm_90")
GRAPHS = {  # name -> (inputs, outputs), leading axis dynamic
    "temporal": (["features"], ["pose_rotmat", "betas", "cam"]),
    "body_model": (["pose_rotmat", "betas"], ["vertices", "joints3d"]),
    "backbone": (["images"], ["features"]),
}


def stamped_onnx(path: Path, graph: str | None, spec: GraphSpec | None = None) -> None:
    """An ONNX file stamped as trt-export stamps them; its inputs/outputs are ``spec``'s when given
    (the verified loader compares them with the contract), else (batch, 3)."""
    ins, outs = GRAPHS.get(graph or "temporal", GRAPHS["temporal"])
    shapes = {t.name: list(t.shape) for t in (spec.inputs + spec.outputs)} if spec is not None else {}
    if spec is not None:
        ins, outs = list(spec.input_names), list(spec.output_names)
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes.get(n, ["batch", 3])) for n in ins + outs]
    nodes = [helper.make_node("Identity", [ins[0]], [o]) for o in outs]
    model = helper.make_model(helper.make_graph(nodes, graph or "g", vi[:len(ins)], vi[len(ins):]),
                              opset_imports=[helper.make_opsetid("", 17)])
    if graph:
        for key, value in {"hmr_trt.graph": graph, "hmr_trt.version": "0.1.0", "hmr_trt.model": "coseg"}.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.save(model, str(path))


def window_contract(model_graph: str = "temporal", emit: str = "all", window: int = 4) -> ModelContract:
    """A window-family contract like coseg's (T = 4, C = 8): model graph, SMPL body model, SPIN backbone."""
    frames = window if emit == "all" else 1
    model = GraphSpec(model_graph, "model", (GraphTensor("features", ("batch", window, 8)),),
                      window_outputs("batch", frames))
    return ModelContract("m", "window", "test model", (model, smpl_body_graph(), spin_backbone_graph()),
                         window=window, feature_dim=8, emit=emit)


def make_export(root: Path, precisions: dict | None = None, contract: ModelContract | None = None) -> Path:
    """An export directory like trt-export's: three stamped ONNX graphs and manifest.json with the contract."""
    root.mkdir(parents=True)
    precisions = precisions or {"temporal": ["fp32", "fp16"], "body_model": ["fp32"], "backbone": ["fp32"]}
    contract = contract or window_contract()
    manifest = Manifest(model=contract.name, config={"window": 4, "feature_dim": 8},
                        profile={"min": 1, "opt": 2, "max": 8}, contract=contract.to_dict())
    for name, precs in precisions.items():
        for prec in precs:
            path = root / f"{name}_{prec}.onnx"
            stamped_onnx(path, name, next((g for g in contract.graphs if g.name == name), None))
            ins, outs = GRAPHS.get(name, GRAPHS["temporal"])
            manifest.add(Artifact(name, path.name, "onnx", prec, sha256_of(path),
                                  [TensorSpec(n, ["batch", 3]) for n in ins], [TensorSpec(n, ["batch", 3]) for n in outs]))
    manifest.write(root)
    return root


class FakeBuild:
    def __init__(self, fail_on: str | None = None) -> None:
        self.requests: list[BuildRequest] = []
        self.fail_on = fail_on

    def __call__(self, request: BuildRequest) -> bytes:
        if self.fail_on and self.fail_on in request.onnx_path.name:
            raise EngineError(f"TensorRT 10.3.0 failed to build an engine from {request.onnx_path.name}")
        self.requests.append(request)
        return f"ENGINE {request.onnx_path.name} {request.precision} {request.profile}".encode()


def invoke(args: list[str]):
    result = runner.invoke(app, args)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    return result, errors


def assert_fails(args: list[str], match: str, out: Path | None = None) -> str:
    result, errors = invoke(args)
    assert result.exit_code == 1, result.output
    assert len(errors) == 1 and match in errors[0], result.output
    if out is not None:
        assert not out.exists(), "nothing may be written on failure"
        assert not list(out.parent.glob(f".{out.name}.staging-*")), "staging directory left behind"
    return errors[0]


@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError


@pytest.fixture
def fake_tensorrt(monkeypatch):
    """TensorRT 'present': this machine is H100, builds are FakeBuild (for the command, which has no build_fn)."""
    fake = FakeBuild()
    from hmr_trt.engines import cli

    monkeypatch.setattr(cli, "trt_available", lambda: (True, "TensorRT 10.3.0 on H100"))
    monkeypatch.setattr(export_engines, "current_target", lambda: H100)
    monkeypatch.setattr(builder, "current_target", lambda: H100)
    monkeypatch.setattr(builder, "build_serialized", fake)
    return fake


# ---------------------------------------------------------------------------------------------
# bad input, one line each


def test_without_tensorrt_the_command_says_what_to_install(tmp_path, no_tensorrt) -> None:
    export = make_export(tmp_path / "export")
    line = assert_fails([str(export), "--precision", "fp16", "--out", str(tmp_path / "out")],
                        "trt-build needs TensorRT and an NVIDIA GPU: TensorRT is not installed", tmp_path / "out")
    assert "'.[trt-cu12]'" in line and "'.[trt-cu13]'" in line and "NVIDIA GPU" in line


def test_without_tensorrt_a_real_process_exits_1_without_traceback(tmp_path) -> None:
    export = make_export(tmp_path / "export")
    code = ("import sys\nsys.modules['tensorrt'] = None\nfrom hmr_trt.engines.cli import main\n"
            f"sys.argv = ['trt-build', {str(export)!r}, '--precision', 'fp32', '--out', {str(tmp_path / 'o')!r}]\n"
            "main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: trt-build needs TensorRT and an NVIDIA GPU")
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("batch", "match"),
    [("8:4:2", "min <= opt <= max"), ("1:16:8", "min <= opt <= max"), ("1:8", "MIN:OPT:MAX"),
     ("0:1:2", "min must be >= 1")],
)
def test_bad_profile(tmp_path, no_tensorrt, batch, match) -> None:
    export = make_export(tmp_path / "export")
    assert_fails([str(export), "--precision", "fp32", "--batch", batch, "--out", str(tmp_path / "out")], match,
                 tmp_path / "out")


def test_non_hmr_trt_onnx_is_refused(tmp_path, no_tensorrt) -> None:
    plain = tmp_path / "model.onnx"
    stamped_onnx(plain, None)
    assert_fails([str(plain), "--precision", "fp32", "--out", str(tmp_path / "out")],
                 "model.onnx is not an hmr-trt export", tmp_path / "out")


@pytest.mark.parametrize(
    ("args", "match"),
    [(["--precision", "int8"], "the export has no int8 temporal ONNX (it has: fp16, fp32); make it with trt-export"),
     (["--precision", "fp16", "--opt-level", "9"], "--opt-level must be in 0..5"),
     (["--precision", "fp16", "--workspace-mib", "0"], "--workspace-mib must be >= 1")],
)
def test_bad_options(tmp_path, no_tensorrt, args, match) -> None:
    export = make_export(tmp_path / "export")
    assert_fails([str(export), *args, "--out", str(tmp_path / "out")], match, tmp_path / "out")


def test_missing_source_and_changed_onnx(tmp_path, no_tensorrt) -> None:
    assert_fails([str(tmp_path / "nowhere"), "--precision", "fp32", "--out", str(tmp_path / "o")],
                 "nowhere: no such export directory or ONNX file")
    export = make_export(tmp_path / "export")
    stamped_onnx(export / "body_model_fp32.onnx", "temporal")  # overwritten after the export
    assert_fails([str(export), "--precision", "fp32", "--out", str(tmp_path / "o")],
                 "body_model_fp32.onnx is not the file")
    other = make_export(tmp_path / "other")
    (other / "backbone_fp32.onnx").unlink()
    assert_fails([str(other), "--precision", "fp32", "--out", str(tmp_path / "o")],
                 "backbone_fp32.onnx (backbone graph listed in")


def test_directory_without_manifest_is_refused(tmp_path, no_tensorrt) -> None:
    (tmp_path / "empty").mkdir()
    assert_fails([str(tmp_path / "empty"), "--precision", "fp32", "--out", str(tmp_path / "o")],
                 "no manifest.json")


# ---------------------------------------------------------------------------------------------
# planning


def test_companion_graphs_take_the_closest_precision_the_export_has(tmp_path) -> None:
    export = make_export(tmp_path / "e", {"temporal": ["fp32", "fp16", "int8"], "body_model": ["fp32"],
                                          "backbone": ["fp32", "fp16"]})
    manifest = Manifest.read(export)
    pick = {p: [(a.name, a.precision) for a in select_artifacts(manifest, p)] for p in ("fp32", "fp16", "int8")}
    assert pick["fp32"] == [("temporal", "fp32"), ("body_model", "fp32"), ("backbone", "fp32")]
    assert pick["fp16"] == [("temporal", "fp16"), ("body_model", "fp32"), ("backbone", "fp16")]
    assert pick["int8"] == [("temporal", "int8"), ("body_model", "fp32"), ("backbone", "fp16")]


def test_export_without_backbone_is_fine(tmp_path) -> None:
    export = make_export(tmp_path / "e", {"temporal": ["fp32"], "body_model": ["fp32"]})
    assert [a.name for a in select_artifacts(Manifest.read(export), "fp32")] == ["temporal", "body_model"]


def test_which_graphs_get_reduced_precision_comes_from_the_contract(tmp_path) -> None:
    """A model graph named otherwise than 'temporal' is built at the exact precision; FP32-only graphs fall back."""
    contract = window_contract(model_graph="glot")
    export = make_export(tmp_path / "e", {"glot": ["fp32", "fp16"], "body_model": ["fp32"]}, contract)
    picked = [(a.name, a.precision) for a in select_artifacts(Manifest.read(export), "fp16")]
    assert picked == [("glot", "fp16"), ("body_model", "fp32")]
    with pytest.raises(EngineError, match=r"the export has no int8 glot ONNX \(it has: fp16, fp32\)"):
        select_artifacts(Manifest.read(export), "int8")
    missing_body = make_export(tmp_path / "f", {"glot": ["fp32"]}, contract)
    with pytest.raises(EngineError, match="the export has no body_model ONNX .*: re-run trt-export"):
        select_artifacts(Manifest.read(missing_body), "fp32")


def test_frame_graphs_scale_with_the_frames_a_window_makes() -> None:
    profile = ShapeProfile(1, 2, 8)
    every = window_contract(emit="all", window=4)
    middle = window_contract(emit="middle", window=16)
    assert str(graph_profile(every, "temporal", profile)) == "1:2:8"
    assert str(graph_profile(every, "body_model", profile)) == "1:8:32"  # T = 4 frames out per window
    assert str(graph_profile(middle, "body_model", profile)) == "1:2:8"  # one frame out per window
    assert str(graph_profile(middle, "backbone", profile)) == "1:32:128"  # T = 16 crops in per window


def test_manifest_without_a_contract_is_refused_with_one_line(tmp_path, no_tensorrt) -> None:
    export = make_export(tmp_path / "old")
    data = json.loads((export / "manifest.json").read_text())
    del data["contract"]  # what hmr-trt wrote before model contracts
    (export / "manifest.json").write_text(json.dumps(data))
    assert_fails([str(export), "--precision", "fp32", "--out", str(tmp_path / "o")],
                 "records no model contract (it was written by an older hmr-trt, before contracts): re-export",
                 tmp_path / "o")


# ---------------------------------------------------------------------------------------------
# building (faked)


def test_engines_and_manifest_for_an_export(tmp_path) -> None:
    export, out, fake = make_export(tmp_path / "export"), tmp_path / "engines", FakeBuild()
    manifest = build_engines_for_export(export, "fp16", ShapeProfile(1, 2, 8), out,
                                        options=BuildOptions(cache_dir=tmp_path / "cache", target=H100, build_fn=fake))
    assert Manifest.read(out).to_dict() == manifest.to_dict()
    engines = {a.name: a for a in manifest.artifacts if a.kind == "engine"}
    assert sorted(engines) == ["backbone", "body_model", "temporal"]
    assert {a.precision for a in engines.values()} == {"fp16"}
    assert engines["temporal"].extra["onnx_precision"] == "fp16" and engines["body_model"].extra["onnx_precision"] == "fp32"
    # the temporal axis counts windows, the body model's and backbone's frames (T = 4)
    profiles = {r.onnx_path.name: str(r.profile) for r in fake.requests}
    assert profiles == {"temporal_fp16.onnx": "1:2:8", "body_model_fp32.onnx": "1:8:32", "backbone_fp32.onnx": "1:8:32"}
    for art in engines.values():
        info = art.extra["engine"]
        assert (out / art.path).is_file() and sidecar_path(out / art.path).is_file()
        assert info["tensorrt_version"] == "10.3.0" and info["compute_capability"] == "sm_90"
        assert art.sha256 == sha256_of(out / art.path) == info["engine_sha256"]
        assert info["source"] == str(export.absolute())
        verify_engine(out / art.path, target=H100)
        assert [t.name for t in art.inputs] == GRAPHS[art.name][0]
    for art in manifest.artifacts:
        if art.kind == "onnx":  # the ONNX files stay in the export; paths resolve from --out
            assert (out / art.path).resolve() == (export / Path(art.path).name).resolve()
    assert manifest.tools["tensorrt"] == "10.3.0" and any("TensorRT 10.3.0" in n for n in manifest.notes)


def test_second_build_comes_from_the_cache(tmp_path) -> None:
    export, fake = make_export(tmp_path / "export"), FakeBuild()
    options = BuildOptions(cache_dir=tmp_path / "cache", target=H100, build_fn=fake)
    build_engines_for_export(export, "fp32", None, tmp_path / "a", options=options)
    again = build_engines_for_export(export, "fp32", None, tmp_path / "b", options=options)
    assert len(fake.requests) == 3
    assert all(a.extra["cache_hit"] for a in again.artifacts if a.kind == "engine")
    for name in ("temporal_fp32.engine", "body_model_fp32.engine", "backbone_fp32.engine"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    build_engines_for_export(export, "fp32", None, tmp_path / "c",
                             options=dataclasses.replace(options, use_cache=False))
    assert len(fake.requests) == 6


def test_a_failed_build_leaves_out_untouched(tmp_path) -> None:
    export, out = make_export(tmp_path / "export"), tmp_path / "engines"
    with pytest.raises(EngineError, match="failed to build an engine from body_model_fp32.onnx"):
        build_engines_for_export(export, "fp32", None, out,
                                 options=BuildOptions(use_cache=False, target=H100, build_fn=FakeBuild("body_model")))
    assert not out.exists() and not list(tmp_path.glob(".engines.staging-*"))


def test_out_may_not_be_the_export(tmp_path) -> None:
    export = make_export(tmp_path / "export")
    with pytest.raises(ConfigError, match="--out must be a new directory"):
        build_engines_for_export(export, "fp32", None, export, options=BuildOptions(target=H100, build_fn=FakeBuild()))


def test_engines_added_to_an_export_in_place(tmp_path) -> None:
    export = make_export(tmp_path / "export")
    manifest = Manifest.read(export)
    added = add_engines_to_export(export, manifest, "fp32",
                                  options=BuildOptions(use_cache=False, target=H100, build_fn=FakeBuild()))
    assert [a.path for a in added] == ["temporal_fp32.engine", "body_model_fp32.engine", "backbone_fp32.engine"]
    assert all(manifest.find(a.name, "engine", "fp32") is a for a in added)
    assert manifest.find("temporal", "onnx", "fp32").path == "temporal_fp32.onnx"
    assert added[0].extra["profile"] == {"min": 1, "opt": 2, "max": 8}  # the manifest's profile by default


def test_the_command_builds_with_tensorrt_present(tmp_path, fake_tensorrt, monkeypatch) -> None:
    monkeypatch.setenv("HMR_TRT_CACHE", str(tmp_path / "cache"))
    export, out = make_export(tmp_path / "export"), tmp_path / "out"
    result = runner.invoke(app, [str(export), "--precision", "fp16", "--batch", "1:2:4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "engines in" in result.output and "body_model" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(a["path"] for a in manifest["artifacts"] if a["kind"] == "engine") == [
        "backbone_fp16.engine", "body_model_fp16.engine", "temporal_fp16.engine"]
    assert len(fake_tensorrt.requests) == 3 and (tmp_path / "cache").is_dir()


def test_the_command_builds_one_onnx_file(tmp_path, fake_tensorrt) -> None:
    export, out = make_export(tmp_path / "export"), tmp_path / "out"
    onnx_file = export / "temporal_fp16.onnx"
    result = runner.invoke(app, [str(onnx_file), "--precision", "fp16", "--out", str(out), "--no-cache"])
    assert result.exit_code == 0, result.output
    manifest = Manifest.read(out)
    engine = manifest.find("temporal", "engine", "fp16")
    assert engine is not None and (out / engine.path).is_file()
    assert (out / manifest.find("temporal", "onnx", "fp16").path).resolve() == onnx_file.resolve()
    assert engine.extra["profile"] == {"min": 1, "opt": 8, "max": 64}  # no profile metadata: the default
    assert fake_tensorrt.requests[0].precision == "fp16" and os.path.isabs(engine.extra["engine"]["source"])


def test_doctor_names_what_is_missing() -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "hmr_trt.engines.doctor"], capture_output=True, text=True)
    if proc.returncode == 0:  # a machine with TensorRT and a GPU
        assert "TensorRT" in proc.stdout
    else:
        assert proc.returncode == 1 and "TensorRT is not installed" in proc.stdout
