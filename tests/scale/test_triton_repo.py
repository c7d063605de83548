"""trt-triton: every generated config.pbtxt parses with Triton's own model-config protobuf and agrees with
the exported graphs (names, shapes, batch sizes), the ensemble wires its members' real tensor names, and
bad requests fail with one line."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from hmr_trt.engines.sidecar import EngineInfo, write_sidecar
from hmr_trt.errors import HmrTrtError
from hmr_trt.manifest import Artifact, Manifest, sha256_of

pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] (the triton extra) brings Triton's model-config protobuf")
from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2  # noqa: E402

from hmr_trt.engines.triton_repo import RepoOptions, repository_from_export  # noqa: E402


def parse(path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def repo(full_export, tmp_path_factory):
    export_dir, _ = full_export
    out = tmp_path_factory.mktemp("triton") / "repo"
    written = repository_from_export(export_dir, out)
    return export_dir, out, written


def test_every_config_parses_and_matches_its_graph(repo) -> None:
    export_dir, out, written = repo
    manifest = Manifest.read(export_dir)
    contract = manifest.model_contract()
    window, max_windows = contract.window, manifest.profile["max"]
    assert contract.emit == "all"  # the middle-emitting rule: test_middle_emitting_plans_match_their_engine_profiles
    assert set(written) >= {f"{contract.name}_{g.name}" for g in contract.graphs}
    for graph in contract.graphs:
        cfg = parse(out / f"{contract.name}_{graph.name}" / "config.pbtxt")
        assert cfg.platform == "onnxruntime_onnx" and (out / cfg.name / "1" / "model.onnx").is_file()
        rows = {"body_model": len(contract.emit_positions()), "backbone": window}.get(graph.name, 1)
        assert contract.rows_per_item(graph) == rows
        assert cfg.max_batch_size == max_windows * rows
        art = manifest.find(graph.name, "onnx", "fp32")
        assert [i.name for i in cfg.input] == [t.name for t in art.inputs]
        assert [list(i.dims) for i in cfg.input] == [t.shape[1:] for t in art.inputs]  # batch axis left out
        assert [list(o.dims) for o in cfg.output] == [t.shape[1:] for t in art.outputs]
        assert cfg.dynamic_batching.preferred_batch_size[0] == manifest.profile["opt"] * rows
        assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU


def test_ensemble_wires_real_member_tensors(repo) -> None:
    _, out, written = repo
    ensembles = [name for name, plat in written.items() if plat == "ensemble"]
    assert len(ensembles) == 1
    cfg = parse(out / ensembles[0] / "config.pbtxt")
    produced = {i.name for i in cfg.input}
    for step in cfg.ensemble_scheduling.step:
        member = parse(out / step.model_name / "config.pbtxt")
        assert set(step.input_map) == {i.name for i in member.input}  # every member input fed
        assert set(step.input_map.values()) <= produced  # from the request or an earlier step
        assert set(step.output_map) <= {o.name for o in member.output}
        produced |= set(step.output_map.values())
    assert {o.name for o in cfg.output} <= produced
    twin = parse(out / cfg.ensemble_scheduling.step[1].model_name / "config.pbtxt")
    assert twin.max_batch_size == 0 and list(twin.input[0].reshape.shape)[0] == 1  # one window, reshaped (1, T, C)


def test_plans_map_compute_capabilities(full_export, tmp_path) -> None:
    export_dir, _ = full_export
    fake = tmp_path / "export"
    shutil.copytree(export_dir, fake)
    manifest = Manifest.read(fake)
    for art in list(manifest.artifacts):
        for cc in ("sm_90", "sm_89"):
            path = f"{art.name}_{cc}.engine"
            (fake / path).write_bytes(b"plan bytes for " + cc.encode())
            info = EngineInfo("10.3.0", "", cc, "fp32", manifest.profile, art.sha256, "0.1.0", 0.0, graph=art.name,
                              engine_sha256=sha256_of(fake / path))
            write_sidecar(fake / path, info)  # trt-triton verifies engines (sha256, sidecar) before copying them
            manifest.artifacts.append(Artifact(art.name, path, "engine", "fp32", info.engine_sha256, art.inputs,
                                               art.outputs, extra={"engine": info.to_dict()}))
    manifest.write(fake)
    written = repository_from_export(fake, tmp_path / "repo")
    contract = manifest.model_contract()
    cfg = parse(tmp_path / "repo" / f"{contract.name}_{contract.model_graph.name}" / "config.pbtxt")
    assert cfg.platform == "tensorrt_plan" and set(written.values()) <= {"tensorrt_plan", "ensemble"}
    assert dict(cfg.cc_model_filenames) == {"9.0": "model_sm90.plan", "8.9": "model_sm89.plan"}
    assert (tmp_path / "repo" / cfg.name / "1" / "model_sm90.plan").read_bytes() == b"plan bytes for sm_90"
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU


def test_step_graph_gets_sequence_batching_with_implicit_state() -> None:
    from hmr_trt.contract import GraphSpec, TensorSpec
    from hmr_trt.engines.triton_repo import graph_config

    step = GraphSpec("step", "step", (TensorSpec("features", ("batch", 64)), TensorSpec("state", ("batch", 16, 64)),
                                      TensorSpec("start", ("batch", 1))),
                     (TensorSpec("cam", ("batch", 3)), TensorSpec("state_out", ("batch", 16, 64))))
    cfg = text_format.Parse(graph_config("toy_step", step, "onnxruntime_onnx", 64, 8, RepoOptions(), "gpu"),
                            model_config_pb2.ModelConfig())
    assert [i.name for i in cfg.input] == ["features"] and [o.name for o in cfg.output] == ["cam"]  # start: a control
    state = cfg.sequence_batching.state[0]
    assert (state.input_name, state.output_name, list(state.dims)) == ("state", "state_out", [16, 64])
    assert state.initial_state[0].zero_data
    control = cfg.sequence_batching.control_input[0]
    assert control.name == "start" and control.control[0].kind == \
        model_config_pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START
    # a recurrent step graph (VIBE: hidden -> next_hidden) keeps its hidden state in the server, no control input
    gru = GraphSpec("step", "step", (TensorSpec("features", ("batch", 64)), TensorSpec("hidden", ("batch", 2, 32))),
                    (TensorSpec("cam", ("batch", 3)), TensorSpec("next_hidden", ("batch", 2, 32))))
    cfg = text_format.Parse(graph_config("vibe_step", gru, "onnxruntime_onnx", 64, 8, RepoOptions(), "gpu"),
                            model_config_pb2.ModelConfig())
    assert [i.name for i in cfg.input] == ["features"] and not cfg.sequence_batching.control_input
    assert (cfg.sequence_batching.state[0].input_name, cfg.sequence_batching.state[0].output_name) == \
        ("hidden", "next_hidden")


def test_plans_refused_without_engines(full_export, tmp_path) -> None:
    export_dir, _ = full_export
    with pytest.raises(HmrTrtError, match="holds no TensorRT engines: build them first"):
        repository_from_export(export_dir, tmp_path / "repo", RepoOptions(platform="tensorrt_plan"))
    assert not (tmp_path / "repo").exists()


def test_cli_one_line_error_and_nothing_written(full_export, tmp_path) -> None:
    export_dir, _ = full_export
    (tmp_path / "mine.txt").write_text("a user's file")
    result = subprocess.run([sys.executable, "-m", "hmr_trt.engines.triton_cli", str(export_dir), "--out",
                             str(tmp_path), "--platform", "tensorrt_plan"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and result.stderr.startswith("error:")
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]
    ok = subprocess.run([sys.executable, "-m", "hmr_trt.engines.triton_cli", str(export_dir), "--out",
                         str(tmp_path / "repo")], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    contract = Manifest.read(export_dir).model_contract()
    assert {p.name for p in (tmp_path / "repo").iterdir()} >= {f"{contract.name}_{g.name}" for g in contract.graphs}


def _stamped_onnx(path, graph) -> None:
    """A one-node ONNX graph carrying hmr-trt's metadata (all trt-build checks before TensorRT itself)."""
    import onnx
    from onnx import TensorProto, helper

    ins = [t.name for t in graph.inputs]
    outs = [t.name for t in graph.outputs]
    shapes = {t.name: list(t.shape) for t in (*graph.inputs, *graph.outputs)}  # the contract's (the loader checks)
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes[n]) for n in ins + outs]
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", [ins[0]], [o]) for o in outs],
                                                graph.name, vi[:len(ins)], vi[len(ins):]),
                              opset_imports=[helper.make_opsetid("", 17)])
    for key, value in {"hmr_trt.graph": graph.name, "hmr_trt.version": "0.1.0"}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


