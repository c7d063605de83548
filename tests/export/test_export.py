"""ONNX export of the full model: graph contract, manifest, parity in millimetres, batch invariance."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch

from hmr_trt.engines.preflight import opset_of, validate_onnx
from hmr_trt.errors import InputSpecError
from hmr_trt.export import onnx_export, parity
from hmr_trt.export.models.coseg import export as coseg_export
from hmr_trt.export.models.coseg.config import TINY
from hmr_trt.export.models.coseg.model import build_model
from hmr_trt.export.pipeline import body_models, check_feature_windows, ort_runner
from hmr_trt.manifest import Manifest, sha256_of
from hmr_trt.profile import ShapeProfile


def test_manifest_lists_every_artifact(full_export) -> None:
    out, result = full_export
    manifest = Manifest.read(out)
    assert {a.name for a in manifest.artifacts} == {"temporal", "body_model", "backbone"}
    for art in manifest.artifacts:
        assert art.kind == "onnx" and art.precision == "fp32"
        assert sha256_of(out / art.path) == art.sha256
        assert art.inputs and art.outputs
    temporal = manifest.find("temporal")
    assert [t.name for t in temporal.inputs] == ["features"]
    assert temporal.inputs[0].shape == ["batch", 16, 2048]
    assert [t.name for t in temporal.outputs] == ["pose_rotmat", "betas", "cam"]
    assert manifest.config["window"] == 16 and manifest.profile == {"min": 1, "opt": 8, "max": 64}
    assert "torch" in manifest.tools and "onnxruntime" in manifest.tools
    assert any("NOT SMPL" in n for n in manifest.notes)
    json.loads((out / "manifest.json").read_text())  # plain JSON a user can open elsewhere


def test_fp32_parity_in_millimetres(full_export) -> None:
    _, result = full_export
    report = result.reports[0]
    assert report.passed, report.failures
    assert {r["set"] for r in report.rows} == {"random", "video"}
    assert {r["batch"] for r in report.rows} == {1, 2, 7}
    for row in report.rows:
        assert row["vertices_mean_mm"] < 0.01 and row["joints_mean_mm"] < 0.01
        assert row["vertices_max_mm"] < 0.1
    # parity means something only if outputs move like real motion
    assert min(report.spread_mm.values()) >= 50.0
    assert report.batch_invariance["onnxruntime"] < 1e-3 and report.batch_invariance["torch"] < 1e-3


def test_exported_graphs_keep_the_contract(full_export) -> None:
    out, _ = full_export
    for name in ("coseg_temporal_fp32.onnx", "body_model_fp32.onnx", "backbone_fp32.onnx"):
        model = onnx.load(str(out / name), load_external_data=False)
        ops = {n.op_type for n in model.graph.node}
        assert not ops & {"DFT", "Einsum"}, name
        assert opset_of(model) == 17
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic leading axis
        types = {v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.output)}
        assert types == {onnx.TensorProto.FLOAT}
        assert onnx_export.graph_metadata(model)["graph"] in ("temporal", "body_model", "backbone")


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_both_exporters_match_torch(tmp_path, exporter: str) -> None:
    """Small config, both exporters: ORT == torch at batches 1, 2, 7, and batch invariance."""
    model = build_model(TINY.with_(fde_mode="matrix"))
    path = tmp_path / "t.onnx"
    coseg_export.export_temporal(model, path, ShapeProfile(1, 4, 8), exporter)
    validate_onnx(path, max_opset=None)
    body, body_ref, _ = body_models(None)
    body_path = tmp_path / "b.onnx"
    onnx_export.export_body_model(body, body_path, 256, exporter)
    windows = {"random": parity.random_windows(7, 16, TINY.feature_dim)}
    refs = {"random": parity.reference_outputs(build_model(TINY), body_ref, windows["random"])}
    stack, run = ort_runner({"temporal": path, "body_model": body_path})
    with stack:
        report = parity.compare(run, refs, windows, precision="fp32")
    assert report.passed, report.failures
    assert report.batch_invariance["onnxruntime"] < 1e-3


def test_parity_catches_a_wrong_graph(tmp_path) -> None:
    """The harness must fail when the exported graph computes something else (here: other weights)."""
    other = build_model(TINY.with_(fde_mode="matrix", seed=7))
    path = tmp_path / "t.onnx"
    coseg_export.export_temporal(other, path, ShapeProfile(1, 4, 8))
    body, body_ref, _ = body_models(None)
    onnx_export.export_body_model(body, tmp_path / "b.onnx", 256)
    windows = {"random": parity.random_windows(3, 16, TINY.feature_dim)}
    refs = {"random": parity.reference_outputs(build_model(TINY), body_ref, windows["random"])}
    stack, run = ort_runner({"temporal": path, "body_model": tmp_path / "b.onnx"})
    with stack:
        report = parity.compare(run, refs, windows, batch_sizes=(1, 3))
    assert not report.passed
    assert any("mean vertex drift" in f for f in report.failures)


def test_spread_check_rejects_constant_outputs() -> None:
    report = parity.ParityReport("fp32", 0.01, spread_mm={"random": 3.0})
    parity.check_spread(report)
    assert report.failures and "barely move" in report.failures[0]


SPREADS = [({"random": 44.9, "video": 70.0}, []), ({"random": 80.0, "video": 20.0}, ["video"]),
           ({"random": 49.0}, ["random"]), ({"random": 60.0, "other": 10.0}, ["other"])]


@pytest.mark.parametrize(("spread", "fails"), SPREADS)
def test_spread_check_holds_the_video_windows_to_it_when_there_are_some(spread, fails) -> None:
    """The sample video's windows must move >= 50 mm (random windows beside them may move less: a network shaped
    like a trained one moves less on noise); without a video set every set must."""
    report = parity.ParityReport("fp32", 0.01, spread_mm=spread)
    parity.check_spread(report)
    assert [f.split(":")[0] for f in report.failures] == fails


def test_drift_and_spread_units() -> None:
    a = np.zeros((2, 4, 5, 3))
    b = a.copy()
    b[..., 0] += 0.002  # 2 mm along x
    assert parity.drift_mm(b, a) == pytest.approx((2.0, 2.0))
    moving = np.zeros((2, 1, 1, 3))
    moving[1, ..., 1] = 0.1  # two windows 100 mm apart: each is 50 mm from the mean
    assert parity.motion_spread_mm(moving) == pytest.approx(50.0)


def test_wrong_feature_windows_are_refused() -> None:
    cfg = TINY
    with pytest.raises(InputSpecError, match="feature width 10"):
        check_feature_windows(np.zeros((1, 16, 10), np.float32), cfg, "x")
    with pytest.raises(InputSpecError, match="window length 8"):
        check_feature_windows(np.zeros((1, 8, 64), np.float32), cfg, "x")


def test_fft_model_is_refused_by_the_exporter(tmp_path) -> None:
    from hmr_trt.errors import ConfigError

    with pytest.raises(ConfigError, match="fde_mode='matrix'"):
        coseg_export.export_temporal(build_model(TINY), tmp_path / "x.onnx", ShapeProfile())


def test_torch_reference_runs_fft(full_export, monkeypatch) -> None:
    """The reference runs torch.fft; the exported module runs the matrix form: they agree (parity passed)."""
    from hmr_trt import registry

    _, result = full_export
    assert result.manifest.config["fde_mode"] == "fft"
    adapter = registry.adapter("coseg")
    calls = []
    real_fft = torch.fft.fft
    monkeypatch.setattr(torch.fft, "fft", lambda *a, **k: calls.append(1) or real_fft(*a, **k))
    reference = adapter.reference(TINY)
    x = adapter.example_inputs(TINY, "temporal", 2)
    reference(*x)
    assert calls, "the torch reference must compute FDE with torch.fft"
    calls.clear()
    exportable = adapter.exportable(reference, "temporal")
    for a, b in zip(exportable(*x), reference(*x)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert len(calls) == 1, "only the reference call may use torch.fft"


def test_graphs_declare_every_dimension_but_the_batch(full_export) -> None:
    """betas and vertices used to come out as [batch, Reshapebetas_dim_1, ...]: now the contract's shapes."""
    out, _ = full_export
    manifest = Manifest.read(out)
    contract = manifest.model_contract()
    for graph in contract.graphs:
        art = manifest.find(graph.name)
        model = onnx.load(str(out / art.path), load_external_data=False)
        declared = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
                    for v in list(model.graph.input) + list(model.graph.output)}
        for t in graph.inputs + graph.outputs:
            assert declared[t.name] == [graph.batch_axis, *t.shape[1:]], (graph.name, t.name)
    assert contract.graph("temporal").outputs[1].shape == ("batch", 16, 10)
    body = contract.graph("body_model")
    assert body.outputs[0].shape[1] == body_models(None)[0].num_vertices  # from the body model actually used


