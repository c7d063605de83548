"""Nothing unverified runs: every graph trt-run, trt-build and trt-triton open is checked against manifest.json.

Real tiny exports (GLoT and MPS-Net, tiny configs) made by trt-export's job; the swapped graph is MPS-Net's
temporal ONNX copied over GLoT's, the contradicting contract a manifest edited to window 8 while the ONNX
takes 16. Each case runs the real command and asserts its one-line message, its exit code and the files
left. The TensorRT route is run up to where a GPU is needed: trt-build's checks before TensorRT, and the
checks trt-run makes on an engine before TensorRT deserializes it (deserializing and comparing the
engine's own inputs and outputs: tests/engines/test_builder.py with the simulated TensorRT, and a GPU).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hmr_trt import registry
from hmr_trt.errors import GraphError, HmrTrtError
from hmr_trt.manifest import Artifact, Manifest, sha256_of
from hmr_trt.runtime import graph_loader
from hmr_trt.runtime.engine_loader import EngineInfo, verify_engine
from hmr_trt.runtime.graph_loader import (
    check_contract,
    contract_from_manifest,
    contract_problems,
    file_sha256,
    graph_from_manifest,
)
from hmr_trt.runtime.onnx_wire import read_onnx_info
from hmr_trt.runtime.trt_compat import Target

runner = CliRunner()
H100 = Target("10.3.0", "NVIDIA H100 80GB HBM3", "sm_90")


def _plain(cfg):
    """The plain seeded draw (these tests check verification, not weights): the tiny models shaped like trained
    ones move less than parity's 50 mm floor over 2 random windows."""
    return dataclasses.replace(cfg, trained_like=False)


def _export(name: str, out: Path) -> Path:
    pytest.importorskip("torch")
    from hmr_trt.export.pipeline import ExportOptions, run_export
    from hmr_trt.profile import ShapeProfile

    run_export(ExportOptions(out=out, model=name, config=_plain(registry.adapter(name).tiny_config()), with_backbone=False,
                             profile=ShapeProfile(1, 2, 4), parity_windows=2, build_engines=False, step=False))
    return out


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("graphs")
    return {name: _export(name, root / name) for name in ("glot", "mpsnet")}


