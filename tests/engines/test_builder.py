"""The engine builder without TensorRT: version switches, ONNX checks, atomic writes, sidecars, loading.

TensorRT itself is replaced where needed: ``build_fn`` fakes the build, and a small simulated
``tensorrt`` + ``cuda.bindings.runtime`` (a fake engine computing ``2 * features[..., :2]`` in host
memory) drives the TRT-only code paths of ``build_serialized`` and ``TensorRTBackend``. The
simulation encodes hmr-trt's reading of the TensorRT API; the GPU tests check it against the real one.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from packaging.version import Version

from hmr_trt.engines import builder, sidecar
from hmr_trt.engines.builder import BuildRequest, check_precision_fits, engine_from_onnx, profile_shapes
from hmr_trt.engines.onnx_metadata import read_onnx_metadata, require_hmr_trt_graph
from hmr_trt.engines.sidecar import EngineInfo, read_sidecar, sidecar_path
from hmr_trt.errors import ConfigError, EngineError, HmrTrtError, InputSpecError
from hmr_trt.profile import ShapeProfile
from hmr_trt.runtime import engine_loader, trt_compat
from hmr_trt.runtime.engine_loader import verify_engine
from hmr_trt.runtime.trt_compat import LIBRARY_TACTICS, Target, build_settings, parse_version

H100 = Target("10.3.0", "NVIDIA H100 80GB HBM3", "sm_90")
PROFILE = ShapeProfile(1, 8, 64)


def make_onnx(path: Path, graph: str | None = "temporal", extra: dict | None = None, weights: int = 0) -> Path:
    """A tiny valid ONNX file, stamped like trt-export's graphs unless ``graph`` is None."""
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4, 8])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4, 8])
    init = [numpy_helper.from_array(np.arange(weights, dtype=np.float32), "w")] if weights else []
    g = helper.make_graph([helper.make_node("Identity", ["features"], ["out"])], "g", [x], [y], initializer=init)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    props = {} if graph is None else {"hmr_trt.graph": graph, "hmr_trt.version": "0.1.0", **(extra or {})}
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


class FakeBuild:
    """A build_fn: records requests, returns deterministic bytes."""

    def __init__(self) -> None:
        self.requests: list[BuildRequest] = []

    def __call__(self, request: BuildRequest) -> bytes:
        self.requests.append(request)
        return f"FAKE-ENGINE {request.onnx_path.name} {request.precision} {request.profile}".encode() * 10


# ---------------------------------------------------------------------------------------------
# versions and build settings


def test_versions_compare_as_versions_not_strings() -> None:
    assert parse_version("10.10.0") > parse_version("10.9.0")
    assert parse_version("8.6.1.6") < parse_version("10.0.0") < parse_version("11.0")
    assert trt_compat.is_strongly_typed(Version("10.10")) and not trt_compat.strongly_typed_only(Version("10.10"))
    assert trt_compat.strongly_typed_only(Version("11.1.0")) and not trt_compat.has_precision_flags(Version("11.0"))
    assert trt_compat.needs_explicit_batch(Version("8.6.1")) and not trt_compat.needs_explicit_batch(Version("10.0"))
    with pytest.raises(EngineError, match="cannot read the TensorRT version"):
        parse_version("ten")


@pytest.mark.parametrize(
    ("version", "precision", "network", "flags", "tactics", "strong"),
    [
        ("8.6.1", "fp32", ("EXPLICIT_BATCH",), (), LIBRARY_TACTICS, False),
        ("8.6.1", "fp16", ("EXPLICIT_BATCH",), ("FP16", "OBEY_PRECISION_CONSTRAINTS"), LIBRARY_TACTICS, False),
        ("8.6.1", "int8", ("EXPLICIT_BATCH",), ("FP16", "INT8"), LIBRARY_TACTICS, False),
        ("10.3.0", "fp16", ("STRONGLY_TYPED",), (), (), True),
        ("10.10.0", "int8", ("STRONGLY_TYPED",), (), (), True),
        ("11.1.0", "fp16", (), (), (), True),
    ],
)
def test_build_settings_per_version(version, precision, network, flags, tactics, strong) -> None:
    s = build_settings(Version(version), precision)
    assert (s.network_flags, s.builder_flags, s.disabled_tactics, s.strongly_typed) == (network, flags, tactics, strong)


def test_old_tensorrt_and_unknown_precision_are_refused() -> None:
    with pytest.raises(EngineError, match="TensorRT 8.5.3 is too old"):
        build_settings(Version("8.5.3"), "fp32")
    with pytest.raises(ConfigError, match="precision must be one of fp32, fp16, int8"):
        build_settings(Version("10.0"), "bf16")


def fake_trt_enums() -> types.SimpleNamespace:
    enum = types.SimpleNamespace
    return enum(
        NetworkDefinitionCreationFlag=enum(EXPLICIT_BATCH=0, STRONGLY_TYPED=1),
        BuilderFlag=enum(FP16=0, INT8=1, TF32=7, OBEY_PRECISION_CONSTRAINTS=9),
        TacticSource=enum(CUBLAS=0, CUBLAS_LT=1, CUDNN=2, EDGE_MASK_CONVOLUTIONS=3, JIT_CONVOLUTIONS=4),
    )


