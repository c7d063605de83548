"""The FP16/INT8 verdict (issue 10): written with PASS/MISS and the worst case, refused only when asked."""

from __future__ import annotations

import pytest

from hmr_trt import registry
from hmr_trt.errors import ParityError
from hmr_trt.export.pipeline import ExportOptions, run_export
from hmr_trt.manifest import Manifest
from hmr_trt.profile import ShapeProfile


def _opts(out, **kw) -> ExportOptions:
    tiny = registry.adapter("coseg").tiny_config().with_(head_gain=0.5)  # moves > 50 mm across windows
    return ExportOptions(out=out, precision="fp16", config=tiny, profile=ShapeProfile(1, 4, 8), with_backbone=False,
                         parity_windows=3, build_engines=False, **kw)


def test_fp16_writes_its_verdict(tmp_path) -> None:
    result = run_export(_opts(tmp_path / "out"))
    manifest = Manifest.read(tmp_path / "out")
    verdict = manifest.verdict["fp16"]
    fp16 = result.reports[1]
    assert verdict["verdict"] == ("PASS" if fp16.passed else "MISS")
    assert verdict["recipe"] == "fp16" and verdict["goal_mm"] == manifest.model_contract().goal_mm("fp16")
    assert verdict["worst_mean_vertex_mm"] == max(r["vertices_mean_mm"] for r in fp16.rows) > 0
    assert manifest.find("temporal", precision="fp16") is not None
    assert manifest.model_contract().name == "coseg" and manifest.verdict["fp32"]["verdict"] == "PASS"


def test_a_miss_over_the_limit_writes_nothing(tmp_path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ParityError, match=r"misses the limit of 1e-09 mm .*recipe fp16.*nothing was written"):
        run_export(_opts(out, max_drift_mm=1e-9))
    assert not out.exists()
    assert not list(tmp_path.glob(".out.staging-*"))


def test_verdict_records_the_reduced_share_and_the_networks_own_conditioning(tmp_path) -> None:
    run_export(_opts(tmp_path / "out"))
    verdict = Manifest.read(tmp_path / "out").verdict
    share = verdict["fp16"]["share"]
    assert 0.5 < share["weights_fp16"] <= 1 and 0.5 < share["flops_fp16"] <= 1 and share["flops"] > 0
    cond = verdict["fp32"]["conditioning"]
    assert cond == verdict["fp16"]["conditioning"] and cond["relative_perturbation"] == 1e-4
    assert cond["perturbation_mean_vertex_mm"] > 0 and cond["input_fp16_mean_vertex_mm"] > 0
    assert 1e-4 < cond["input_fp16_mean_relative_error"] < 5e-4  # FP16 keeps 11 significant bits
    assert set(verdict["fp16"]["drift_by_set"]) == {"random"}
    # tools/precision_table.py renders the README row from the same verdict
    tool = _precision_table_tool()
    (row,) = tool.rows_from_export(tmp_path / "out")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{tool.BEGIN}\nold\n{tool.END}\nrest\n")
    tool.replace_section(readme, tool.markdown([row], "not measured: no GPU"))
    text = readme.read_text()
    mean = verdict["fp16"]["drift_by_set"]["random"]["mean_vertex_mm"]
    assert "old" not in text and text.startswith("intro") and text.endswith("rest\n")
    assert f"| coseg | `fp16` (default) | n/a | {mean:.3g} / " in text
    assert f"| {verdict['fp16']['verdict']} (goal 0.1) |" in text


