"""TensorRT engines on a GPU: built from an export per precision, parity in mm, batch invariance, CUDA graphs.

Needs TensorRT + cuda-python + an NVIDIA GPU (skipped with the reason otherwise) and an export
directory in ``HMR_TRT_EXPORT_DIR`` (made by trt-export; the GPU image runs Python 3.9 without
torch, so these tests cannot export themselves). trt-export writes one reduced precision per
run, so the directory may hold one export per precision in ``fp32/``, ``fp16/`` and ``int8/``
(what ``make test-gpu`` makes); each precision uses its own, the reference comes from ``fp32/``. Engines are built once per precision with
``build_engines_for_export`` (cached in ``HMR_TRT_CACHE`` when set) and run with ``TensorRTBackend``:
the model engine in chunks of the parity batch sizes, then the body-model engine on all frames.
Everything model-specific (graph names, input and output names, window, feature width, goals) comes
from the model contract in the export's ``manifest.json``, never from literals.

Reference meshes: the torch reference trt-export stores in ``EXPORT_DIR/parity_reference.npz``
(``{set}/features`` (W, T, C) float32, ``{set}/vertices`` (W, T, V, 3), ``{set}/joints3d`` (W, T, J, 3)
in metres, for set = random [, video]); for an export without it, ONNX Runtime FP32 on the same
export's ONNX files and random windows when onnxruntime is importable.
Goals: the contract's ``goals_mm`` (mean vertex drift, e.g. 0.01 / 0.1 / 0.4 mm for fp32 / fp16 / int8),
judged on every window set for fp32 and on the real-video windows for fp16/int8 (as trt-export
does: random Gaussian windows lie outside INT8 calibration ranges); a drift over its goal fails.
Results are written to ``$HMR_TRT_GPU_OUT/parity.json`` and ``parity.md`` for the CI artifacts.
A precision the export has no model-graph ONNX for is skipped with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterator, Tuple

import numpy as np
import pytest

from hmr_trt.contract import ModelContract
from hmr_trt.errors import EngineError, HmrTrtError
from hmr_trt.manifest import Manifest
from hmr_trt.metrics import mesh_drift

pytestmark = [pytest.mark.gpu, pytest.mark.trt]

EXPORT_ENV = "HMR_TRT_EXPORT_DIR"
REFERENCE_FILE = "parity_reference.npz"
PARITY_BATCHES = (1, 2, 7)
N_WINDOWS = 7
# Max abs change of any model-graph output when a window runs alone instead of in a batch of 7:
# kernels differ per batch size (float rounding); samples mixing in a batch gives O(0.1 - 1).
BATCH_INVARIANCE_ATOL = {"fp32": 1e-3, "fp16": 2e-2, "int8": 2e-2}


RESULTS: list = []  # one row per (precision, set, batch), written out at the end of the module


def export_for(base: Path, precision: str) -> Path:
    """``base/<precision>`` when make test-gpu laid out one export per precision, else ``base``."""
    sub = base / precision
    return sub if (sub / "manifest.json").is_file() else base


@pytest.fixture(scope="module", autouse=True)
def write_results() -> Iterator[None]:
    yield
    out = os.environ.get("HMR_TRT_GPU_OUT")
    if not out or not RESULTS:
        return
    import json

    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "parity.json").write_text(json.dumps(RESULTS, indent=2) + "\n")
    lines = ["| precision | windows | batch | vertex mean mm | vertex max mm | joint mean mm | goal mm | judged | ok |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['precision']} | {r['set']} | {r['batch']} | {r['vertices_mean_mm']:.4g} | "
              f"{r['vertices_max_mm']:.3g} | {r['joints_mean_mm']:.4g} | {r['goal_mm']} | {r['judged']} | {r['ok']} |"
              for r in RESULTS]
    (Path(out) / "parity.md").write_text("# TensorRT parity vs the PyTorch reference\n\n" + "\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def export_dir() -> Path:
    from hmr_trt.runtime.trt_compat import trt_available

    ok, reason = trt_available()
    if not ok:
        pytest.skip(reason)
    value = os.environ.get(EXPORT_ENV)
    if not value:
        pytest.skip(f"{EXPORT_ENV} is unset: point it at a trt-export output directory")
    path = Path(value)
    if not (export_for(path, "fp32") / "manifest.json").is_file():
        pytest.fail(f"{EXPORT_ENV}={path} has no manifest.json (nor fp32/manifest.json): not a trt-export output")
    return path


@pytest.fixture(scope="module")
def contract(export_dir) -> ModelContract:
    """The exported model's contract, from the fp32 export's manifest."""
    manifest = Manifest.read(export_for(export_dir, "fp32"))
    try:
        return manifest.model_contract()
    except HmrTrtError as exc:  # an export from before contracts: say so, do not guess
        pytest.fail(f"{EXPORT_ENV}: {exc}")


def _sets_from_npz(path: Path) -> Dict[str, Dict[str, np.ndarray]]:
    data = np.load(path)
    names = [k[: -len("/features")] for k in data.files if k.endswith("/features")]
    return {n: {"windows": data[f"{n}/features"].astype(np.float32), "vertices": data[f"{n}/vertices"],
                "joints": data[f"{n}/joints3d"]} for n in names}


def _ort_reference(export_dir: Path, manifest: Manifest, contract: ModelContract,
                   windows: np.ndarray) -> Dict[str, np.ndarray]:
    from hmr_trt.runtime.backends import OnnxRuntimeBackend

    model, body = contract.model_graph, _body_graph(contract)
    with OnnxRuntimeBackend(export_dir / manifest.find(model.name, "onnx", "fp32").path) as m, \
            OnnxRuntimeBackend(export_dir / manifest.find(body.name, "onnx", "fp32").path) as b:
        verts, joints = _meshes(contract, b, m.infer({model.inputs[0].name: windows}))
    return {"windows": windows, "vertices": verts, "joints": joints}


@pytest.fixture(scope="module")
def reference(export_dir, contract) -> Tuple[str, Dict[str, Dict[str, np.ndarray]]]:
    """(what the reference is, {set: {windows, vertices, joints}})."""
    export_dir = export_for(export_dir, "fp32")
    path = export_dir / REFERENCE_FILE
    if path.is_file():
        return f"PyTorch ({REFERENCE_FILE})", _sets_from_npz(path)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        pytest.skip(f"no {REFERENCE_FILE} in {export_dir} and no onnxruntime here: nothing to compare with")
    manifest = Manifest.read(export_dir)
    shape = (N_WINDOWS, *contract.model_graph.inputs[0].shape[1:])
    windows = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return "ONNX Runtime FP32", {"random": _ort_reference(export_dir, manifest, contract, windows)}


@pytest.fixture(scope="module")
def engine_sets(export_dir, tmp_path_factory) -> Iterator:
    """build(precision) -> (out_dir, manifest), built once per precision."""
    from hmr_trt.engines.export_engines import BuildOptions, build_engines_for_export, select_artifacts

    built: Dict[str, Tuple[Path, Manifest]] = {}
    cache = None if os.environ.get("HMR_TRT_CACHE") else tmp_path_factory.mktemp("engine-cache")

    def build(precision: str) -> Tuple[Path, Manifest]:
        if precision not in built:
            source = export_for(export_dir, precision)
            if not (source / "manifest.json").is_file():
                pytest.skip(f"no {precision} export under {export_dir} (make test-gpu writes fp32/, fp16/, int8/)")
            try:
                select_artifacts(Manifest.read(source), precision)
            except EngineError as exc:
                pytest.skip(str(exc))
            out = tmp_path_factory.mktemp("engines") / precision
            built[precision] = out, build_engines_for_export(source, precision, None, out,
                                                             options=BuildOptions(cache_dir=cache))
        return built[precision]

    yield build


def _cast(backend, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    dtypes = {s.name: s.dtype for s in backend.inputs}
    return {k: np.ascontiguousarray(v, dtype=dtypes[k]) for k, v in feed.items()}


def _body_graph(contract: ModelContract):
    body = contract.graph_for("body_model")
    if body is None:
        pytest.skip(f"model {contract.name} has no body_model graph: these tests compare meshes")
    return body


def _meshes(contract: ModelContract, body, outs: Dict[str, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Body model on every emitted frame, in chunks the engine's profile allows: (W, F, V, 3), (W, F, J, 3)."""
    spec = _body_graph(contract)
    first = outs[spec.inputs[0].name]
    w, f = first.shape[:2]
    flat = {t.name: outs[t.name].reshape(w * f, *t.shape[1:]) for t in spec.inputs}  # (W * F, ...) per input
    step = body.max_batch or w * f
    parts = [body.infer(_cast(body, {k: v[i:i + step] for k, v in flat.items()})) for i in range(0, w * f, step)]
    verts_name, joints_name = spec.output_names[:2]
    verts = np.concatenate([p[verts_name] for p in parts]).astype(np.float32)
    joints = np.concatenate([p[joints_name] for p in parts]).astype(np.float32)
    return verts.reshape(w, f, -1, 3), joints.reshape(w, f, -1, 3)