class FakeConfig:
    def __init__(self, sources: int = 0b11111) -> None:
        self.flags: set[int] = {7}  # TF32 on by default, as in TensorRT
        self.sources = sources

    def set_flag(self, flag: int) -> None:
        self.flags.add(flag)

    def clear_flag(self, flag: int) -> None:
        self.flags.discard(flag)

    def get_tactic_sources(self) -> int:
        return self.sources

    def set_tactic_sources(self, sources: int) -> None:
        self.sources = sources


def test_applying_settings_sets_flags_turns_off_library_tactics_and_tf32() -> None:
    trt = fake_trt_enums()
    config = FakeConfig()
    settings = build_settings(Version("8.6.1"), "int8")
    trt_compat.apply_builder_settings(trt, config, settings)
    assert config.flags == {0, 1}  # FP16 + INT8, TF32 cleared
    assert config.sources == 0b11000  # CUBLAS, CUBLAS_LT, CUDNN off; edge mask and JIT convolutions kept
    assert trt_compat.network_flag_bits(trt, settings) == 1 << 0
    config10 = FakeConfig()
    strong = build_settings(Version("10.3.0"), "fp16")
    trt_compat.apply_builder_settings(trt, config10, strong)
    assert config10.flags == set() and config10.sources == 0b11111
    assert trt_compat.network_flag_bits(trt, strong) == 1 << 1
    assert trt_compat.network_flag_bits(trt, build_settings(Version("11.0"), "fp16")) == 0


# ---------------------------------------------------------------------------------------------
# pure build rules


def test_profile_shapes_cover_the_dynamic_leading_axis_only() -> None:
    shapes = profile_shapes([("features", (-1, 16, 2048)), ("static", (1, 3))], ShapeProfile(1, 8, 64))
    assert shapes == {"features": ((1, 16, 2048), (8, 16, 2048), (64, 16, 2048))}
    with pytest.raises(EngineError, match=r"input 'x' \(-1, -1, 8\) has a dynamic axis other than the leading one"):
        profile_shapes([("x", (-1, -1, 8))], PROFILE, "g.onnx")


@pytest.mark.parametrize(
    ("precision", "qdq", "half", "version", "match"),
    [
        ("fp16", True, True, "10.3.0", "has Q/DQ nodes .* --precision int8"),
        ("int8", False, True, "8.6.1", "--precision int8 needs Q/DQ nodes"),
        ("fp16", False, False, "10.3.0", "no float16 tensors: TensorRT 10.3.0 builds strongly typed"),
    ],
)
def test_precision_must_be_in_the_onnx(precision, qdq, half, version, match) -> None:
    with pytest.raises(EngineError, match=match):
        check_precision_fits(precision, qdq, half, build_settings(Version(version), precision), "t.onnx")


def test_precision_fits_when_the_onnx_carries_it() -> None:
    check_precision_fits("fp16", False, False, build_settings(Version("8.6.1"), "fp16"), "t.onnx")  # flags do it
    check_precision_fits("fp16", False, True, build_settings(Version("10.3.0"), "fp16"), "t.onnx")
    check_precision_fits("int8", True, True, build_settings(Version("11.0"), "int8"), "t.onnx")
    check_precision_fits("fp32", False, False, build_settings(Version("11.0"), "fp32"), "t.onnx")


@pytest.mark.parametrize(("kwargs", "match"), [({"opt_level": 6}, "--opt-level must be in 0..5"),
                                               ({"workspace_mib": 0}, "--workspace-mib must be >= 1"),
                                               ({"precision": "fp8"}, "precision must be one of")])
def test_bad_build_options(tmp_path, kwargs, match) -> None:
    args = {"precision": "fp16", **kwargs}
    with pytest.raises(ConfigError, match=match):
        engine_from_onnx(make_onnx(tmp_path / "t.onnx"), tmp_path / "t.engine", profile=PROFILE, target=H100,
                         build_fn=FakeBuild(), **args)


# ---------------------------------------------------------------------------------------------
# ONNX metadata


def test_metadata_reader_matches_onnx(tmp_path) -> None:
    path = make_onnx(tmp_path / "t.onnx", extra={"hmr_trt.config": json.dumps({"window": 16}), "hmr_trt.x": "ü"},
                     weights=100_000)
    model = onnx.load(str(path))
    assert read_onnx_metadata(path) == {p.key: p.value for p in model.metadata_props}
    assert require_hmr_trt_graph(path)["graph"] == "temporal"


def test_non_hmr_trt_onnx_is_refused(tmp_path) -> None:
    plain = make_onnx(tmp_path / "plain.onnx", graph=None)
    with pytest.raises(EngineError, match="plain.onnx is not an hmr-trt export .*'hmr_trt.graph'"):
        engine_from_onnx(plain, tmp_path / "p.engine", "fp32", PROFILE, target=H100, build_fn=FakeBuild())
    assert not (tmp_path / "p.engine").exists()


