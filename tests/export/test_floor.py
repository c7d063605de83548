"""FP32 parity against the network's own float32 floor, for every family (window, frame, scene), on seeded
(well-conditioned) and on sensitive weights: the real ONNX Runtime export passes (within the goal or within
FLOOR_MULTIPLE x the floor), and deliberately wrong graphs - a weight 1% off, a biased head, a wrong decision
tensor - still fail. Tiny configs, the random parity set only, so ``make test`` runs the sensitive cases."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from hmr_trt import registry  # noqa: E402
from hmr_trt.export import onnx_export, parity, pipeline  # noqa: E402
from hmr_trt.export.models.decomr.adapter import save_released_format  # noqa: E402
from hmr_trt.export.models.instancehmr.checkpoint import write_released  # noqa: E402
from hmr_trt.export.models.instancehmr.model import InstanceHMR  # noqa: E402
from hmr_trt.profile import ShapeProfile  # noqa: E402

PROFILE = ShapeProfile(1, 4, 8)


def sensitive_reference(name: str, tmp: Path):
    """The tiny config with weights that make outputs sensitive (inputs x (1 +- 1e-4) move the mesh millimetres),
    loaded from a released-format checkpoint where the model has one."""
    adapter = registry.adapter(name)
    cfg = adapter.tiny_config()
    if name == "decomr":  # IUV and location heads 16x the plain seeded draw's gain
        path = tmp / "h36m_up3d.pt"
        save_released_format(adapter.reference(dataclasses.replace(cfg, head_gain=64.0, trained_like=False)), path)
        return cfg, adapter.reference(cfg, path)
    if name == "instancehmr":  # residual branches at full gain, maps 10x the seeded spread
        model = InstanceHMR(dataclasses.replace(cfg, residual_gain=1.0, output_std=3.0, trained_like=False))
        return cfg, adapter.reference(cfg, write_released(tmp / "sensitive.pkl", model.state_dict()))
    cfg = dataclasses.replace(cfg, head_gain=1.0)  # coseg: regressor heads 10x the seeded gain
    return cfg, adapter.reference(cfg)


class Setup:
    """One model's export pieces: graphs exported by the pipeline's own functions, parity windows, references."""

    def __init__(self, name: str, weights: str, tmp: Path) -> None:
        self.name, self.tmp = name, tmp
        self.adapter = adapter = registry.adapter(name)
        if weights == "sensitive":
            self.cfg, self.model = sensitive_reference(name, tmp)
        else:
            self.cfg = adapter.tiny_config()
            if name in PLAIN_DRAW:
                self.cfg = dataclasses.replace(self.cfg, trained_like=False)
            self.model = adapter.reference(self.cfg)
        contract = adapter.contract_for(self.cfg)
        self.body = self.body_ref = None
        if contract.body_model == "smpl":
            self.body, self.body_ref, _ = pipeline.body_models(None)
        self.contract = pipeline.exported_contract(contract, self.body, with_backbone=False)
        opts = pipeline.ExportOptions(out=tmp / "out", model=name, config=self.cfg, parity_windows=3,
                                      with_backbone=False, profile=PROFILE)
        job = pipeline._validate_options(opts)
        self.windows = pipeline.parity_sets(opts, job, self.contract, None)
        graph = self.contract.model_graph
        self.references = {k: parity.reference_outputs(self.model, self.body_ref, w, graph, self.contract)
                           for k, w in self.windows.items()}
        self.paths = {}
        body_graph = self.contract.graph_for("body_model")
        if body_graph is not None:
            self.paths[body_graph.name] = tmp / "body_model.onnx"
            frames = len(self.contract.emit_positions()) if self.contract.family == "window" else 64 + 4
            onnx_export.export_body_model(self.body, self.paths[body_graph.name], PROFILE.max * frames)
        self.paths[graph.name] = self.export(self.model, "model.onnx")

    def export(self, model, file: str) -> Path:
        graph = self.contract.model_graph
        path = self.tmp / file
        onnx_export.onnx_from_module(self.adapter.exportable(model, graph.name), graph,
                                     self.adapter.example_inputs(self.cfg, graph.name, 2), path, max_batch=PROFILE.max)
        return path

    def parity(self, model_onnx: Path) -> parity.ParityReport:
        pins = pipeline.Pins(self.adapter, self.model, self.body_ref, self.contract, self.tmp)
        paths = {**self.paths, self.contract.model_graph.name: model_onnx}
        return pipeline.fp32_parity(paths, self.references, self.windows, self.model, self.contract, pins)

    def wrong(self, edit, file: str) -> parity.ParityReport:
        """FP32 parity of a graph exported from a copy of the reference that ``edit`` changed."""
        other = copy.deepcopy(self.model)
        with torch.no_grad():
            edit(other)
        return self.parity(self.export(other, file))


def _scale(path: str, factor: float):
    def edit(model):
        model.get_parameter(path).mul_(factor)
    return edit


def _add(path: str, value: float):
    def edit(model):
        model.get_parameter(path).add_(value)
    return edit


# per family: a weight 1% off, a biased head, a wrong decision tensor (families with decisions); names are the
# released checkpoints' keys
WRONG = {
    "coseg": {"weight 1% off (first GRU)": _scale("stage2.te_h1.gru.weight_ih_l0", 1.01),
              "weight 1% off (regressor)": _scale("regressor.fc2.weight", 1.01),
              "biased head (pose)": _add("regressor.decpose.bias", 0.01)},
    "decomr": {"weight 1% off (ResNet, before the decisions)": _scale("CNet.resnet.layer2.0.conv2.weight", 1.01),
               "biased head (camera)": _add("LNet.camera.6.bias", 0.01),
               "wrong decision tensor (UV head)": _add("CNet.dp_uv_end.1.bias", 0.01)},
    "instancehmr": {"weight 1% off (backbone)": _scale("backbone.layer2.0.conv2.weight", 1.01),
                    "biased head (parameters)": _add("params_outconv.bias", 0.01),
                    "wrong decision tensor (center map, +0.01 everywhere: the same peaks)":
                        _add("final_layers.1.2.bias", 0.01)},
    # the other window architectures (transformer, bidirectional GRUs, non-local fusion, causal GRU) and the
    # frame family's ViT: seeded weights (no sensitive draw of their own)
    "glot": {"weight 1% off (global transformer)": _scale("global_modeling.trans.blocks.0.attn.proj.weight", 1.01),
             "biased head (global pose)": _add("global_modeling.regressor.decpose.bias", 0.01)},
    "tcmr": {"weight 1% off (GRU)": _scale("encoder.gru_cur.weight_ih_l0", 1.01),
             "biased head (pose)": _add("regressor.decpose.bias", 0.01)},
    "mpsnet": {"weight 1% off (non-local block)": _scale("nonlocalblock.conv_g.weight", 1.01),
               "biased head (pose)": _add("regressor.decpose.bias", 0.01)},
    "vibe": {"weight 1% off (GRU)": _scale("encoder.gru.weight_ih_l0", 1.01),
             "biased head (pose)": _add("regressor.decpose.bias", 0.01)},
    "hmr2": {"weight 1% off (ViT block MLP)": _scale("backbone.blocks.0.mlp.fc2.weight", 1.01),
             "biased head (pose)": _add("smpl_head.decpose.bias", 0.01)},
    # the keypoint model (frame family, no body model): judged on heatmaps and keypoints in crop pixels. On the
    # tiny seeded draw a ViT weight 1% off (patch embedding, block 0 or last MLP) moves the keypoints 0.0005-0.008
    # px, 16-600x their floor yet within the 0.01 px goal (measured), so the head's weight stands for it here
    "vitpose": {"weight 1% off (heatmap head)": _scale("keypoint_head.final_layer.weight", 1.01),
                "biased head (heatmaps)": _add("keypoint_head.final_layer.bias", 0.01)},
}
# the plain seeded draw (as the official-code fixtures): at the tiny config TCMR's weights shaped like trained
# ones put betas in the thousands (float32 round-off then moves the mesh 0.8 mm, more than a 1% GRU weight does)
PLAIN_DRAW = ("glot", "tcmr", "mpsnet", "vibe")
SENSITIVE = ("coseg", "decomr", "instancehmr")  # the models sensitive_reference draws sensitive weights for
CASES = [(name, weights) for name in WRONG for weights in (("seeded", "sensitive") if name in SENSITIVE else ("seeded",))]


@pytest.fixture(scope="module", params=CASES, ids=[f"{n}-{w}" for n, w in CASES])
def setup(request, tmp_path_factory) -> Setup:
    name, weights = request.param
    return Setup(name, weights, tmp_path_factory.mktemp(f"{name}-{weights}"))


def _failures(report: parity.ParityReport) -> list[str]:
    """The report's failures but the motion-spread check (tiny window models on random windows move < 50 mm)."""
    return [f for f in report.failures if "barely move" not in f]


