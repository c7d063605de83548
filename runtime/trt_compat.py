"""TensorRT and CUDA across versions: lazy imports, what this machine has, and every version switch.

hmr-trt builds engines with TensorRT 8.6, 10.x and 11.x. Their differences are decided here and
nowhere else, always by comparing ``packaging`` versions (as strings, "10.10" < "10.9"):

=====================  ==========================  ==========================  =====================
                       8.6                         10.x                        11.x
=====================  ==========================  ==========================  =====================
network creation flag  EXPLICIT_BATCH (needed)     STRONGLY_TYPED              none: always strongly
                                                   (EXPLICIT_BATCH ignored)    typed (flag ignored)
precision              builder flags FP16, INT8    from the ONNX: FP16 casts,  from the ONNX only
                       (INT8 from Q/DQ, no         INT8 Q/DQ nodes             (FP16/INT8 flags and
                       calibrator)                                             calibrators removed)
tactic sources         CUBLAS, CUBLAS_LT, CUDNN    off by default,             gone
                       turned off (the offline     deprecated
                       bundle's libraries are
                       stubs that trap)
=====================  ==========================  ==========================  =====================

Everything else hmr-trt uses exists from 8.6 to 11 (OnnxParser, build_serialized_network,
set_memory_pool_limit, builder_optimization_level, timing caches, optimization profiles,
num_io_tensors / get_tensor_name, set_input_shape, set_tensor_address, execute_async_v3).
TF32 stays off in every version: the FP32 parts of an engine must stay FP32 for the mm goals.

``import tensorrt`` and cuda-python happen inside functions only, so this module imports on a
machine without either.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from packaging.version import InvalidVersion, Version

from hmr_trt.errors import ConfigError, EngineError

PRECISIONS = ("fp32", "fp16", "int8")
MIN_TENSORRT = Version("8.6")
TRT10 = Version("10.0")
TRT11 = Version("11.0")
# Library-backed tactic sources that TensorRT 8.6 may use; 10 deprecated them, 11 removed them.
LIBRARY_TACTICS = ("CUBLAS", "CUBLAS_LT", "CUDNN")

# The extras pin one TensorRT 10 and one cuda-python per CUDA major (pyproject.toml, constraints-gpu.txt).
EXTRA_FOR_CUDA = {12: "trt-cu12", 13: "trt-cu13"}
INSTALL_HINT = (
    "install the extra for the driver's CUDA major (nvidia-smi's \"CUDA Version\"): "
    "pip install -c constraints-gpu.txt '.[trt-cu12]' (CUDA 12 driver, R525+) or '.[trt-cu13]' "
    "(CUDA 13 driver, R580+; Python 3.10+), and run on a machine with an NVIDIA GPU "
    "(a GPU machine without network: the offline bundle's py39)"
)
# cudaError_t values (driver_types.h) the GPU probe names; cuda-python reports them as enum members.
CUDA_INSUFFICIENT_DRIVER, CUDA_NO_DEVICE = 35, 100


# ---------------------------------------------------------------------------------------------
# versions


def parse_version(text: str) -> Version:
    """A TensorRT version string as a comparable ``packaging`` Version."""
    try:
        return Version(str(text).strip())
    except InvalidVersion as exc:
        raise EngineError(f"cannot read the TensorRT version {text!r}") from exc


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def is_strongly_typed(version: Version) -> bool:
    """10.0+ builds strongly typed networks (hmr-trt's choice on 10; the only mode in 11)."""
    return version >= TRT10


def strongly_typed_only(version: Version) -> bool:
    return version >= TRT11


def has_precision_flags(version: Version) -> bool:
    """``BuilderFlag.FP16`` / ``INT8`` exist in 8.6 and 10.x; 11 removed them."""
    return version < TRT11


def needs_explicit_batch(version: Version) -> bool:
    """8.6 needs ``EXPLICIT_BATCH`` for ONNX networks; 10 made explicit batch the only mode."""
    return version < TRT10


def library_tactics_to_disable(version: Version) -> Tuple[str, ...]:
    """8.6 enables cuBLAS/cuBLASLt/cuDNN tactics by default; turn them off (10: off, 11: gone)."""
    return LIBRARY_TACTICS if version < TRT10 else ()


@dataclass(frozen=True)
class BuildSettings:
    """How one TensorRT version builds one precision: names of the enum members to set."""

    tensorrt_version: str
    network_flags: Tuple[str, ...]  # NetworkDefinitionCreationFlag members
    builder_flags: Tuple[str, ...]  # BuilderFlag members to set
    disabled_tactics: Tuple[str, ...]  # TacticSource members to turn off
    strongly_typed: bool
    # 8.6 FP16 (weakly typed): the ONNX's float32 layers (the recipe's keep-list) get FP32 precision constraints
    pin_fp32_layers: bool = False


def build_settings(version: Version, precision: str) -> BuildSettings:
    """Network flags, builder flags and tactic sources for ``precision`` on TensorRT ``version``."""
    check_precision(precision)
    if version < MIN_TENSORRT:
        raise EngineError(f"TensorRT {version} is too old: hmr-trt needs {MIN_TENSORRT} or newer; {INSTALL_HINT}")
    if strongly_typed_only(version):
        network_flags: Tuple[str, ...] = ()  # STRONGLY_TYPED is deprecated and ignored in 11
    elif is_strongly_typed(version):
        network_flags = ("STRONGLY_TYPED",)
    else:
        network_flags = ("EXPLICIT_BATCH",)
    builder_flags: Tuple[str, ...] = ()
    if not is_strongly_typed(version) and has_precision_flags(version):
        # FP16 on 8.6 lets TensorRT pick FP16 for any layer; OBEY_PRECISION_CONSTRAINTS makes it keep the FP32
        # that pin_fp32_layers sets on the ONNX's float32 layers (the FP16 recipe's keep-list)
        builder_flags = {"fp32": (), "fp16": ("FP16", "OBEY_PRECISION_CONSTRAINTS"), "int8": ("FP16", "INT8")}[precision]
    return BuildSettings(str(version), network_flags, builder_flags, library_tactics_to_disable(version),
                         is_strongly_typed(version), pin_fp32_layers=not is_strongly_typed(version) and precision == "fp16")


# ---------------------------------------------------------------------------------------------
# applying settings to TensorRT objects


def network_flag_bits(trt: Any, settings: BuildSettings) -> int:
    bits = 0
    for name in settings.network_flags:
        bits |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    return bits


def apply_builder_settings(trt: Any, config: Any, settings: BuildSettings) -> None:
    """Precision flags, tactic sources and TF32 off on an ``IBuilderConfig``."""
    for name in settings.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if settings.disabled_tactics:
        sources = int(config.get_tactic_sources())
        for name in settings.disabled_tactics:
            member = getattr(trt.TacticSource, name, None)
            if member is not None:
                sources &= ~(1 << int(member))
        config.set_tactic_sources(sources)
    with contextlib.suppress(AttributeError):  # TF32 is on by default; FP32 layers must stay FP32
        config.clear_flag(trt.BuilderFlag.TF32)


def pin_fp32_layers(trt: Any, network: Any) -> List[str]:
    """Give every layer whose outputs are all float32 in the parsed network FP32 precision and output types.

    In an FP16 export the float32 layers are exactly what the recipe keeps in FP32 (the precision pass
    casts everything else to float16), and the ONNX parser carries those types over. A weakly typed
    8.6 network built with ``BuilderFlag.FP16`` is otherwise free to run them in FP16; with
    ``OBEY_PRECISION_CONSTRAINTS`` it may not. Returns the pinned layers' names.
    """
    pinned = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not outputs or any(o.dtype != trt.DataType.FLOAT for o in outputs):
            continue
        layer.precision = trt.DataType.FLOAT
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.DataType.FLOAT)
        pinned.append(layer.name)
    return pinned