@pytest.mark.parametrize("content", [b"", b"\x0a\xff\xff\xff", b"not a protobuf at all \xff\xff"])
def test_unreadable_onnx_is_refused(tmp_path, content) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    with pytest.raises(EngineError, match="bad.onnx"):
        require_hmr_trt_graph(bad)


# ---------------------------------------------------------------------------------------------
# building and writing


def test_engine_and_sidecar_record_what_the_engine_is(tmp_path) -> None:
    onnx_path = make_onnx(tmp_path / "t.onnx")
    fake = FakeBuild()
    info = engine_from_onnx(onnx_path, tmp_path / "out" / "t.engine", "fp16", PROFILE, timing_cache=tmp_path / "tc",
                            target=H100, build_fn=fake)
    engine = tmp_path / "out" / "t.engine"
    assert engine.read_bytes() == fake(fake.requests[0])
    assert read_sidecar(engine) == info
    assert (info.tensorrt_version, info.gpu_name, info.compute_capability) == ("10.3.0", H100.gpu_name, "sm_90")
    assert info.precision == "fp16" and info.profile == {"min": 1, "opt": 8, "max": 64}
    assert info.graph == "temporal" and info.strongly_typed and info.hmr_trt_version == "0.1.0"
    assert info.build_seconds >= 0 and info.engine_bytes == engine.stat().st_size
    from hmr_trt.manifest import sha256_of

    assert info.onnx_sha256 == sha256_of(onnx_path) and info.engine_sha256 == sha256_of(engine)
    request = fake.requests[0]
    assert request.settings.network_flags == ("STRONGLY_TYPED",) and request.timing_cache == tmp_path / "tc"
    assert sorted(p.name for p in engine.parent.iterdir()) == ["t.engine", "t.engine.json"]


