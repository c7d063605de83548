"""The engine cache: a key over everything an engine depends on, reuse on a hit, rebuild when corrupt."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from hmr_trt.engines.builder import BuildRequest
from hmr_trt.engines.cache import CACHE_ENV, EngineCache, cache_key, cached_engine, default_cache_dir
from hmr_trt.engines.sidecar import sidecar_path
from hmr_trt.errors import EngineError
from hmr_trt.profile import ShapeProfile
from hmr_trt.runtime.trt_compat import Target

H100 = Target("10.3.0", "NVIDIA H100 80GB HBM3", "sm_90")
PROFILE = ShapeProfile(1, 8, 64)
FIELDS = dict(tensorrt_version="10.3.0", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="sm_90",
              precision="fp16", profile=PROFILE, onnx_sha256="ab" * 32, hmr_trt_version="0.1.0")


def make_onnx(path: Path, stamp: bool = True, scale: float = 1.0) -> Path:
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4, 8])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4, 8])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1], np.array([scale], np.float32))
    g = helper.make_graph([helper.make_node("Mul", ["features", "w"], ["out"])], "g", [x], [y], initializer=[w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    if stamp:
        entry = model.metadata_props.add()
        entry.key, entry.value = "hmr_trt.graph", "temporal"
    onnx.save(model, str(path))
    return path


class CountingBuild:
    def __init__(self) -> None:
        self.requests: list[BuildRequest] = []

    def __call__(self, request: BuildRequest) -> bytes:
        self.requests.append(request)
        return f"ENGINE {request.precision} {request.profile} {len(self.requests)}".encode()


def test_key_is_stable() -> None:
    assert cache_key(**FIELDS) == cache_key(**FIELDS)
    assert cache_key(**FIELDS) == cache_key(**{**FIELDS, "profile": {"max": 64, "min": 1, "opt": 8}})
    assert len(cache_key(**FIELDS)) == 64


@pytest.mark.parametrize(
    ("field", "value"),
    [("tensorrt_version", "10.8.0"), ("gpu_name", "NVIDIA L4"), ("compute_capability", "sm_89"),
     ("precision", "int8"), ("profile", ShapeProfile(1, 8, 32)), ("profile", ShapeProfile(1, 4, 64)),
     ("profile", ShapeProfile(2, 8, 64)), ("onnx_sha256", "cd" * 32), ("hmr_trt_version", "0.2.0")],
)
def test_key_changes_with_every_field(field, value) -> None:
    assert cache_key(**{**FIELDS, field: value}) != cache_key(**FIELDS)


def test_cache_dir_default_and_env_override(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "hmr-trt" / "engines"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    assert EngineCache().root == tmp_path / "elsewhere"


def test_second_call_reuses_the_engine(tmp_path) -> None:
    onnx_path, build = make_onnx(tmp_path / "t.onnx"), CountingBuild()
    first = cached_engine(onnx_path, "fp16", PROFILE, cache_dir=tmp_path / "c", target=H100, build_fn=build)
    second = cached_engine(onnx_path, "fp16", PROFILE, cache_dir=tmp_path / "c", target=H100, build_fn=build)
    assert len(build.requests) == 1 and not first.hit and second.hit
    assert second.path == first.path and second.info == first.info
    assert first.path.parent == tmp_path / "c" and sidecar_path(first.path).is_file()


def test_timing_cache_is_kept_per_tensorrt_and_gpu(tmp_path) -> None:
    build = CountingBuild()
    cached_engine(make_onnx(tmp_path / "t.onnx"), "fp32", PROFILE, cache_dir=tmp_path / "c", target=H100,
                  build_fn=build)
    assert build.requests[0].timing_cache == tmp_path / "c" / "timing" / "trt-10.3.0-sm_90.cache"


@pytest.mark.parametrize(
    "change",
    [dict(precision="fp32"), dict(profile=ShapeProfile(1, 8, 16)),
     dict(target=dataclasses.replace(H100, tensorrt_version="10.8.0")),
     dict(target=Target("10.3.0", "NVIDIA L4", "sm_89")), dict(scale=2.0)],
)
def test_a_change_in_any_input_builds_a_new_engine(tmp_path, change) -> None:
    build = CountingBuild()
    args = dict(precision="fp16", profile=PROFILE, target=H100)
    first = cached_engine(make_onnx(tmp_path / "t.onnx"), cache_dir=tmp_path / "c", build_fn=build, **args)
    scale = change.pop("scale", 1.0)
    second = cached_engine(make_onnx(tmp_path / "t.onnx", scale=scale), cache_dir=tmp_path / "c", build_fn=build,
                           **{**args, **change})
    assert len(build.requests) == 2 and not second.hit and second.path != first.path


def test_corrupt_cached_engine_is_rebuilt(tmp_path) -> None:
    onnx_path, build = make_onnx(tmp_path / "t.onnx"), CountingBuild()
    first = cached_engine(onnx_path, "fp16", PROFILE, cache_dir=tmp_path / "c", target=H100, build_fn=build)
    first.path.write_bytes(first.path.read_bytes()[:5])  # truncated
    again = cached_engine(onnx_path, "fp16", PROFILE, cache_dir=tmp_path / "c", target=H100, build_fn=build)
    assert len(build.requests) == 2 and not again.hit and again.path.read_bytes().endswith(b" 2")
    sidecar_path(again.path).unlink()  # engine without sidecar: not trusted either
    assert not cached_engine(onnx_path, "fp16", PROFILE, cache_dir=tmp_path / "c", target=H100, build_fn=build).hit


def test_non_hmr_trt_onnx_is_refused_before_any_build(tmp_path) -> None:
    build = CountingBuild()
    with pytest.raises(EngineError, match="is not an hmr-trt export"):
        cached_engine(make_onnx(tmp_path / "p.onnx", stamp=False), "fp32", PROFILE, cache_dir=tmp_path / "c",
                      target=H100, build_fn=build)
    assert not build.requests and not (tmp_path / "c").exists()
