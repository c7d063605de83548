"""trt-export adds a step graph to window models and measures its parity frame by frame: the
window-as-state graph for emit "all" (coseg) and emit "middle" (glot), VIBE's own GRU step graph."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from hmr_trt import registry  # noqa: E402
from hmr_trt.export import step_graph  # noqa: E402
from hmr_trt.export.pipeline import ExportOptions, run_export  # noqa: E402
from hmr_trt.profile import ShapeProfile  # noqa: E402


def export(tmp_path, model: str, **kw):
    cfg = registry.adapter(model).tiny_config()
    if model == "coseg":
        cfg = cfg.with_(head_gain=0.5)
    out = tmp_path / model
    run_export(ExportOptions(out=out, model=model, config=cfg, profile=ShapeProfile(1, 4, 8), with_backbone=False,
                             parity_windows=3, build_engines=False, **kw))
    return out, json.loads((out / "manifest.json").read_text())


def step_artifact(manifest: dict) -> dict | None:
    return next((a for a in manifest["artifacts"] if a["name"] == "step"), None)


@pytest.mark.parametrize("model,kind,inputs", [
    ("glot", "window as state", ["features", "state", "start"]),
    ("vibe", "recurrent state", ["features", "hidden"]),
])
def test_step_graph_exported_with_frame_by_frame_parity(tmp_path, model, kind, inputs) -> None:
    out, manifest = export(tmp_path, model)
    art = step_artifact(manifest)
    assert art is not None, [a["name"] for a in manifest["artifacts"]]
    graph = onnx.load(str(out / art["path"]), load_external_data=False).graph
    assert [i.name for i in graph.input] == inputs
    roles = {g["name"]: g["role"] for g in manifest["contract"]["graphs"]}
    assert roles["step"] == "step"
    parity = art["parity"]
    assert parity["kind"] == kind and parity["failures"] == []
    window = manifest["contract"]["window"]
    rows = parity["sets"]["random"]
    # a recurrent step graph is compared at every step; a window-as-state one once the window is full
    assert rows["frames_compared"] == 3 * (window if kind == "recurrent state" else 1)
    assert rows["vertices_mean_mm"] < 1e-2 and max(rows["max_abs"].values()) < 1e-4
    from rich.console import Console

    from hmr_trt.export.cli import print_step_parity
    from hmr_trt.manifest import Manifest

    console = Console(record=True, width=200)
    print_step_parity(console, Manifest.read(out))
    assert f"step graph ({kind}, fed frame by frame): PASS" in console.export_text()


def test_no_step_and_the_size_threshold() -> None:
    def graphs(model: str, step, limit=None):
        adapter = registry.adapter(model)
        cfg = adapter.tiny_config()
        reference = adapter.reference(cfg)
        if limit is not None:
            reference = torch.nn.Linear(int(limit // 4) + 1, 1)  # just over the limit in FP32 bytes
        contract, note = step_graph.with_step_graph(adapter.contract_for(cfg), reference, step)
        step_spec = contract.graph_for("step")
        return (None if step_spec is None else step_spec.input_names), note

    assert graphs("vibe", None)[0] == ("features", "hidden")  # its own, whatever its size
    assert graphs("vibe", False) == (None, "step graph: none (--no-step)")
    assert graphs("glot", None)[0] == ("features", "state", "start")
    inputs, note = graphs("glot", None, limit=step_graph.AUTO_STEP_MAX_BYTES)
    assert inputs is None and "pass --step to add it" in note
    assert graphs("glot", True, limit=step_graph.AUTO_STEP_MAX_BYTES)[0] == ("features", "state", "start")
    assert graphs("decomr", True) == (None, "")  # frame models have no window to carry


def test_step_parity_catches_a_wrong_step_graph(tmp_path) -> None:
    """The check can fail: a step graph whose state is not shifted (it keeps the first window) misses."""
    out, manifest = export(tmp_path, "coseg", step=True)
    art = step_artifact(manifest)
    assert art["parity"]["kind"] == "window as state" and art["parity"]["failures"] == []
    from hmr_trt.contract import ModelContract
    from hmr_trt.export.parity import Reference
    from hmr_trt.runtime.backends import OnnxRuntimeBackend

    contract = ModelContract.from_dict(manifest["contract"])
    ref = np.load(out / "parity_reference.npz")
    windows = {"random": ref["random/features"]}
    refs = {"random": Reference({k: ref[f"random/{k}"] for k in ("pose_rotmat", "betas", "cam")},
                                ref["random/vertices"], ref["random/joints3d"])}
    body = contract.graph_for("body_model")
    with OnnxRuntimeBackend(out / art["path"]) as step, \
            OnnxRuntimeBackend(out / f"{body.name}_fp32.onnx") as body_backend:
        def frozen(feed):  # every step starts a fresh track: the state never holds the window
            return step.infer({**feed, "start": np.ones_like(feed["start"])})
        good = step_graph.step_parity(step.infer, body_backend.infer, windows, refs, contract, 1e-3)
        bad = step_graph.step_parity(frozen, body_backend.infer, windows, refs, contract, 1e-3)
    assert good["failures"] == [] and good["sets"]["random"]["vertices_mean_mm"] < 1e-2
    assert len(bad["failures"]) == 1 and bad["sets"]["random"]["vertices_mean_mm"] > 1.0