def _backend(out: Path, manifest: Manifest, name: str, precision: str, **kwargs):
    """The graph's engine through the verified loader (TensorRTBackend opens paths with engine_from_path)."""
    from hmr_trt.runtime.trt_backend import TensorRTBackend

    art = manifest.find(name, "engine", precision)
    return TensorRTBackend(out / art.path, **kwargs)


def _model(backend, contract: ModelContract, windows: np.ndarray, batch: int) -> Dict[str, np.ndarray]:
    name = contract.model_graph.inputs[0].name
    chunks = [backend.infer(_cast(backend, {name: windows[i:i + batch]})) for i in range(0, len(windows), batch)]
    return {k: np.concatenate([c[k] for c in chunks]).astype(np.float32) for k in chunks[0]}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_parity_in_mm(precision, engine_sets, reference, contract, record_property) -> None:
    out, manifest = engine_sets(precision)
    label, sets = reference
    goal = contract.goal_mm(precision)
    failures, lines = [], []
    with _backend(out, manifest, contract.model_graph.name, precision) as model, \
            _backend(out, manifest, _body_graph(contract).name, precision) as body:
        for set_name, ref in sets.items():
            for batch in PARITY_BATCHES:
                verts, joints = _meshes(contract, body, _model(model, contract, ref["windows"], batch))
                drift = mesh_drift(verts, joints, ref["vertices"], ref["joints"])
                key = f"{precision}_{set_name}_b{batch}_vertices_mean_mm"
                record_property(key, drift["vertices_mean_mm"])
                lines.append(f"{precision} {set_name} batch {batch}: mean vertex {drift['vertices_mean_mm']:.4g} mm "
                             f"(max {drift['vertices_max_mm']:.3g}), joints {drift['joints_mean_mm']:.4g} mm")
                judged = precision == "fp32" or set_name == "video" or "video" not in sets
                ok = drift["vertices_mean_mm"] <= goal or not judged
                RESULTS.append({"precision": precision, "set": set_name, "batch": batch, "goal_mm": goal,
                                "judged": judged, "ok": ok, "reference": label, **drift})
                if not ok:
                    failures.append(lines[-1])
    print(f"\nTensorRT vs {label}:\n" + "\n".join(lines))
    message = f"mean vertex drift over the {precision} goal {goal} mm vs {label}: " + "; ".join(failures)
    onnx_parity = manifest.parity.get(precision, {})  # the export's ONNX-level parity, copied by trt-build
    if onnx_parity.get("passed") is False:
        message += f" (the {precision} ONNX already misses its goal in the export's CPU parity)"
    assert not failures, message


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_batch_invariance(precision, engine_sets, reference, contract) -> None:
    out, manifest = engine_sets(precision)
    windows = next(iter(reference[1].values()))["windows"]
    with _backend(out, manifest, contract.model_graph.name, precision) as model:
        together = _model(model, contract, windows, len(windows))
        alone = _model(model, contract, windows, 1)
    worst = max(float(np.abs(together[k] - alone[k]).max()) for k in together)
    print(f"\n{precision} {contract.model_graph.name} engine: outputs change with batch composition by {worst:.3g}")
    assert worst <= BATCH_INVARIANCE_ATOL[precision], (
        f"{precision}: a window's outputs change by {worst:.3g} when batched with others "
        f"(> {BATCH_INVARIANCE_ATOL[precision]})")