@pytest.mark.parametrize("error", [KeyboardInterrupt, EngineError])
def test_interrupted_build_writes_nothing_and_keeps_the_old_engine(tmp_path, error) -> None:
    onnx_path = make_onnx(tmp_path / "t.onnx")
    engine = tmp_path / "t.engine"
    engine_from_onnx(onnx_path, engine, "fp32", PROFILE, target=H100, build_fn=FakeBuild())
    before = engine.read_bytes(), sidecar_path(engine).read_bytes()

    def interrupted(_request):
        raise error("stop")

    with pytest.raises(error):
        engine_from_onnx(onnx_path, engine, "fp16", PROFILE, target=H100, build_fn=interrupted)
    assert (engine.read_bytes(), sidecar_path(engine).read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.engine", "t.engine.json", "t.onnx"]


def test_atomic_write_leaves_no_temporary_file_when_writing_fails(tmp_path, monkeypatch) -> None:
    def broken_fsync(_fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(EngineError, match="cannot write .*x.engine: No space left on device"):
        sidecar.atomic_write(tmp_path / "x.engine", b"data")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# verifying and loading


def built(tmp_path, target: Target = H100) -> Path:
    engine = tmp_path / "t.engine"
    engine_from_onnx(make_onnx(tmp_path / "t.onnx"), engine, "fp16", PROFILE, target=target, build_fn=FakeBuild(),
                     source="/data/export")
    return engine


def test_matching_engine_verifies(tmp_path) -> None:
    engine = built(tmp_path)
    data, info = verify_engine(engine, target=H100)
    assert data == engine.read_bytes() and info.source == "/data/export"


def test_mismatching_tensorrt_or_gpu_says_how_to_rebuild(tmp_path) -> None:
    engine = built(tmp_path)
    other = Target("10.8.0", "NVIDIA L4", "sm_89")
    with pytest.raises(EngineError) as err:
        verify_engine(engine, target=other)
    assert ("engine built for TensorRT 10.3.0 on sm_90; this machine has 10.8.0 on sm_89: "
            "rebuild with trt-build /data/export --precision fp16 --batch 1:8:64") in str(err.value)
    with pytest.raises(EngineError, match="TensorRT 10.3.0 on sm_90; this machine has 10.3.0 on sm_89"):
        verify_engine(engine, target=Target("10.3.0", "NVIDIA L4", "sm_89"))


def test_same_compute_capability_on_another_gpu_model_runs_with_a_warning(tmp_path) -> None:
    engine = built(tmp_path)
    with pytest.warns(UserWarning, match="built on NVIDIA H100 80GB HBM3, this GPU is NVIDIA H100 PCIe"):
        verify_engine(engine, target=Target("10.3.0", "NVIDIA H100 PCIe", "sm_90"))


def test_truncated_engine_is_detected_by_its_sidecar(tmp_path) -> None:
    engine = built(tmp_path)
    engine.write_bytes(engine.read_bytes()[:17])
    with pytest.raises(EngineError, match=r"t.engine is truncated or corrupt \(17 bytes.*rebuild with trt-build"):
        verify_engine(engine, target=H100)


def test_engine_without_or_with_a_broken_sidecar(tmp_path) -> None:
    engine = built(tmp_path)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(EngineError, match="not a valid engine sidecar"):
        verify_engine(engine, target=H100)
    sidecar_path(engine).unlink()
    with pytest.raises(EngineError, match="has no sidecar t.engine.json"):
        verify_engine(engine, target=H100)
    with pytest.raises(EngineError, match="engine file not found"):
        verify_engine(tmp_path / "missing.engine", target=H100)


def test_sidecar_ignores_unknown_fields(tmp_path) -> None:
    engine = built(tmp_path)
    data = json.loads(sidecar_path(engine).read_text())
    sidecar_path(engine).write_text(json.dumps({**data, "added_later": 1}))
    assert isinstance(read_sidecar(engine), EngineInfo)


def test_load_engine_without_tensorrt_says_what_to_install(tmp_path, monkeypatch) -> None:
    engine = built(tmp_path)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    with pytest.raises(EngineError, match=r"TensorRT is not installed .*'\.\[trt-cu12\]'.*'\.\[trt-cu13\]'"):
        engine_loader.engine_from_path(engine, target=H100)
    assert trt_compat.trt_version() is None
    ok, reason = trt_compat.trt_available()
    assert not ok and "TensorRT is not installed" in reason


# ---------------------------------------------------------------------------------------------
# build_serialized against a simulated TensorRT


class SimLayer:
    def __init__(self, kind: str, dtype: str) -> None:
        self.type, self.num_outputs = kind, 1
        self._out = types.SimpleNamespace(dtype=dtype)

    def get_output(self, _i: int):
        return self._out


class SimBuildTrt:
    """Just enough of tensorrt's builder API for build_serialized (hmr-trt's reading of the API)."""

    __version__ = "10.3.0"

    def __init__(self, layers, parse_ok: bool = True, build_ok: bool = True) -> None:
        enums = fake_trt_enums()
        self.NetworkDefinitionCreationFlag, self.BuilderFlag, self.TacticSource = (
            enums.NetworkDefinitionCreationFlag, enums.BuilderFlag, enums.TacticSource)
        self.LayerType = types.SimpleNamespace(QUANTIZE="Q", DEQUANTIZE="DQ")
        self.DataType = types.SimpleNamespace(HALF="half", FLOAT="float")
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
        self.layers, self.parse_ok, self.build_ok = layers, parse_ok, build_ok
        self.log: dict = {}
        sim = self

        class ILogger:
            INTERNAL_ERROR, ERROR, WARNING = 0, 1, 2

            def __init__(self) -> None:
                pass

        class Network:
            num_inputs = 1
            num_layers = len(layers)

            def get_input(self, _i):
                return types.SimpleNamespace(name="features", shape=(-1, 4, 8))

            def get_layer(self, i):
                return layers[i]

        class Parser:
            def __init__(self, network, logger) -> None:
                self.num_errors = 0 if sim.parse_ok else 2

            def parse_from_file(self, path):
                sim.log["parsed"] = path
                return sim.parse_ok

            def get_error(self, i):
                return f"node_{i}: unsupported op"

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                sim.log["profile"] = (name, lo, opt, hi)

        class Config(FakeConfig):
            builder_optimization_level = 3

            def set_memory_pool_limit(self, pool, size):
                sim.log["workspace"] = (pool, size)

            def add_optimization_profile(self, profile):
                sim.log["profiles"] = sim.log.get("profiles", 0) + 1

            def create_timing_cache(self, data):
                sim.log["timing_in"] = bytes(data)
                return types.SimpleNamespace(serialize=lambda: b"TIMING")

            def set_timing_cache(self, cache, ignore_mismatch):
                return True

        class Builder:
            def __init__(self, logger) -> None:
                self.logger = logger

            def create_network(self, flags):
                sim.log["network_flags"] = flags
                return Network()

            def create_builder_config(self):
                sim.log["config"] = Config()
                return sim.log["config"]

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                if not sim.build_ok:
                    self.logger.log(ILogger.ERROR, "out of workspace")
                    return None
                return memoryview(b"SERIALIZED")

        self.ILogger, self.Builder, self.OnnxParser = ILogger, Builder, Parser


def request_for(tmp_path, precision: str, version: str = "10.3.0") -> BuildRequest:
    return BuildRequest(make_onnx(tmp_path / "t.onnx"), precision, PROFILE, 1024, 4, tmp_path / "timing.cache",
                        build_settings(Version(version), precision))


def test_build_serialized_configures_tensorrt(tmp_path, monkeypatch) -> None:
    trt = SimBuildTrt([SimLayer("conv", "half")])
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    (tmp_path / "timing.cache").write_bytes(b"OLD")
    out = builder.build_serialized(request_for(tmp_path, "fp16"))
    assert bytes(out) == b"SERIALIZED"
    log = trt.log
    assert log["network_flags"] == 1 << 1 and log["parsed"].endswith("t.onnx")
    assert log["profile"] == ("features", (1, 4, 8), (8, 4, 8), (64, 4, 8)) and log["profiles"] == 1
    assert log["workspace"] == ("workspace", 1024 << 20) and log["config"].builder_optimization_level == 4
    assert log["timing_in"] == b"OLD" and (tmp_path / "timing.cache").read_bytes() == b"TIMING"
    assert 7 not in log["config"].flags  # TF32 off


class SimLayer86(SimLayer):
    """A parsed layer with the precision API 8.6 has (ILayer.precision, set_output_type)."""

    def __init__(self, name: str, dtypes: tuple) -> None:
        super().__init__("layer", dtypes[0])
        self.name, self.num_outputs, self.precision, self.set_types = name, len(dtypes), None, {}
        self._outs = [types.SimpleNamespace(dtype=d) for d in dtypes]

    def get_output(self, i: int):
        return self._outs[i]

    def set_output_type(self, i: int, dtype) -> None:
        self.set_types[i] = dtype


def test_tensorrt_86_fp16_pins_the_onnx_float32_layers_and_obeys_them(tmp_path, monkeypatch) -> None:
    kept = SimLayer86("/stage1/dem/Softmax", ("float",))  # the recipe's keep-list: float32 in the FP16 ONNX
    half = SimLayer86("/stage1/MatMul", ("half",))
    mixed = SimLayer86("/Split", ("float", "half"))
    trt = SimBuildTrt([kept, half, mixed])
    trt.__version__ = "8.6.1"
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    builder.build_serialized(request_for(tmp_path, "fp16", "8.6.1"))
    assert (kept.precision, kept.set_types) == ("float", {0: "float"})
    assert half.precision is None and mixed.precision is None and not half.set_types and not mixed.set_types
    assert {0, 9} <= trt.log["config"].flags  # FP16 and OBEY_PRECISION_CONSTRAINTS
    # 10+: strongly typed, the ONNX's types are the engine's: nothing to pin, no precision flags
    kept10 = SimLayer86("/stage1/dem/Softmax", ("float",))
    trt10 = SimBuildTrt([kept10, SimLayer86("/mm", ("half",))])
    monkeypatch.setitem(sys.modules, "tensorrt", trt10)
    builder.build_serialized(request_for(tmp_path, "fp16", "10.3.0"))
    assert kept10.precision is None and 0 not in trt10.log["config"].flags and 9 not in trt10.log["config"].flags


def test_one_tensorrt_logger_per_process_for_builds_and_runtimes(tmp_path, monkeypatch) -> None:
    trt = SimBuildTrt([SimLayer("conv", "half")])
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    seen = []
    real_builder = trt.Builder
    trt.Builder = lambda logger: seen.append(logger) or real_builder(logger)
    builder.build_serialized(request_for(tmp_path, "fp16"))
    builder.build_serialized(request_for(tmp_path, "fp16"))
    assert len(seen) == 2 and seen[0] is seen[1] is trt_compat.process_logger(trt)
    from hmr_trt.runtime import engine_loader

    assert engine_loader.collecting_logger(trt) is seen[0]
    # a failed build reports the errors TensorRT logged during that build, not an earlier one's
    seen[0].errors.append("stale error from an earlier build")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    trt.build_ok = False
    with pytest.raises(EngineError, match="failed to build an engine from t.onnx: out of workspace$"):
        builder.build_serialized(request_for(tmp_path, "fp32"))


def test_build_serialized_reports_every_parser_error_and_build_failures(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", SimBuildTrt([], parse_ok=False))
    with pytest.raises(EngineError, match=r"cannot parse t.onnx, 2 error\(s\): node_0: unsupported op \| node_1"):
        builder.build_serialized(request_for(tmp_path, "fp32"))
    monkeypatch.setitem(sys.modules, "tensorrt", SimBuildTrt([SimLayer("q", "float")], build_ok=False))
    with pytest.raises(EngineError, match="failed to build an engine from t.onnx: out of workspace"):
        builder.build_serialized(request_for(tmp_path, "fp32"))
    monkeypatch.setitem(sys.modules, "tensorrt", SimBuildTrt([SimLayer("Q", "float")]))
    with pytest.raises(EngineError, match="has Q/DQ nodes"):
        builder.build_serialized(request_for(tmp_path, "fp32"))


# ---------------------------------------------------------------------------------------------
# the runtime TensorRT backend


def test_trt_backend_imports_without_tensorrt_or_cuda() -> None:
    code = ("import sys\nimport hmr_trt.runtime.trt_backend as t\n"
            "b = t.TensorRTBackend('x.engine', num_buffers=2, cuda_graphs=True)\n"
            "bad = [m for m in ('tensorrt', 'cuda', 'torch', 'onnx', 'hmr_trt.engines') if m in sys.modules]\n"
            "print(bad)\nsys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_trt_backend_without_tensorrt_fails_in_one_line(monkeypatch) -> None:
    from hmr_trt.runtime.trt_backend import TensorRTBackend

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EngineError, match=r"TensorRT is not installed .*\.\[trt-cu12\]"):
        with TensorRTBackend("x.engine"):
            pass
    with pytest.raises(ConfigError, match="num_buffers must be >= 1"):
        TensorRTBackend("x.engine", num_buffers=0)


class SimCuda:
    """cuda-python's runtime calls on host memory: copies run at once, capture records enqueues."""

    def __init__(self, capture_fails: bool = False) -> None:
        self.buffers: dict[int, ctypes.Array] = {}
        self.capturing = None
        self.capture_fails = capture_fails
        self.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2,
                                                    cudaMemcpyDeviceToDevice=3)
        self.cudaStreamCaptureMode = types.SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)
        self.ids = iter(range(1000, 100000))
        self.live: set = set()

    def _alloc(self, n):
        buf = ctypes.create_string_buffer(n)
        self.buffers[ctypes.addressof(buf)] = buf
        return 0, ctypes.addressof(buf)

    cudaMalloc = cudaMallocHost = _alloc

    def _handle(self, *_args):
        h = next(self.ids)
        self.live.add(h)
        return 0, h

    cudaStreamCreateWithFlags = cudaEventCreateWithFlags = _handle

    def _ok(self, *_args):
        return (0,)

    def cudaGetDeviceCount(self):
        return 0, 1

    def cudaGetDeviceProperties(self, device):
        return 0, types.SimpleNamespace(name=SIM_TARGET.gpu_name.encode() + b"\0\0", major=9, minor=0)

    def cudaDriverGetVersion(self):
        return 0, 12040

    cudaSetDevice = cudaEventRecord = cudaStreamWaitEvent = cudaEventSynchronize = cudaStreamSynchronize = _ok
    cudaGetLastError = cudaGraphDestroy = cudaGraphExecDestroy = _ok

    def _free(self, handle):
        self.buffers.pop(handle, None)
        self.live.discard(handle)
        return (0,)

    cudaFree = cudaFreeHost = cudaStreamDestroy = cudaEventDestroy = _free

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        assert self.capturing is None, "copies are never captured"
        ctypes.memmove(dst, src, n)
        return (0,)

    def cudaStreamBeginCapture(self, stream, mode):
        if self.capture_fails:
            return (types.SimpleNamespace(value=900, name="cudaErrorStreamCaptureUnsupported"),)
        self.capturing = []
        return (0,)

    def cudaStreamEndCapture(self, stream):
        graph, self.capturing = self.capturing, None
        return 0, graph

    def cudaGraphInstantiateWithFlags(self, graph, flags):
        return 0, list(graph)

    def cudaGraphLaunch(self, graph_exec, stream):
        for op in graph_exec:
            op()
        return (0,)


class SimEngine:
    """features (B, 4, 8) -> out (B, 4, 2) = 2 * features[..., :2]; profile batch 1..6."""

    def __init__(self, cuda: SimCuda) -> None:
        self.cuda = cuda
        self.num_io_tensors = 2
        self.names = ["features", "out"]

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_shape(self, name):
        return (-1, 4, 8) if name == "features" else (-1, 4, 2)

    def get_tensor_dtype(self, name):
        return "f32"

    def get_tensor_mode(self, name):
        return "in" if name == "features" else "out"

    def get_tensor_profile_shape(self, name, index):
        assert (name, index) == ("features", 0)
        return [(1, 4, 8), (2, 4, 8), (6, 4, 8)]

    def create_execution_context(self):
        return SimContext(self.cuda)


class SimContext:
    def __init__(self, cuda: SimCuda) -> None:
        self.cuda, self.shape, self.addresses, self.runs = cuda, None, {}, 0

    def set_input_shape(self, name, shape):
        if not 1 <= shape[0] <= 6:
            return False
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return self.shape if name == "features" else (self.shape[0], 4, 2)

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream):
        assert isinstance(stream, int)
        shape, src, dst = self.shape, self.addresses["features"], self.addresses["out"]

        def run():
            self.runs += 1
            n = int(np.prod(shape))
            x = np.ctypeslib.as_array((ctypes.c_float * n).from_address(src)).reshape(shape)
            y = np.ctypeslib.as_array((ctypes.c_float * (n // 4)).from_address(dst)).reshape(shape[0], 4, 2)
            y[...] = 2 * x[..., :2]

        if self.cuda.capturing is not None:
            self.cuda.capturing.append(run)
        else:
            run()
        return True


@pytest.fixture
def sim(monkeypatch):
    """A simulated tensorrt + cuda.bindings.runtime in sys.modules; yields the SimCuda."""

    def install(capture_fails: bool = False) -> SimCuda:
        cuda = SimCuda(capture_fails)
        class ILogger:
            INTERNAL_ERROR, ERROR, WARNING = 0, 1, 2

            def __init__(self) -> None:
                pass

        def deserialize(data):
            if bytes(data[:4]) == b"SIM!":
                return SimEngine(cuda)
            runtime.logger.log(ILogger.ERROR, "Serialization assertion magicTagRead == kMAGIC_TAG failed")
            return None

        runtime = types.SimpleNamespace(deserialize_cuda_engine=deserialize)

        def make_runtime(logger):
            runtime.logger = logger
            return runtime

        trt = types.SimpleNamespace(
            __version__=SIM_TARGET.tensorrt_version, TensorIOMode=types.SimpleNamespace(INPUT="in", OUTPUT="out"),
            nptype=lambda _dtype: np.float32, ILogger=ILogger, Runtime=make_runtime)
        package, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
        package.__path__, bindings.__path__ = [], []
        bindings.runtime, package.bindings = cuda, bindings
        for name, module in (("tensorrt", trt), ("cuda", package), ("cuda.bindings", bindings),
                             ("cuda.bindings.runtime", cuda)):
            monkeypatch.setitem(sys.modules, name, module)
        return cuda

    return install


SIM_TARGET = Target("10.3.0", "NVIDIA Sim GPU", "sm_90")  # what the simulated cuda-python reports


def sim_engine(tmp_path: Path, data: bytes = b"SIM!engine", target: Target = SIM_TARGET,
               name: str = "sim.engine") -> Path:
    """An engine file with the sidecar trt-build writes (the build faked to return ``data``)."""
    path = tmp_path / name
    engine_from_onnx(make_onnx(tmp_path / f"{name}.onnx"), path, "fp32", PROFILE, target=target,
                     build_fn=lambda _request: data, source="/data/export")
    return path


def windows(batch: int, seed: int = 0) -> dict:
    return {"features": np.random.default_rng(seed).standard_normal((batch, 4, 8)).astype(np.float32)}


@pytest.mark.parametrize("num_buffers", [1, 2])
def test_sim_backend_runs_with_the_backend_contract(sim, tmp_path, num_buffers) -> None:
    from hmr_trt.runtime.trt_backend import TensorRTBackend

    cuda = sim()
    path = sim_engine(tmp_path)
    with TensorRTBackend(path, num_buffers=num_buffers) as backend:
        assert [s.name for s in backend.inputs] == ["features"] and backend.inputs[0].shape == ("batch", 4, 8)
        assert backend.outputs[0].shape == ("batch", 4, 2) and (backend.min_batch, backend.max_batch) == (1, 6)
        for batch in (1, 6, 3):
            feed = windows(batch, seed=batch)
            out = backend.infer(feed)
            np.testing.assert_array_equal(out["out"], 2 * feed["features"][..., :2])
        with pytest.raises(InputSpecError, match="batch 7 exceeds the maximum 6"):
            backend.infer(windows(7))
        with pytest.raises(InputSpecError, match="has dtype float64"):
            backend.infer({"features": np.zeros((2, 4, 8))})
    assert not cuda.buffers and not cuda.live, "everything allocated is freed on deactivate"


def test_sim_double_buffering_collects_each_batch_once_in_any_order(sim, tmp_path) -> None:
    from hmr_trt.runtime.trt_backend import TensorRTBackend

    sim()
    feeds = [windows(b, seed=i) for i, b in enumerate((2, 5, 1, 6, 3))]
    with TensorRTBackend(b"SIM!", num_buffers=2) as backend:
        h0, h1 = backend.submit(feeds[0]), backend.submit(feeds[1])
        h2 = backend.submit(feeds[2])  # slot of h0 reused: h0 is finished first, its outputs kept
        outs = {1: backend.collect(h1), 0: backend.collect(h0), 2: backend.collect(h2)}
        h3, h4 = backend.submit(feeds[3]), backend.submit(feeds[4])
        outs.update({3: backend.collect(h3), 4: backend.collect(h4)})
        for i, feed in enumerate(feeds):
            np.testing.assert_array_equal(outs[i]["out"], 2 * feed["features"][..., :2])
        with pytest.raises(HmrTrtError, match="already collected"):
            backend.collect(h0)
        lost = backend.submit(feeds[0])
    with pytest.raises(HmrTrtError, match="lost: the backend was deactivated"):
        backend.collect(lost)


def test_sim_cuda_graphs_capture_after_one_plain_run_and_replay_same_shapes(sim, tmp_path) -> None:
    from hmr_trt.runtime.trt_backend import TensorRTBackend

    sim()
    with TensorRTBackend(b"SIM!", cuda_graphs=True) as backend:
        for batch, seed in ((4, 0), (4, 1), (4, 2), (2, 3), (2, 4), (4, 5)):
            feed = windows(batch, seed)
            np.testing.assert_array_equal(backend.infer(feed)["out"], 2 * feed["features"][..., :2])
        # batch 4: plain + capture, launch, launch; batch 2: plain + capture, launch; batch 4 again: plain + capture
        assert backend.counts == {"enqueue": 3, "graph_capture": 3, "graph_launch": 3}
        assert backend.graph_error is None


def test_sim_cuda_graph_capture_failure_falls_back_to_plain_enqueue(sim) -> None:
    from hmr_trt.runtime.trt_backend import TensorRTBackend

    sim(capture_fails=True)
    with TensorRTBackend(b"SIM!", cuda_graphs=True) as backend:
        with pytest.warns(UserWarning, match="CUDA graph capture failed, using plain enqueue"):
            backend.infer(windows(3))
        for seed in range(3):
            feed = windows(3, seed)
            np.testing.assert_array_equal(backend.infer(feed)["out"], 2 * feed["features"][..., :2])
        assert "cudaErrorStreamCaptureUnsupported" in backend.graph_error
        assert backend.counts == {"enqueue": 4, "graph_capture": 0, "graph_launch": 0}


def test_sim_corrupt_engine_bytes_are_refused(sim, tmp_path) -> None:
    """Bytes TensorRT cannot read are refused with TensorRT's own message, even when the sidecar matches."""
    from hmr_trt.runtime.trt_backend import TensorRTBackend

    cuda = sim()
    path = sim_engine(tmp_path, data=b"garbage", name="bad.engine")
    with pytest.raises(EngineError, match=r"cannot deserialize .*bad.engine \(Serialization assertion magicTag.*\): "
                                          r"it is truncated or corrupt.*rebuild with trt-build /data/export"):
        TensorRTBackend(path).activate()
    with pytest.raises(EngineError, match="cannot deserialize the serialized engine"):
        TensorRTBackend(b"garbage").activate()
    with pytest.raises(EngineError, match="engine file not found"):
        TensorRTBackend(tmp_path / "missing.engine").activate()
    assert not cuda.buffers


def test_sim_backend_verifies_an_engine_file_before_tensorrt_reads_it(sim, tmp_path) -> None:
    """trt-run's backend loads through engine_from_path: sidecar, TensorRT version, GPU and sha256 checked."""
    from hmr_trt.runtime.trt_backend import TensorRTBackend

    cuda = sim()
    unverified = tmp_path / "plain.engine"
    unverified.write_bytes(b"SIM!engine")  # deserializable, but no sidecar
    with pytest.raises(EngineError, match="plain.engine has no sidecar plain.engine.json"):
        TensorRTBackend(unverified).activate()
    other = sim_engine(tmp_path, target=Target("10.8.0", "NVIDIA L4", "sm_89"), name="l4.engine")
    with pytest.raises(EngineError, match="engine built for TensorRT 10.8.0 on sm_89; this machine has 10.3.0 on sm_90"):
        TensorRTBackend(other).activate()
    truncated = sim_engine(tmp_path, data=b"SIM!engine-and-more", name="cut.engine")
    truncated.write_bytes(truncated.read_bytes()[:10])
    with pytest.raises(EngineError, match="cut.engine is truncated or corrupt"):
        TensorRTBackend(truncated).activate()
    assert not cuda.buffers and not cuda.live


def test_sim_backend_checks_the_engine_against_the_manifest_and_contract(sim, tmp_path) -> None:
    """trt-run hands the backend what graph_loader verified: the manifest's sha256 (checked on the bytes TensorRT
    gets) and the contract's graph (checked on the deserialized engine's own inputs and outputs)."""
    from hmr_trt.contract import GraphSpec
    from hmr_trt.contract import TensorSpec as GraphTensor
    from hmr_trt.errors import GraphError
    from hmr_trt.manifest import Artifact
    from hmr_trt.runtime.graph_loader import VerifiedGraph
    from hmr_trt.runtime.trt_backend import TensorRTBackend

    cuda = sim()
    path = sim_engine(tmp_path)
    info = read_sidecar(path)

    def expect(window: int, sha: str = info.engine_sha256) -> VerifiedGraph:
        spec = GraphSpec("temporal", "model", (GraphTensor("features", ("batch", window, 8)),),
                         (GraphTensor("out", ("batch", window, 2)),))
        return VerifiedGraph(path, Artifact("temporal", path.name, "engine", "fp32", sha, [], []), spec, sha)

    with TensorRTBackend(path, expect=expect(4)) as backend:
        assert backend.infer(windows(2))["out"].shape == (2, 4, 2)
    with pytest.raises(GraphError, match=r"sim.engine contradicts the contract of its export \(temporal graph\): "
                                         r"input features is float32 \(\?, 4, 8\), the contract says float32 "
                                         r"\(batch, 8, 8\); output out is float32 \(\?, 4, 2\)"):
        TensorRTBackend(path, expect=expect(8)).activate()
    with pytest.raises(GraphError, match="sim.engine is not the engine its manifest.json records"):
        TensorRTBackend(path, expect=expect(4, sha="0" * 64)).activate()
    assert not cuda.buffers and not cuda.live


def test_engine_runs_here_reads_the_manifest_engine_info() -> None:
    from hmr_trt.runtime.trt_backend import engine_runs_here

    info = {"engine": {"tensorrt_version": "10.3", "compute_capability": "sm_90", "precision": "fp16",
                       "source": "/x", "profile": {"min": 1, "opt": 2, "max": 4}}}
    ok, why = engine_runs_here(info, target=H100)
    assert ok and "as this machine" in why
    ok, why = engine_runs_here(info, target=Target("10.8.0", "NVIDIA L4", "sm_89"))
    assert not ok and why == ("engine built for TensorRT 10.3 on sm_90; this machine has 10.8.0 on sm_89: "
                              "rebuild with trt-build /x --precision fp16 --batch 1:2:4")
