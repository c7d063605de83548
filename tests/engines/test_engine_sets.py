"""tools/engine_sets.py: trt-build outputs of several precisions under one manifest (what trt-bench --export reads).

The engines come from trt-build's real planning with the TensorRT build faked (no GPU here)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from hmr_trt import registry
from hmr_trt.engines.export_engines import BuildOptions, build_engines_for_export
from hmr_trt.errors import HmrTrtError
from hmr_trt.manifest import Artifact, Manifest, TensorSpec, sha256_of
from hmr_trt.runtime.trt_compat import Target

onnx = pytest.importorskip("onnx")
ROOT = Path(__file__).resolve().parents[2]


def _tool():
    spec = importlib.util.spec_from_file_location("engine_sets", ROOT / "tools/engine_sets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _export(root: Path, model: str = "coseg") -> Path:
    from onnx import TensorProto, helper

    contract = registry.contract(model)
    root.mkdir(parents=True)
    manifest = Manifest(model=model, config={}, profile={"min": 1, "opt": 2, "max": 4}, contract=contract.to_dict())
    for graph in contract.graphs:
        for precision in (("fp32", "fp16") if graph.precision_passes else ("fp32",)):
            path = root / f"{graph.name}_{precision}.onnx"
            ins, outs = [t.name for t in graph.inputs], [t.name for t in graph.outputs]
            kind = TensorProto.FLOAT  # FP16 exports keep float32 inputs and outputs (casts inside), as trt-export's
            shapes = {t.name: list(t.shape) for t in (*graph.inputs, *graph.outputs)}  # the verified loader checks
            vi = [helper.make_tensor_value_info(n, kind, shapes[n]) for n in ins + outs]
            m = helper.make_model(helper.make_graph([helper.make_node("Identity", [ins[0]], [o]) for o in outs],
                                                    graph.name, vi[:len(ins)], vi[len(ins):]),
                                  opset_imports=[helper.make_opsetid("", 17)])
            for key, value in {"hmr_trt.graph": graph.name, "hmr_trt.version": "0.1.0"}.items():
                entry = m.metadata_props.add()
                entry.key, entry.value = key, value
            onnx.save(m, str(path))
            manifest.add(Artifact(graph.name, path.name, "onnx", precision, sha256_of(path),
                                  [TensorSpec(t.name, list(t.shape)) for t in graph.inputs],
                                  [TensorSpec(t.name, list(t.shape)) for t in graph.outputs]))
    manifest.write(root)
    return root


def _engines(export: Path, precision: str, out: Path) -> Path:
    build_engines_for_export(export, precision, None, out, options=BuildOptions(
        use_cache=False, target=Target("10.16.1", "NVIDIA H100", "sm_90"),
        build_fn=lambda request: f"plan {request.onnx_path.name} {request.precision}".encode()))
    return out


def test_one_manifest_lists_every_precisions_engines(tmp_path: Path) -> None:
    export = _export(tmp_path / "export")
    sets = [_engines(export, p, tmp_path / f"engines-{p}") for p in ("fp32", "fp16")]
    proc = subprocess.run([sys.executable, str(ROOT / "tools/engine_sets.py"), str(tmp_path / "bench"), *map(str, sets)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    merged = Manifest.read(tmp_path / "bench")
    model = registry.contract("coseg").model_graph.name
    engines = {a.precision: a for a in merged.artifacts if a.kind == "engine" and a.name == model}
    assert set(engines) == {"fp32", "fp16"}
    for precision, art in engines.items():
        assert (tmp_path / "bench" / art.path).read_bytes() == f"plan {model}_{precision}.onnx {precision}".encode()
    for art in merged.artifacts:  # every path resolves from the new folder
        assert (tmp_path / "bench" / art.path).is_file(), art.path


def test_engine_sets_of_different_models_are_refused(tmp_path: Path) -> None:
    a = _engines(_export(tmp_path / "a", "coseg"), "fp32", tmp_path / "ea")
    b = _engines(_export(tmp_path / "b", "tcmr"), "fp32", tmp_path / "eb")
    with pytest.raises(HmrTrtError, match="same model"):
        _tool().merge(tmp_path / "out", [a, b])
    assert not (tmp_path / "out").exists()