def _margin(report: parity.ParityReport) -> float:
    """How far past its own float32 floor the worst figure of a report is: the largest ratio of a row's mean
    vertex drift, output max abs or decision-tensor max abs to that figure's floor (floors of 0 skipped)."""
    ratios = []
    for r in report.rows:
        f = report.floor[r["set"]]
        ratios.append(r["vertices_mean_mm"] / f["vertices_mean_mm"])
        ratios += [e["max_abs"] / f["outputs"][k] for k, e in r["outputs"].items() if f["outputs"].get(k)]
        dec = r.get("decisions", {}).get("decision_input_max_abs", {})
        ratios += [e / f["decisions"][k] for k, e in dec.items() if f["decisions"].get(k)]
    return max(ratios)


def _over(report: parity.ParityReport) -> float:
    """The worst judged row's mean vertex drift over its floor."""
    return max(r["vertices_mean_mm"] / r["floor_mean_mm"] for r in report.rows)


def test_the_export_passes_and_wrong_graphs_fail(setup) -> None:
    report = setup.parity(setup.paths[setup.contract.model_graph.name])
    floor = report.floor["random"]
    goal = report.goal_mean_vertex_mm
    assert not _failures(report), report.failures
    assert floor["vertices_mean_mm"] > 0 and set(floor["by"]) == {"inputs_mean_vertex_mm", "weights_mean_vertex_mm"}
    assert _over(report) < parity.FLOOR_MULTIPLE  # the export sits within the multiple of the floor
    verdict = report.verdict()
    assert verdict["floor_mean_vertex_mm"] == floor["vertices_mean_mm"] and verdict["floor_multiple"] == 10.0
    assert report.to_dict()["floor"]["random"]["vertices_mean_mm"] == floor["vertices_mean_mm"]
    if setup.contract.decisions:
        assert set(floor["decisions"]) == {d.name for d in setup.contract.decisions}
    print(setup.name, f"drift {report.worst():.3g} mm, floor {floor['vertices_mean_mm']:.3g} mm, goal {goal} mm, "
          f"conditioning {report.conditioning['perturbation_mean_vertex_mm']:.3g} mm")

    for label, edit in WRONG[setup.name].items():
        wrong = setup.wrong(edit, "wrong.onnx")
        assert _failures(wrong), f"{setup.name}: {label} passed FP32"
        # the floor rule does not forgive it: a figure of the wrong graph is over FLOOR_MULTIPLE x its own floor
        # (measured: 28x for the UV head biased by 0.01 on sensitive weights, 3e2-1e5x otherwise)
        assert _margin(wrong) > parity.FLOOR_MULTIPLE, (label, _margin(wrong))
        print(f"  {label}: {_margin(wrong):.3g} x its floor; {_failures(wrong)[0]}")
        if label.startswith("wrong decision"):
            assert any("decision tensor" in f for f in wrong.failures), wrong.failures