def tree(folder: Path) -> dict:
    """Every file under ``folder`` with its sha256: what a failed command must leave as it was."""
    return {str(p.relative_to(folder)): sha256_of(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def swapped(exports: dict, tmp_path: Path) -> Path:
    """GLoT's export with its temporal ONNX replaced by MPS-Net's (the manifest untouched)."""
    export = tmp_path / "glot"
    shutil.copytree(exports["glot"], export)
    shutil.copyfile(exports["mpsnet"] / "mpsnet_temporal_fp32.onnx", export / "glot_temporal_fp32.onnx")
    return export


def contradicting(exports: dict, tmp_path: Path, graph_too: bool) -> Path:
    """GLoT's export whose manifest says window 8 (and, ``graph_too``, a temporal graph of 8 frames); the ONNX takes 16."""
    export = tmp_path / "glot8"
    shutil.copytree(exports["glot"], export)
    data = json.loads((export / "manifest.json").read_text())
    data["contract"]["window"] = 8
    if graph_too:
        temporal = next(g for g in data["contract"]["graphs"] if g["name"] == "temporal")
        temporal["inputs"][0]["shape"][1] = 8
    (export / "manifest.json").write_text(json.dumps(data))
    return export


def features(tmp_path: Path, width: int) -> Path:
    path = tmp_path / "features.npz"
    np.savez(path, track_0=np.random.default_rng(0).standard_normal((20, width)).astype(np.float32))
    return path


def trt_run(export: Path, feats: Path, out: Path, *extra: str):
    from hmr_trt.runtime.cli import app

    result = runner.invoke(app, ["--features", str(feats), "--export", str(export), "--out", str(out), "--quiet",
                                 *extra])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    return result, errors


def assert_refused(result, errors, match: str, out: Path) -> None:
    assert result.exit_code == 1, result.output
    assert len(errors) == 1 and match in errors[0], result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*")), "nothing may be written"


# ------------------------------------------------------------------ ONNX Runtime route (trt-run)


def test_trt_run_refuses_a_swapped_graph_before_the_first_frame(exports, tmp_path) -> None:
    feats = features(tmp_path, registry.adapter("glot").tiny_config().feature_dim)
    ok, _ = trt_run(exports["glot"], feats, tmp_path / "ok", "--backend", "onnxruntime")
    assert ok.exit_code == 0 and (tmp_path / "ok" / "summary.json").is_file(), ok.output  # the untouched export runs
    export = swapped(exports, tmp_path)
    before = tree(export)
    out = tmp_path / "run"
    result, errors = trt_run(export, feats, out, "--backend", "onnxruntime")
    assert_refused(result, errors, f"{export / 'glot_temporal_fp32.onnx'} is not the file {export / 'manifest.json'} "
                   "records for the temporal graph (it is mpsnet's temporal graph, not glot's temporal): its sha256 "
                   "differs", out)
    assert tree(export) == before


@pytest.mark.parametrize("graph_too", [False, True], ids=["contract-window", "contract-graph"])
def test_trt_run_refuses_a_contract_that_contradicts_its_graphs(exports, tmp_path, graph_too) -> None:
    export = contradicting(exports, tmp_path, graph_too)
    before = tree(export)
    out = tmp_path / "run"
    result, errors = trt_run(export, features(tmp_path, 64), out, "--backend", "onnxruntime")
    if graph_too:  # the contract agrees with itself, not with the ONNX file
        match = (f"{export / 'glot_temporal_fp32.onnx'} contradicts the glot contract in {export / 'manifest.json'} "
                 "(temporal graph): input features is float32 (batch, 16, 64), the contract says float32 (batch, 8, 64)")
    else:
        match = (f"the glot contract in {export / 'manifest.json'} contradicts itself: window is 8 but its temporal "
                 "graph takes features (batch, 16, 64)")
    assert_refused(result, errors, match, out)
    assert tree(export) == before


def test_open_backends_verifies_every_graph_it_opens(exports, tmp_path) -> None:
    """The body model too (any graph, not only the model graph): one changed byte is a different file."""
    from hmr_trt.runtime.backends_select import open_backends

    export = tmp_path / "glot"
    shutil.copytree(exports["glot"], export)
    body = export / "body_model_fp32.onnx"
    data = bytearray(body.read_bytes())
    data[-1] ^= 1
    body.write_bytes(bytes(data))
    with pytest.raises(GraphError, match=r"body_model_fp32.onnx is not the file .* records for the body_model graph: "
                                         r"its sha256 differs"):
        with open_backends(export, "onnxruntime", need_backbone=False):
            pass
    manifest = Manifest.read(export)
    manifest.find("body_model").sha256 = ""  # a blanked checksum is not a pass
    manifest.write(export)
    with pytest.raises(GraphError, match=r"manifest.json records no sha256 for body_model_fp32.onnx"):
        with open_backends(export, "onnxruntime", need_backbone=False):
            pass
    body.unlink()
    with pytest.raises(GraphError, match=r"body_model_fp32.onnx \(body_model graph listed in .*manifest.json\): "
                                         "not found"):
        with open_backends(export, "onnxruntime", need_backbone=False):
            pass


# ------------------------------------------------------------------ TensorRT route


@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError: trt-build stops there


def trt_build(source: Path, out: Path):
    from hmr_trt.engines.cli import app

    result = runner.invoke(app, [str(source), "--precision", "fp32", "--out", str(out)])
    return result, [line for line in result.output.splitlines() if line.startswith("error:")]


def test_trt_build_verifies_graphs_before_it_needs_tensorrt(exports, tmp_path, no_tensorrt) -> None:
    """trt-build's checks run before TensorRT: the untouched export gets as far as "needs TensorRT" (building
    needs a GPU: tests/gpu); the swapped graph and the contradicting contracts stop before, with their line."""
    result, errors = trt_build(exports["glot"], tmp_path / "ok")
    assert result.exit_code == 1 and "trt-build needs TensorRT and an NVIDIA GPU" in errors[0], result.output
    cases = {"swapped": (swapped(exports, tmp_path), "glot_temporal_fp32.onnx is not the file"),
             "window": (contradicting(exports, tmp_path / "a", False), "contradicts itself: window is 8"),
             "graph": (contradicting(exports, tmp_path / "b", True), "input features is float32 (batch, 16, 64), "
                                                                     "the contract says float32 (batch, 8, 64)")}
    for name, (export, match) in cases.items():
        before, out = tree(export), tmp_path / f"engines-{name}"
        result, errors = trt_build(export, out)
        assert_refused(result, errors, match, out)
        assert tree(export) == before


def engine_export(exports: dict, tmp_path: Path, name: str = "glot") -> Path:
    """The tiny export with a temporal engine as trt-build records it (engine bytes, sidecar, manifest entry);
    the bytes are not a real engine: everything here runs before TensorRT reads them."""
    export = tmp_path / f"{name}-engines"
    shutil.copytree(exports[name], export)
    manifest = Manifest.read(export)
    onnx = manifest.find("temporal")
    engine = export / "temporal_fp32.engine"
    engine.write_bytes(f"engine built from {name}".encode())
    from hmr_trt.engines.sidecar import write_sidecar

    info = EngineInfo(H100.tensorrt_version, H100.gpu_name, H100.compute_capability, "fp32", manifest.profile,
                      onnx.sha256, "0.1.0", 1.0, graph="temporal", source=str(export),
                      engine_sha256=sha256_of(engine), engine_bytes=engine.stat().st_size)
    write_sidecar(engine, info)
    manifest.add(Artifact("temporal", engine.name, "engine", "fp32", info.engine_sha256, onnx.inputs, onnx.outputs,
                          extra={"engine": info.to_dict(), "onnx": onnx.path, "onnx_precision": "fp32"}))
    manifest.write(export)
    return export


def open_engine(export: Path) -> bytes:
    """What trt-run does with an engine before TensorRT deserializes it: the verified loader, then the bytes
    checked against the sidecar and the manifest (engine_loader.verify_engine, as engine_from_path calls it)."""
    manifest = Manifest.read(export)
    contract = check_contract(manifest.model_contract(), str(export / "manifest.json"))
    verified = graph_from_manifest(export, manifest, manifest.find("temporal", "engine"), contract)
    data, _ = verify_engine(verified.path, target=H100, manifest_sha256=verified.sha256)
    return data


def test_trt_run_engine_checks_before_deserializing(exports, tmp_path) -> None:
    export = engine_export(exports, tmp_path)
    assert open_engine(export) == b"engine built from glot"
    # an engine (with its sidecar) from MPS-Net's export copied over GLoT's
    other = engine_export(exports, tmp_path, "mpsnet")
    for suffix in ("", ".json"):
        shutil.copyfile(other / f"temporal_fp32.engine{suffix}", export / f"temporal_fp32.engine{suffix}")
    with pytest.raises(GraphError, match=r"temporal_fp32.engine was built from another ONNX than the temporal graph "
                                         r".*manifest.json records \(its sidecar's onnx_sha256 differs\)"):
        open_engine(export)
    # an engine replaced with its sidecar rewritten to match it: only the manifest still knows
    export = engine_export(exports, tmp_path / "b")
    engine = export / "temporal_fp32.engine"
    engine.write_bytes(b"another engine")
    sidecar = json.loads((export / "temporal_fp32.engine.json").read_text())
    sidecar.update(engine_sha256=sha256_of(engine), engine_bytes=engine.stat().st_size)
    (export / "temporal_fp32.engine.json").write_text(json.dumps(sidecar))
    with pytest.raises(GraphError, match="temporal_fp32.engine is not the engine its manifest.json records"):
        open_engine(export)


@pytest.mark.parametrize("graph_too", [False, True], ids=["contract-window", "contract-graph"])
def test_trt_run_engine_refused_under_a_contradicting_contract(exports, tmp_path, graph_too) -> None:
    export = engine_export(exports, tmp_path)
    data = json.loads((export / "manifest.json").read_text())
    data["contract"]["window"] = 8
    if graph_too:
        next(g for g in data["contract"]["graphs"] if g["name"] == "temporal")["inputs"][0]["shape"][1] = 8
    (export / "manifest.json").write_text(json.dumps(data))
    match = ("input features is float32 (batch, 16, 64), the contract says float32 (batch, 8, 64)" if graph_too
             else "contradicts itself: window is 8 but its temporal graph takes features (batch, 16, 64)")
    with pytest.raises(GraphError) as err:
        open_engine(export)
    assert match in str(err.value) and "\n" not in str(err.value)


@pytest.mark.gpu
@pytest.mark.trt
def test_trt_run_tensorrt_route_on_real_engines(exports, tmp_path) -> None:
    """On a GPU: real engines from the tiny exports; trt-run --backend tensorrt runs GLoT's, refuses MPS-Net's
    engine copied over it, and (the export's ONNX gone, so only TensorRT can tell) a contract the engine contradicts."""
    from hmr_trt.runtime.trt_compat import trt_available

    ok, why = trt_available()
    if not ok:
        pytest.skip(f"deserializing engines and comparing their own inputs and outputs needs TensorRT and a GPU: {why}")
    from hmr_trt.engines.export_engines import BuildOptions, build_engines_for_export

    engines = {}
    for name in ("glot", "mpsnet"):
        engines[name] = tmp_path / f"{name}-engines"
        build_engines_for_export(exports[name], "fp32", None, engines[name],
                                 options=BuildOptions(cache_dir=tmp_path / "cache"))
    feats = features(tmp_path, 64)
    good, _ = trt_run(engines["glot"], feats, tmp_path / "ok", "--backend", "tensorrt")
    assert good.exit_code == 0, good.output
    export = tmp_path / "glot-swapped"
    shutil.copytree(engines["glot"], export)
    for suffix in ("", ".json"):
        shutil.copyfile(engines["mpsnet"] / f"temporal_fp32.engine{suffix}", export / f"temporal_fp32.engine{suffix}")
    result, errors = trt_run(export, feats, tmp_path / "run", "--backend", "tensorrt")
    assert_refused(result, errors, "temporal_fp32.engine was built from another ONNX", tmp_path / "run")
    # the engine folder without its export (ONNX gone): the contract and the manifest's entry say 8 frames
    alone = tmp_path / "alone"
    shutil.copytree(engines["glot"], alone)
    data = json.loads((alone / "manifest.json").read_text())
    data["contract"]["window"] = 8
    next(g for g in data["contract"]["graphs"] if g["name"] == "temporal")["inputs"][0]["shape"][1] = 8
    for art in data["artifacts"]:
        if art["name"] == "temporal":
            art["inputs"][0]["shape"][1] = 8
            art["path"] = art["path"] if art["kind"] == "engine" else "gone.onnx"
    (alone / "manifest.json").write_text(json.dumps(data))
    result, errors = trt_run(alone, feats, tmp_path / "run2", "--backend", "tensorrt")
    assert_refused(result, errors, "temporal_fp32.engine contradicts the contract of its export (temporal graph): "
                   "input features is float32 (?, 16, 64), the contract says float32 (batch, 8, 64)", tmp_path / "run2")


# ------------------------------------------------------------------ Triton repository writer


def test_trt_triton_copies_only_verified_graphs(exports, tmp_path) -> None:
    from hmr_trt.engines.triton_cli import app

    export = swapped(exports, tmp_path)
    before, out = tree(export), tmp_path / "repo"
    result = runner.invoke(app, [str(export), "--out", str(out)])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert_refused(result, errors, "glot_temporal_fp32.onnx is not the file", out)
    assert tree(export) == before
    result = runner.invoke(app, [str(exports["glot"]), "--out", str(out)])
    assert result.exit_code == 0 and (out / "glot_temporal" / "1" / "model.onnx").is_file(), result.output


def test_the_cpu_triton_server_serves_only_verified_graphs(exports, tmp_path, capsys) -> None:
    """python -m hmr_trt.runtime.triton_serve verifies every graph before it imports PyTriton or binds a port."""
    from hmr_trt.runtime.triton_serve import main

    export = swapped(exports, tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main([str(export), "--http-port", "1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.count("\n") == 1 and err.startswith("error: ") and \
        "glot_temporal_fp32.onnx is not the file" in err, err
    export = contradicting(exports, tmp_path, graph_too=False)
    with pytest.raises(GraphError, match="contradicts itself: window is 8"):
        from hmr_trt.runtime.triton_serve import serve

        serve(export, http_port=1)


# ------------------------------------------------------------------ the pieces


def test_onnx_wire_reads_what_the_onnx_package_reads(exports) -> None:
    onnx = pytest.importorskip("onnx")
    for path in sorted(exports["glot"].glob("*.onnx")):
        model = onnx.load(str(path), load_external_data=False)

        def io(values):
            return [(v.name, tuple(d.dim_value if d.HasField("dim_value") else d.dim_param
                                   for d in v.type.tensor_type.shape.dim)) for v in values]

        info = read_onnx_info(path)
        assert [(t.name, t.shape) for t in info.inputs] == io(model.graph.input)
        assert [(t.name, t.shape) for t in info.outputs] == io(model.graph.output)
        assert {t.dtype for t in info.inputs + info.outputs} == {"float32"}
        assert info.metadata == {p.key: p.value for p in model.metadata_props}


def test_registered_contracts_agree_with_themselves() -> None:
    for name in registry.names():
        adapter = registry.adapter(name)
        assert contract_problems(registry.contract(name)) == [], name
        assert contract_problems(adapter.contract_for(adapter.tiny_config())) == [], name


def test_sha256_is_computed_once_per_file_and_again_when_it_changes(tmp_path, monkeypatch) -> None:
    calls = []
    real = graph_loader.sha256_of
    monkeypatch.setattr(graph_loader, "sha256_of", lambda p: calls.append(p) or real(p))
    path = tmp_path / "g.onnx"
    path.write_bytes(b"a" * 100)
    old = time.time() - 60
    os.utime(path, (old, old))
    assert file_sha256(path) == file_sha256(path) == sha256_of(path) and len(calls) == 1
    path.write_bytes(b"b" * 100)  # same size, new content, new mtime
    os.utime(path, (old + 1, old + 1))
    assert file_sha256(path) == sha256_of(path) and len(calls) == 2
    path.write_bytes(b"c" * 100)  # modified just now: within the timestamp granularity, hashed every time
    file_sha256(path), file_sha256(path)
    assert len(calls) == 4


def test_a_manifest_without_a_contract_is_refused_by_the_verified_loader(exports, tmp_path) -> None:
    manifest = Manifest.read(exports["glot"])
    manifest.contract = {}
    with pytest.raises(HmrTrtError, match="records no model contract"):
        contract_from_manifest(manifest)