def _precision_table_tool():  # noqa: ANN202 - a module loaded from tools/
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tools" / "precision_table.py"
    spec = importlib.util.spec_from_file_location("precision_table", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_precision_table_old_and_new_side_by_side() -> None:
    """tools/precision_table.py --old: a table it printed before is read back cell by cell and shown as
    old -> new beside a new measurement; a row measured only before says "not re-measured"."""
    tool = _precision_table_tool()

    def row(recipe: str, mean: float, verdict: str) -> dict:
        return {"model": "coseg", "recipe": recipe, "precision": recipe.split("-")[0], "default": recipe == "fp16",
                "drift_by_set": {"video": {"mean_vertex_mm": mean, "max_vertex_mm": 10 * mean}},
                "share": {"weights_fp16": 1.0, "weights_int8": 0.0, "flops_fp16": 0.9995, "flops_int8": 0.0},
                "conditioning": {"perturbation_mean_vertex_mm": 0.157, "input_fp16_mean_vertex_mm": 0.336},
                "verdict": verdict, "goal_mm": 0.1}

    before = tool.markdown([row("fp16", 0.86, "MISS"), row("fp16-rnn32", 0.731, "MISS")], "n/a")
    old = tool.rows_from_table(f"text\n{before}\nmore")
    assert [(o["recipe"], o["video"], o["default"]) for o in old] == [("fp16", "0.86 / 8.6", True),
                                                                       ("fp16-rnn32", "0.731 / 7.31", False)]
    table = tool.compare_markdown([row("fp16", 0.0625, "PASS")], old, "n/a")
    assert "| coseg | `fp16` (default) | 0.86 / 8.6 -> 0.0625 / 0.625 | n/a | 100.0% / 0.0% | " \
           ">99.9% / 0.0% -> >99.9% / 0.0% | 0.157 -> 0.157 | 0.336 -> 0.336 | MISS -> PASS (goal 0.1) | n/a |" in table
    assert "| coseg | `fp16-rnn32` | 0.731 / 7.31 -> not re-measured |" in table


def test_precision_table_fp8_row_shows_its_fp8_share() -> None:
    """An FP8 row (tools/precision_table.py --precisions fp8) shows the FP8 share of weights and FLOPs beside the
    FP16/INT8 ones, which are 0 in an FP8 graph; FP16/INT8 rows stay as they were."""
    tool = _precision_table_tool()
    share = {"weights_fp16": 0.0, "weights_int8": 0.0, "flops_fp16": 0.0, "flops_int8": 0.0,
             "weights_fp8": 0.939, "flops_fp8": 0.9861}
    cond = {"perturbation_mean_vertex_mm": 0.2, "input_fp16_mean_vertex_mm": 0.5}
    row = {"share": share, "conditioning": cond, "verdict": "MISS", "goal_mm": 0.4,
           "drift_by_set": {"video": {"mean_vertex_mm": 238.1, "max_vertex_mm": 642.0}}}
    cells = tool.cells(row)
    assert cells["weights"] == "0.0% / 0.0% (FP8 93.9%)" and cells["flops"] == "0.0% / 0.0% (FP8 98.6%)"
    assert cells["video"] == "238 / 642" and cells["random"] == "n/a" and cells["verdict"] == "MISS (goal 0.4)"
    int8 = tool.cells({**row, "share": {**share, "weights_int8": 0.5, "weights_fp8": 0.0, "flops_fp8": 0.0}})
    assert int8["weights"] == "0.0% / 50.0%" and int8["flops"] == "0.0% / 0.0%"
    assert int8["verdict"] == "MISS (goal 0.4)"  # an fp8 row, though its INT8 shares are 0
    float_only = tool.cells({**row, "precision": "int8", "share": {**share, "weights_fp8": 0.0, "flops_fp8": 0.0}})
    assert float_only["verdict"] == "MISS (goal 0.4; no layer stays INT8)"


def test_fp8_share_is_counted_on_its_int8_graph(tmp_path) -> None:
    """The FP8 graph of a ViT (opset 19) loses its MatMul shapes in shape inference (its own count gave 0.4 of
    251 GFLOPs for the full ViT-H); the table counts the FP8 share on the INT8 graph it was made from."""
    from hmr_trt import registry
    from hmr_trt.calibration.fp8 import fp8_onnx_from_int8
    from hmr_trt.calibration.quantize import int8_onnx_from_fp32
    from hmr_trt.engines.precision import reduced_precision_share
    from hmr_trt.export import onnx_export

    adapter = registry.adapter("hmr2")
    cfg = adapter.tiny_config()
    fp32, int8, fp8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx", tmp_path / "fp8.onnx"
    onnx_export.onnx_from_module(adapter.exportable(adapter.reference(cfg), "hmr2"), adapter.contract_for(cfg).model_graph,
                                 adapter.example_inputs(cfg, "hmr2", 2), fp32)
    int8_onnx_from_fp32(fp32, int8, adapter.example_inputs(cfg, "hmr2", 4, seed=2)[0].numpy(), tmp_path / "cache.json")
    fp8_onnx_from_int8(int8, fp32, fp8)
    share, own = _precision_table_tool().fp8_share(int8, fp8), reduced_precision_share(fp8)
    counted = reduced_precision_share(int8)
    assert share["flops"] == counted["flops"] == reduced_precision_share(fp32)["flops"] > own["flops"]
    assert share["flops_fp8"] == counted["flops_int8"] > 0.5 and share["flops_int8"] == 0.0
    assert share["weights_fp8"] == pytest.approx(own["weights_fp8"]) and share["weights_fp8"] > 0.5