def test_sensitive_weights_need_the_floor(tmp_path) -> None:
    """The issue's case: sensitive DecoMR weights from a released-format checkpoint drift over the 0.01 mm goal
    in FP32 (as float32 allows, no more) and pass within the floor; the console says which rule it passed by."""
    from rich.console import Console

    from hmr_trt.export.cli import print_parity

    s = Setup("decomr", "sensitive", tmp_path)
    report = s.parity(s.paths["decomr"])
    assert report.passed, report.failures
    assert report.worst() > report.goal_mean_vertex_mm and report.passed_within() == "floor"
    assert report.conditioning["perturbation_mean_vertex_mm"] > 10.0  # inputs x (1 +- 1e-4): centimetres
    console = Console(record=True, width=400)
    print_parity(console, [report])
    text = console.export_text()
    assert "fp32 floor" in text and "x the float32 floor" in text and "(within 10 x the floor)" in text


def test_floor_is_pinned_to_the_references_own_decisions() -> None:
    """Models with decisions: the floor holds continuous round-off only (the perturbed reference is read with
    the unperturbed reference's decisions), so a flip the perturbation causes cannot inflate it."""
    adapter = registry.adapter("instancehmr")
    cfg = adapter.tiny_config()
    model = adapter.reference(cfg)
    contract = adapter.contract_for(cfg)
    _body, body_ref, _ = pipeline.body_models(None)
    feed = {"image": adapter.example_inputs(cfg, "maps", 2, seed=3)[0].numpy()}
    refs = {"random": parity.reference_outputs(model, body_ref, feed, contract.model_graph, contract)}
    floor = parity.float32_floor(model, body_ref, {"random": feed}, refs, contract.model_graph, contract, adapter)
    assert floor["random"]["pinned"] and floor["random"]["outputs"]["center_map"] == 0.0
    assert 0 < floor["random"]["decisions"]["centers"] < 1e-4
    assert 0 < floor["random"]["vertices_mean_mm"] < 0.01
    plain = parity.float32_floor(model, body_ref, {"random": feed}, refs, contract.model_graph, contract)
    assert not plain["random"]["pinned"] and plain["random"]["outputs"]["center_map"] > 0


def test_output_tiers_scale_with_their_floor() -> None:
    assert parity.tier(1e-3, None, "outputs", "x") == 1e-3
    assert parity.tier(1e-3, {"outputs": {"x": 1e-5}}, "outputs", "x") == 1e-3
    assert parity.tier(1e-3, {"outputs": {"x": 4e-4}}, "outputs", "x") == pytest.approx(4e-3)
    assert parity.tier(1e-4, {"decisions": {"iuv": 2e-5}}, "decisions", "iuv") == pytest.approx(2e-4)
    assert np.isclose(parity.FLOOR_REL, 2.0 ** -23)