# (tensorrt module, logger): TensorRT keeps one logger per process (the first one a builder or runtime was
# given), so every Builder and Runtime gets the same one and its collected errors are always the ones read.
_LOGGER: List[Tuple[Any, Any]] = []


def process_logger(trt: Any) -> Any:
    """The process's one TensorRT logger: keeps error messages (``.errors``) for exception texts, and prints
    everything with HMR_TRT_DEBUG. Replaced only when another tensorrt module is loaded (simulated ones in tests)."""
    if _LOGGER and _LOGGER[0][0] is trt:
        return _LOGGER[0][1]

    class Collector(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: List[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                self.errors.append(str(msg).strip())
            if os.environ.get("HMR_TRT_DEBUG"):
                print(f"[TensorRT {severity}] {msg}")

    _LOGGER[:] = [(trt, Collector())]
    return _LOGGER[0][1]


# ---------------------------------------------------------------------------------------------
# lazy imports and this machine


def import_tensorrt() -> Any:
    """``import tensorrt`` (8.6+), or an EngineError that says what to install and where to run."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise EngineError(f"TensorRT is not installed in this Python ({sys.executable}): {INSTALL_HINT}") from exc
    version = parse_version(trt.__version__)
    if version < MIN_TENSORRT:
        raise EngineError(f"TensorRT {version} is too old: hmr-trt needs {MIN_TENSORRT} or newer; {INSTALL_HINT}")
    return trt


def trt_version() -> Optional[Version]:
    """The installed TensorRT's version, or None when ``import tensorrt`` fails."""
    try:
        import tensorrt as trt
    except ImportError:
        return None
    return parse_version(trt.__version__)


def import_cudart() -> Any:
    """cuda-python's runtime API: ``cuda.bindings.runtime`` (12.6+) or the older ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            raise EngineError(f"cuda-python is not installed in this Python ({sys.executable}): {INSTALL_HINT}") from exc
    return cudart


def cuda_check(result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(error, value...)`` tuple; raise EngineError unless it succeeded."""
    err, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if int(getattr(err, "value", err)) != 0:
        raise EngineError(f"CUDA {what} failed: {getattr(err, 'name', err)}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def compute_capability(major: int, minor: int) -> str:
    return f"sm_{int(major)}{int(minor)}"


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).split(b"\0", 1)[0].decode(errors="replace")
    return str(value).strip()


def _version_text(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def driver_too_old(driver: int, runtime: int) -> str:
    """The one line for cudaErrorInsufficientDriver: the installed CUDA runtime (cuda-python) needs a newer driver."""
    have = f"CUDA {_version_text(driver)}" if driver > 0 else "an unknown CUDA version"
    need = f"CUDA {_version_text(runtime)}" if runtime > 0 else "a newer CUDA"
    major = driver // 1000
    fix = (f"install the extra for this driver: pip install -c constraints-gpu.txt '.[{EXTRA_FOR_CUDA[major]}]'"
           if major in EXTRA_FOR_CUDA else "TensorRT 10 needs at least a CUDA 12 driver (R525+)")
    return (f"the NVIDIA driver is too old for the installed cuda-python/CUDA runtime (cudaErrorInsufficientDriver): "
            f"the driver runs {have}, the runtime needs {need}; {fix}, or upgrade the driver")


def gpu_probe(device: int = 0) -> Tuple[Optional[Dict[str, str]], str]:
    """``({name, compute_capability: "sm_90", driver: "12.4"}, "")``, or ``(None, why not)``.

    Names the case a fresh install hits most: cuda-python 13 on a CUDA 12 driver reports
    ``cudaErrorInsufficientDriver``, which is not "no GPU".
    """
    try:
        cudart = import_cudart()
    except EngineError as exc:
        return None, str(exc)
    try:
        err, count = cudart.cudaGetDeviceCount()
        code = int(getattr(err, "value", err))
        if code == CUDA_INSUFFICIENT_DRIVER:
            driver = runtime = 0
            with contextlib.suppress(Exception):
                driver = int(cuda_check(cudart.cudaDriverGetVersion(), "cudaDriverGetVersion"))
            with contextlib.suppress(Exception):
                runtime = int(cuda_check(cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion"))
            if driver > 0:  # 0: no driver at all, which CUDA also reports as an insufficient driver
                return None, driver_too_old(driver, runtime)
            return None, f"no NVIDIA driver (cudaGetDeviceCount: {getattr(err, 'name', code)}): {INSTALL_HINT}"
        if code == CUDA_NO_DEVICE:
            return None, f"no NVIDIA GPU: the driver sees none (cudaErrorNoDevice); {INSTALL_HINT}"
        if code != 0:
            return None, f"CUDA cudaGetDeviceCount failed: {getattr(err, 'name', code)}"
        if int(count) <= device:
            return None, f"no NVIDIA GPU {device}: the driver sees {int(count)}"
        props = cuda_check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
        driver = int(cuda_check(cudart.cudaDriverGetVersion(), "cudaDriverGetVersion"))
    except (EngineError, RuntimeError, OSError, AttributeError, TypeError) as exc:
        return None, f"cuda-python cannot query GPU {device}: {exc}"
    return {"name": _text(props.name), "compute_capability": compute_capability(props.major, props.minor),
            "driver": _version_text(driver)}, ""


def gpu_info(device: int = 0) -> Optional[Dict[str, str]]:
    """``{name, compute_capability: "sm_90", driver: "12.4"}`` of a GPU, or None without cuda-python or a GPU."""
    return gpu_probe(device)[0]


@dataclass(frozen=True)
class Target:
    """What an engine is tied to: the TensorRT version and the GPU (compute capability) it was built on."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str


def current_target(device: int = 0) -> Target:
    """This machine's TensorRT version and GPU; EngineError when either is absent."""
    trt = import_tensorrt()
    gpu, why = gpu_probe(device)
    if gpu is None:
        raise EngineError(why)
    return Target(str(parse_version(trt.__version__)), gpu["name"], gpu["compute_capability"])


def trt_available() -> Tuple[bool, str]:
    """(True, "TensorRT 10.3.0 on NVIDIA H100 (sm_90)") or (False, why not and what to do)."""
    try:
        target = current_target()
    except EngineError as exc:
        return False, str(exc)
    return True, f"TensorRT {target.tensorrt_version} on {target.gpu_name} ({target.compute_capability})"