@pytest.mark.parametrize("model", ["glot", "tcmr", "mpsnet", "coseg"])
def test_middle_emitting_plans_match_their_engine_profiles(model, tmp_path) -> None:
    """trt-build's engines (the real planning and profiles, the TensorRT build faked) and trt-triton's configs:
    every tensorrt_plan model's max_batch_size and preferred batch are its engine profile's max and opt."""
    from hmr_trt import registry
    from hmr_trt.engines.export_engines import BuildOptions, build_engines_for_export
    from hmr_trt.manifest import TensorSpec, sha256_of
    from hmr_trt.runtime.trt_compat import Target

    contract = registry.contract(model)
    export = tmp_path / "export"
    export.mkdir()
    manifest = Manifest(model=model, config={}, profile={"min": 1, "opt": 4, "max": 16}, contract=contract.to_dict())
    for graph in contract.graphs:
        if graph.role == "step":
            continue
        path = export / f"{graph.name}_fp32.onnx"
        _stamped_onnx(path, graph)
        manifest.add(Artifact(graph.name, path.name, "onnx", "fp32", sha256_of(path),
                              [TensorSpec(t.name, list(t.shape)) for t in graph.inputs],
                              [TensorSpec(t.name, list(t.shape)) for t in graph.outputs]))
    manifest.write(export)
    built = build_engines_for_export(
        export, "fp32", None, tmp_path / "engines",
        options=BuildOptions(cache_dir=tmp_path / "cache", target=Target("10.16.1", "NVIDIA H100", "sm_90"),
                             build_fn=lambda request: b"plan " + request.onnx_path.name.encode()))
    repository_from_export(tmp_path / "engines", tmp_path / "repo", RepoOptions(platform="tensorrt_plan",
                                                                               precision="fp32"))
    engines = {a.name: a.extra["engine"]["profile"] for a in built.artifacts if a.kind == "engine"}
    assert set(engines) == {g.name for g in contract.graphs if g.role != "step"}
    for name, profile in engines.items():
        cfg = parse(tmp_path / "repo" / f"{model}_{name}" / "config.pbtxt")
        assert cfg.platform == "tensorrt_plan"
        assert (cfg.max_batch_size, cfg.dynamic_batching.preferred_batch_size[0]) == (profile["max"], profile["opt"]), name
    body = engines["body_model"]
    emitted = 1 if contract.emit == "middle" else contract.window
    assert (body["opt"], body["max"]) == (4 * emitted, 16 * emitted)  # windows x emitted frames, not windows x T
    assert engines["backbone"]["max"] == 16 * contract.window
