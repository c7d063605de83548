"""ONNX -> TensorRT engine, written atomically, with a sidecar that records what the engine is tied to.

``engine_from_onnx`` refuses ONNX files that are not hmr-trt exports (no ``hmr_trt.graph``
metadata), builds one optimization profile over the graph's dynamic leading axis (min:opt:max;
every other dimension from the graph), and writes ``NAME.engine`` plus ``NAME.engine.json``
(``EngineInfo``: TensorRT version, GPU and compute capability, precision, profile, ONNX and
engine sha256, hmr-trt version, build seconds). Both go through a temporary file and
``os.replace``: an error or Ctrl-C never leaves a half-written engine.

The TensorRT-specific part is one function, ``build_serialized(BuildRequest) -> bytes``; tests
and callers can pass another ``build_fn``. Precision on TensorRT 10+ comes from the ONNX itself
(strongly typed: FP16 casts / INT8 Q/DQ made by the precision passes); on 8.6 from builder flags.
Version switches live in ``trt_compat``.

``load_engine`` checks the sidecar before deserializing: a mismatching TensorRT version or
compute capability, or an engine whose sha256 is not the sidecar's (truncated, corrupt), is
refused with a message that says how to rebuild.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from hmr_trt import __version__
from hmr_trt.errors import ConfigError, EngineError
from hmr_trt.fileio import write_bytes_atomic
from hmr_trt.manifest import sha256_of
from hmr_trt.profile import ShapeProfile
from hmr_trt.runtime import trt_compat
from hmr_trt.runtime.trt_compat import (
    BuildSettings,
    Target,
    build_settings,
    check_precision,
    current_target,
    parse_version,
)

PathLike = Union[str, Path]
METADATA_PREFIX = "hmr_trt."
GRAPH_KEY = METADATA_PREFIX + "graph"
SIDECAR_SUFFIX = ".json"
DEFAULT_WORKSPACE_MIB = 4096
OPT_LEVELS = range(0, 6)  # builder_optimization_level 0..5 (TensorRT's default is 3)


# ---------------------------------------------------------------------------------------------
# EngineInfo and its sidecar


@dataclass
class EngineInfo:
    """What one engine is and what it is tied to; stored beside it as ``NAME.engine.json``."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "sm_90"
    precision: str  # of the ONNX it was built from: fp32 | fp16 | int8
    profile: Dict[str, int]  # min/opt/max of the dynamic leading axis
    onnx_sha256: str
    hmr_trt_version: str
    build_seconds: float
    graph: str = ""  # hmr_trt.graph of the ONNX: temporal, body_model, backbone
    source: str = ""  # what to give trt-build to rebuild it (an export directory or an ONNX file)
    strongly_typed: bool = False
    engine_sha256: str = ""
    engine_bytes: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> EngineInfo:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def shape_profile(self) -> ShapeProfile:
        return ShapeProfile(**self.profile)