def test_a_contract_that_disagrees_with_the_graph_is_refused(tmp_path) -> None:
    from hmr_trt import registry
    from hmr_trt.errors import ExportError

    adapter = registry.adapter("coseg")
    spec = adapter.contract_for(TINY).graph("temporal")
    wrong = dataclasses.replace(spec, outputs=(dataclasses.replace(spec.outputs[0], shape=("batch", 16, 23, 3, 3)),
                                               *spec.outputs[1:]))
    module = adapter.exportable(adapter.reference(TINY), "temporal")
    with pytest.raises(ExportError, match="pose_rotmat"):
        onnx_export.onnx_from_module(module, wrong, adapter.example_inputs(TINY, "temporal", 2), tmp_path / "t.onnx")


def test_sets_outside_judged_are_reported_not_judged(tmp_path) -> None:
    """FP16/INT8 are judged on real feature windows only; other sets stay in the table, marked."""
    other = build_model(TINY.with_(fde_mode="matrix", seed=7))
    coseg_export.export_temporal(other, tmp_path / "t.onnx", ShapeProfile(1, 4, 8))
    body, body_ref, _ = body_models(None)
    onnx_export.export_body_model(body, tmp_path / "b.onnx", 256)
    windows = {"random": parity.random_windows(2, 16, TINY.feature_dim)}
    refs = {"random": parity.reference_outputs(build_model(TINY), body_ref, windows["random"])}
    stack, run = ort_runner({"temporal": tmp_path / "t.onnx", "body_model": tmp_path / "b.onnx"})
    with stack:
        judged = parity.compare(run, refs, windows, precision="int8", batch_sizes=(1,))
        unjudged = parity.compare(run, refs, windows, precision="int8", batch_sizes=(1,), judged={"video"})
    assert not judged.passed and unjudged.passed
    assert unjudged.rows[0]["judged"] is False and unjudged.rows[0]["vertices_mean_mm"] > 0.4
    assert parity.ParityTable([unjudged]).lines()[0][1] == "random*"