def test_cuda_graphs_match_plain_enqueue(engine_sets, reference, contract) -> None:
    out, manifest = engine_sets("fp32")
    windows = next(iter(reference[1].values()))["windows"]
    feeds = [windows, windows[:3], windows[:3], windows[:3], windows]
    graph, name = contract.model_graph.name, contract.model_graph.inputs[0].name
    with _backend(out, manifest, graph, "fp32") as plain:
        expected = [plain.infer(_cast(plain, {name: f})) for f in feeds]
    with _backend(out, manifest, graph, "fp32", cuda_graphs=True) as graphs:
        got = [graphs.infer(_cast(graphs, {name: f})) for f in feeds]
        counts, error = dict(graphs.counts), graphs.graph_error
    for e, g in zip(expected, got):
        for name in e:
            np.testing.assert_allclose(g[name], e[name], rtol=0, atol=1e-6, err_msg=name)
    if error is not None:
        pytest.skip(f"CUDA graph capture is not possible for this engine (plain enqueue used, outputs equal): {error}")
    assert counts["graph_launch"] >= 2 and counts["graph_capture"] >= 2, counts


def test_double_buffering_matches_infer(engine_sets, reference, contract) -> None:
    out, manifest = engine_sets("fp32")
    windows = next(iter(reference[1].values()))["windows"]
    feeds = [windows[i:i + b] for i, b in ((0, 7), (0, 2), (2, 5), (6, 1))]
    graph, name = contract.model_graph.name, contract.model_graph.inputs[0].name
    with _backend(out, manifest, graph, "fp32") as single:
        expected = [single.infer(_cast(single, {name: f})) for f in feeds]
    with _backend(out, manifest, graph, "fp32", num_buffers=2) as double:
        handles = [double.submit(_cast(double, {name: f})) for f in feeds[:2]]
        got = [double.collect(handles[0])]
        handles.append(double.submit(_cast(double, {name: feeds[2]})))
        handles.append(double.submit(_cast(double, {name: feeds[3]})))
        got += [double.collect(h) for h in handles[1:]]
    for e, g in zip(expected, got):
        for name in e:
            np.testing.assert_allclose(g[name], e[name], rtol=0, atol=1e-6, err_msg=name)


def test_corrupt_engines_are_refused_by_real_tensorrt(engine_sets, contract, tmp_path) -> None:
    """The sidecar catches a truncated engine; bytes that pass no sidecar check are refused by TensorRT itself."""
    from hmr_trt.runtime.engine_loader import engine_from_bytes, engine_from_path, sidecar_path
    from hmr_trt.runtime.trt_backend import TensorRTBackend

    out, manifest = engine_sets("fp32")
    art = manifest.find(contract.model_graph.name, "engine", "fp32")
    broken = tmp_path / art.path
    data = (out / art.path).read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    sidecar_path(broken).write_bytes(sidecar_path(out / art.path).read_bytes())
    with pytest.raises(EngineError, match="truncated or corrupt"):
        engine_from_path(broken)
    with pytest.raises(EngineError, match="truncated or corrupt"):
        TensorRTBackend(broken).activate()  # the backend loads through the same check
    with pytest.raises(EngineError, match="cannot deserialize"):
        engine_from_bytes(data[: len(data) // 2])  # TensorRT's own refusal