def sidecar_path(engine_path: PathLike) -> Path:
    path = Path(engine_path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def write_sidecar(engine_path: PathLike, info: EngineInfo) -> Path:
    path = sidecar_path(engine_path)
    atomic_write(path, (json.dumps(info.to_dict(), indent=2) + "\n").encode())
    return path


def read_sidecar(engine_path: PathLike) -> EngineInfo:
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise EngineError(f"{engine_path} has no sidecar {path.name}: it was not written by trt-build "
                          "(or was moved without it); rebuild it with trt-build")
    try:
        return EngineInfo.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise EngineError(f"{path} is not a valid engine sidecar ({exc}); rebuild the engine with trt-build") from exc


# ---------------------------------------------------------------------------------------------
# atomic files


def atomic_write(path: PathLike, data: Any) -> None:
    """Bytes-like ``data`` written atomically (hmr_trt.fileio); failures are EngineErrors."""
    write_bytes_atomic(path, data, EngineError)


def write_engine(engine_path: PathLike, data: Any, info: EngineInfo) -> None:
    """The engine, then its sidecar; if the sidecar cannot be written the engine is removed again."""
    atomic_write(engine_path, data)
    try:
        write_sidecar(engine_path, info)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(engine_path).unlink()
        raise


# ---------------------------------------------------------------------------------------------
# ONNX metadata without the onnx package (the GPU image has tensorrt and numpy, not onnx)


def _varint(buf: Any, pos: int) -> Tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: Any, start: int, end: int) -> Iterator[Tuple[int, int, Any]]:
    """(field number, wire type, value) of a protobuf message; length-delimited values as (start, end)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = (pos, pos + length), pos + length
        elif wire == 5:
            value, pos = None, pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > end:
            raise ValueError("field runs past the end of the message")
        yield number, wire, value


MODEL_METADATA_FIELD = 14  # ModelProto.metadata_props (StringStringEntryProto: key = 1, value = 2)


def read_onnx_metadata(path: PathLike) -> Dict[str, str]:
    """``ModelProto.metadata_props`` of an ONNX file, read straight from the protobuf wire format."""
    path = Path(path)
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _metadata_from(buf)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise EngineError(f"{path} is not a readable ONNX file: {exc}") from exc


def _metadata_from(buf: Any) -> Dict[str, str]:
    props: Dict[str, str] = {}
    for number, wire, value in _fields(buf, 0, len(buf)):
        if number != MODEL_METADATA_FIELD or wire != 2:
            continue
        entry = {n: bytes(buf[v[0]:v[1]]).decode() for n, w, v in _fields(buf, *value) if w == 2 and n in (1, 2)}
        props[entry.get(1, "")] = entry.get(2, "")
    return props


def require_hmr_trt_graph(path: PathLike) -> Dict[str, str]:
    """The ``hmr_trt.*`` metadata (prefix stripped) of an ONNX file; EngineError when it is not ours."""
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"ONNX file not found: {path}")
    props = read_onnx_metadata(path)
    if GRAPH_KEY not in props:
        raise EngineError(f"{path} is not an hmr-trt export (no '{GRAPH_KEY}' metadata): build engines from the "
                          "ONNX files trt-export writes (or its export directory)")
    return {k[len(METADATA_PREFIX):]: v for k, v in props.items() if k.startswith(METADATA_PREFIX)}


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


def _collecting_logger(trt: Any) -> Any:
    """A TensorRT logger that keeps error messages for the exception text (and prints them with HMR_TRT_DEBUG)."""

    class Collector(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: List[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                self.errors.append(str(msg).strip())
            if os.environ.get("HMR_TRT_DEBUG"):
                print(f"[TensorRT {severity}] {msg}")

    return Collector()


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
    logger = _collecting_logger(trt)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, logger, builder, request)
    check_precision_fits(request.precision, *_network_precision(trt, network), request.settings,
                         request.onnx_path.name)
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


def rebuild_hint(info: EngineInfo) -> str:
    profile = info.profile
    return (f"trt-build {info.source or 'EXPORT_DIR'} --precision {info.precision} "
            f"--batch {profile.get('min')}:{profile.get('opt')}:{profile.get('max')}")


def mismatch(info: EngineInfo, target: Target) -> Optional[str]:
    """Why an engine cannot run on ``target`` (TensorRT version or compute capability), or None."""
    same_trt = parse_version(info.tensorrt_version) == parse_version(target.tensorrt_version)
    if same_trt and info.compute_capability == target.compute_capability:
        return None
    return (f"engine built for TensorRT {info.tensorrt_version} on {info.compute_capability}; this machine has "
            f"{target.tensorrt_version} on {target.compute_capability}: rebuild with {rebuild_hint(info)}")


def verify_engine(path: PathLike, info: Optional[EngineInfo] = None,
                  target: Optional[Target] = None) -> Tuple[bytes, EngineInfo]:
    """The engine's bytes once its sidecar matches this machine and its sha256; EngineError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"engine file not found: {path}")
    info = info or read_sidecar(path)
    target = target or current_target()
    problem = mismatch(info, target)
    if problem:
        raise EngineError(f"{path.name}: {problem}")
    if info.gpu_name and info.gpu_name != target.gpu_name:
        warnings.warn(f"{path.name} was built on {info.gpu_name}, this GPU is {target.gpu_name} (same "
                      f"{target.compute_capability}): it runs, but may be slower than a rebuilt engine", stacklevel=2)
    data = path.read_bytes()
    if info.engine_sha256 and hashlib.sha256(data).hexdigest() != info.engine_sha256:
        raise EngineError(f"{path} is truncated or corrupt ({len(data)} bytes; its sha256 does not match the "
                          f"sidecar's, {info.engine_bytes} bytes): rebuild with {rebuild_hint(info)}")
    return data, info


_RUNTIMES: List[Tuple[Any, Any]] = []  # (runtime, logger): they must outlive the engines; one per process


def _runtime(trt: Any) -> Tuple[Any, Any]:
    if not _RUNTIMES:
        logger = _collecting_logger(trt)
        _RUNTIMES.append((trt.Runtime(logger), logger))
    return _RUNTIMES[0]


def load_engine(path: PathLike, info: Optional[EngineInfo] = None) -> Any:
    """Deserialize a checked engine (``verify_engine``); returns a ``tensorrt.ICudaEngine``."""
    data, info = verify_engine(path, info)
    trt = trt_compat.import_tensorrt()
    runtime, logger = _runtime(trt)
    del logger.errors[:]
    try:
        engine = runtime.deserialize_cuda_engine(data)
    except (RuntimeError, TypeError) as exc:
        engine = None
        logger.errors.append(str(exc))
    if engine is None:
        detail = " | ".join(logger.errors[-3:]) or "no message from TensorRT"
        raise EngineError(f"TensorRT cannot deserialize {Path(path).name} ({detail}): rebuild with {rebuild_hint(info)}")
    return engine