def test_peak_flips_count_the_peaks_read_elsewhere_with_their_margins() -> None:
    from hmr_trt.export.models.instancehmr.peaks import peak_flips
    from hmr_trt.mesh import scene_peak_cells, scene_people

    m = 16
    own = np.zeros((2, 1, m, m), np.float32)
    for (y, x), score in zip([(2, 2), (2, 10), (10, 2), (10, 10), (13, 13)], (0.9, 0.8, 0.7, 0.6, 0.5999)):
        own[:, 0, y, x] = score
    own[:, 0, 3, 3] = 0.89995  # a neighbour within 5e-5 of the first peak
    assert scene_peak_cells(own).tolist() == [[2 * m + 2, 2 * m + 10, 10 * m + 2, 10 * m + 10]] * 2
    same = peak_flips(own, own.copy())
    assert same == {"peaks": 8, "peak_flips": 0, "largest_flip_margin": 0.0}
    taken = own.copy()
    taken[0, 0, 3, 3] = 0.90005  # image 0: the neighbour wins the 5x5 test: the peak moves one cell
    taken[1, 0, 13, 13] = 0.6001  # image 1: the fifth peak overtakes the fourth
    got = peak_flips(own, taken)
    assert got["peaks"] == 8 and got["peak_flips"] == 2
    assert got["largest_flip_margin"] == pytest.approx(1e-4, rel=1e-2)  # the 5x5 test 5e-5 apart, the rank 1e-4
    maps = {"center_map": own, "cam_map": np.zeros((2, 3, m, m), np.float32),
            "params_map": np.random.default_rng(0).normal(0, 0.3, (2, 79, m, m)).astype(np.float32)}
    people = scene_people(maps)
    assert people["pose_rotmat"].shape == (2, 64 + 4, 24, 3, 3) and people["betas"].shape == (2, 68, 10)
    np.testing.assert_allclose(people["betas"][0, 64], maps["params_map"][0, 69:, 2, 2], atol=1e-6)


def test_every_registered_model_has_wrong_graphs() -> None:
    """A new model joins the wrong-graph cases above (each family and each architecture in it)."""
    # the track family (WHAM: init + step graphs judged frame by frame against the torch sequence) has its wrong
    # graphs in tests/export/models/test_wham.py (test_step_parity_states_the_floor_and_a_wrong_graph_fails)
    track = {n for n in registry.names()
             if registry.adapter(n).contract_for(registry.adapter(n).tiny_config()).family == "track"}
    assert track == {"wham"}
    assert set(WRONG) == set(registry.names()) - track
    assert {registry.adapter(n).contract_for(registry.adapter(n).tiny_config()).family for n in WRONG} == {
        "window", "frame", "scene"}


def test_a_released_format_export_reports_its_floor_in_the_readme_table(tmp_path) -> None:
    """trt-export's job on a sensitive DecoMR checkpoint in the released layout passes within the floor, and
    tools/floor_table.py renders the manifest's drift, floor and rule into the README's marked section."""
    import importlib.util

    from hmr_trt.manifest import Manifest

    adapter = registry.adapter("decomr")
    cfg = adapter.tiny_config()
    path = tmp_path / "h36m_up3d.pt"
    save_released_format(adapter.reference(dataclasses.replace(cfg, head_gain=64.0, trained_like=False)), path)
    out = tmp_path / "out"
    pipeline.run_export(pipeline.ExportOptions(out=out, model="decomr", config=cfg, checkpoint=path, parity_windows=3,
                                               with_backbone=False, profile=PROFILE, build_engines=False))
    verdict = Manifest.read(out).verdict["fp32"]
    assert verdict["verdict"] == "PASS" and verdict["passed_within"] == "floor"

    spec = importlib.util.spec_from_file_location("floor_table", Path(__file__).resolve().parents[2] / "tools" /
                                                  "floor_table.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{tool.BEGIN}\nold\n{tool.END}\nrest\n")
    rows = tmp_path / "rows.json"
    assert tool.main([f"{out}::h36m_up3d.pt::sensitive", "--rows", str(rows), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro") and text.endswith("rest\n")
    floor = verdict["floor_by_set"]["random"]["mean_vertex_mm"]
    assert f"| decomr | `h36m_up3d.pt` | sensitive | random | {verdict['worst_mean_vertex_mm']:.3g} | {floor:.3g} |" in text
    assert "| PASS within 10 x the floor (goal 0.01 mm) |" in text
    tool.main(["--from-rows", str(rows), "--readme", str(readme)])  # rewritten from the kept rows alone: the same
    assert readme.read_text() == text
