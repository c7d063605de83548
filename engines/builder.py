"""ONNX -> TensorRT engine, written atomically with a sidecar that records what the engine is tied to.

``engine_from_onnx`` refuses ONNX files that are not hmr-trt exports (``onnx_metadata``), builds one
optimization profile over the graph's dynamic leading axis (min:opt:max; every other dimension
from the graph), and writes ``NAME.engine`` plus ``NAME.engine.json`` (``sidecar``: TensorRT
version, GPU and compute capability, precision, profile, ONNX and engine sha256, hmr-trt version,
build seconds).

The TensorRT-specific part is one function, ``build_serialized(BuildRequest) -> bytes``; tests
and callers can pass another ``build_fn``. Precision on TensorRT 10+ comes from the ONNX itself
(strongly typed: FP16 casts / INT8 Q/DQ made by the precision passes); on 8.6 from builder flags.
Version switches live in ``trt_compat``. Loading is not here: ``hmr_trt.runtime.engine_loader``
(``engine_from_path``) verifies the sidecar and deserializes, for every consumer.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

from hmr_trt import __version__
from hmr_trt.errors import ConfigError, EngineError
from hmr_trt.manifest import sha256_of
from hmr_trt.profile import ShapeProfile
from hmr_trt.runtime import trt_compat
from hmr_trt.runtime.engine_loader import EngineInfo, collecting_logger
from hmr_trt.runtime.trt_compat import (
    BuildSettings,
    Target,
    build_settings,
    check_precision,
    current_target,
    parse_version,
)

from .onnx_metadata import require_hmr_trt_graph
from .sidecar import atomic_write, write_engine

PathLike = Union[str, Path]
DEFAULT_WORKSPACE_MIB = 4096
OPT_LEVELS = range(0, 6)  # builder_optimization_level 0..5 (TensorRT's default is 3)


# ---------------------------------------------------------------------------------------------
# pure build rules (tested without TensorRT)


def check_build_options(precision: str, workspace_mib: int, opt_level: int) -> None:
    check_precision(precision)
    if workspace_mib < 1:
        raise ConfigError(f"--workspace-mib must be >= 1, got {workspace_mib}")
    if opt_level not in OPT_LEVELS:
        raise ConfigError(f"--opt-level must be in 0..5 (TensorRT's builder_optimization_level), got {opt_level}")


Dims = Tuple[int, ...]


def profile_shapes(inputs: Sequence[Tuple[str, Dims]], profile: ShapeProfile,
                   graph: str = "the graph") -> Dict[str, Tuple[Dims, Dims, Dims]]:
    """min/opt/max shapes for every input whose leading axis is dynamic (-1); other dims from the graph."""
    shapes = {}
    for name, dims in inputs:
        dims = tuple(int(d) for d in dims)
        if any(d < 0 for d in dims[1:]):
            raise EngineError(f"{graph}: input '{name}' {dims} has a dynamic axis other than the leading one; "
                              "hmr-trt exports only a dynamic batch axis")
        if dims and dims[0] < 0:
            rest = dims[1:]
            shapes[name] = ((profile.min, *rest), (profile.opt, *rest), (profile.max, *rest))
    return shapes


def check_precision_fits(precision: str, has_qdq: bool, has_half: bool, settings: BuildSettings, name: str) -> None:
    """The ONNX carries the precision asked for: Q/DQ exactly for int8, float16 tensors for strongly typed fp16."""
    version = settings.tensorrt_version
    if has_qdq and precision != "int8":
        raise EngineError(f"{name} has Q/DQ nodes (an INT8 graph): build it with --precision int8")
    if precision == "int8" and not has_qdq:
        raise EngineError(f"--precision int8 needs Q/DQ nodes in {name} (made by hmr-trt's INT8 calibration pass); "
                          f"TensorRT {version} gets no calibrator from hmr-trt")
    if precision == "fp16" and settings.strongly_typed and not has_half:
        raise EngineError(f"{name} has no float16 tensors: TensorRT {version} builds strongly typed networks, "
                          "so precision comes from the ONNX; build from the FP16 ONNX (trt-export --precision fp16)")


# ---------------------------------------------------------------------------------------------
# the TensorRT part


@dataclass(frozen=True)
class BuildRequest:
    onnx_path: Path
    precision: str
    profile: ShapeProfile
    workspace_mib: int
    opt_level: int
    timing_cache: Optional[Path]
    settings: BuildSettings


BuildFn = Callable[[BuildRequest], Any]  # returns the serialized engine (bytes-like)


def _parse(trt: Any, logger: Any, builder: Any, request: BuildRequest) -> Tuple[Any, Any]:
    network = builder.create_network(trt_compat.network_flag_bits(trt, request.settings))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(request.onnx_path)):
        errors = [str(parser.get_error(i)).strip() for i in range(parser.num_errors)] or logger.errors
        raise EngineError(f"TensorRT {request.settings.tensorrt_version} cannot parse {request.onnx_path.name}, "
                          f"{len(errors)} error(s): " + " | ".join(errors))
    return network, parser


def _network_precision(trt: Any, network: Any) -> Tuple[bool, bool]:
    """(has Q/DQ layers, has float16 tensors) of a parsed network."""
    qdq = {trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE}
    has_qdq = has_half = False
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        has_qdq = has_qdq or layer.type in qdq
        has_half = has_half or any(layer.get_output(j).dtype == trt.DataType.HALF for j in range(layer.num_outputs))
    return has_qdq, has_half


def _add_profile(builder: Any, network: Any, config: Any, request: BuildRequest) -> None:
    inputs = [(network.get_input(i).name, tuple(network.get_input(i).shape)) for i in range(network.num_inputs)]
    shapes = profile_shapes(inputs, request.profile, request.onnx_path.name)
    if not shapes:
        return
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)


def _attach_timing_cache(config: Any, path: Optional[Path]) -> Any:
    """Load the timing cache from ``path`` (an unreadable or mismatching one is replaced by an empty one)."""
    data = b""
    if path is not None and path.is_file():
        data = path.read_bytes()
    try:
        cache = config.create_timing_cache(data)
        if config.set_timing_cache(cache, False) is False:
            raise ValueError("timing cache from another TensorRT version or GPU")
    except (RuntimeError, ValueError, TypeError):
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def build_serialized(request: BuildRequest) -> Any:
    """Parse, configure and build with TensorRT; returns the serialized engine (IHostMemory)."""
    trt = trt_compat.import_tensorrt()
    logger = collecting_logger(trt)  # the process's one logger: its errors are this build's
    del logger.errors[:]
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, logger, builder, request)
    has_qdq, has_half = _network_precision(trt, network)
    check_precision_fits(request.precision, has_qdq, has_half, request.settings, request.onnx_path.name)
    if request.settings.pin_fp32_layers and has_half:  # 8.6 FP16: the FP16 ONNX's float32 layers stay FP32
        trt_compat.pin_fp32_layers(trt, network)
    config = builder.create_builder_config()
    trt_compat.apply_builder_settings(trt, config, request.settings)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, request.workspace_mib << 20)
    config.builder_optimization_level = request.opt_level
    _add_profile(builder, network, config, request)
    cache = _attach_timing_cache(config, request.timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        detail = " | ".join(logger.errors[-5:]) or "no error message from TensorRT (set HMR_TRT_DEBUG=1 for its log)"
        raise EngineError(f"TensorRT {request.settings.tensorrt_version} failed to build an engine from "
                          f"{request.onnx_path.name}: {detail}")
    if request.timing_cache is not None:
        atomic_write(request.timing_cache, memoryview(cache.serialize()))
    return serialized


# ---------------------------------------------------------------------------------------------
# the public entry points


def engine_from_onnx(
    onnx_path: PathLike,
    engine_path: PathLike,
    precision: str,
    profile: ShapeProfile,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    opt_level: int = 3,
    timing_cache: Optional[PathLike] = None,
    *,
    target: Optional[Target] = None,
    build_fn: Optional[BuildFn] = None,
    source: Optional[str] = None,
    onnx_sha256: Optional[str] = None,
) -> EngineInfo:
    """Build ``engine_path`` (and its sidecar) from an hmr-trt ONNX file; returns its EngineInfo.

    ``precision`` is the ONNX's own precision (it picks the 8.6 builder flags and is checked
    against the graph). ``target`` defaults to this machine; ``build_fn`` to ``build_serialized``.
    """
    check_build_options(precision, workspace_mib, opt_level)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    meta = require_hmr_trt_graph(onnx_path)
    target = target or current_target()
    settings = build_settings(parse_version(target.tensorrt_version), precision)
    request = BuildRequest(onnx_path, precision, profile, workspace_mib, opt_level,
                           Path(timing_cache) if timing_cache is not None else None, settings)
    start = time.perf_counter()
    data = memoryview((build_fn or build_serialized)(request))
    seconds = time.perf_counter() - start
    info = EngineInfo(
        tensorrt_version=target.tensorrt_version, gpu_name=target.gpu_name,
        compute_capability=target.compute_capability, precision=precision, profile=profile.to_dict(),
        onnx_sha256=onnx_sha256 or sha256_of(onnx_path), hmr_trt_version=__version__,
        build_seconds=round(seconds, 3), graph=meta.get("graph", ""), source=source or str(onnx_path.absolute()),
        strongly_typed=settings.strongly_typed, engine_sha256=hashlib.sha256(data).hexdigest(),
        engine_bytes=data.nbytes,
    )
    write_engine(engine_path, data, info)
    return info
