"""ONNX Runtime's execution providers: which are here, which to use, and how to set them up.

Order of preference: TensorRT EP, CUDA EP, CPU. ``onnxruntime-gpu`` lists the TensorRT and CUDA
EPs in ``get_available_providers()`` whether or not the machine can run them (they are built in;
their libraries load when a session starts, and a provider that fails to load is dropped
silently). So the automatic choice also asks the machine: a CUDA EP needs a usable NVIDIA driver
(``libcuda.so.1``: ``cuInit`` succeeds and a device is visible) that runs the CUDA version the
onnxruntime-gpu build was made for (``build_and_package_info.cuda_version``: 13.0 for 1.31.1); then
the provider library's own needs are read from it (its ELF ``DT_NEEDED`` list, e.g. 1.31.1's TensorRT
EP needs ``libnvinfer.so.10``, ``libnvonnxparser.so.10``, ``libcudart.so.13``, ``libcublas.so.13``,
``libcudnn.so.9``) and each is looked up by the dynamic loader; last, ONNX Runtime itself decides: a
tiny session is started with the provider, and the provider counts only when the session keeps it
(``get_providers()``). An explicit request (``--device cuda``, ``--ort-providers``) that the machine
cannot serve is an error naming what is missing; after a session starts, ``session.get_providers()``
says what it really runs on, and that is what the summary reports.

TensorRT EP options mirror the TensorRT API route (engines/cache.py): engines cached under
hmr-trt's cache folder (``HMR_TRT_CACHE``, else ``~/.cache/hmr-trt/engines``) in ``ort-trt/KEY/``
with KEY a sha256 over the ONNX Runtime and TensorRT versions, GPU, compute capability,
precision, batch profile and ONNX sha256; a timing cache per TensorRT version and GPU; FP16 when
the graph's ONNX is the FP16 export; INT8 from the Q/DQ graph of an INT8 export; the batch profile
as ``trt_profile_min/opt/max_shapes``. CUDA EP: CUDA graphs only when every input and output shape
is fixed (a CUDA graph replays fixed addresses and shapes); hmr-trt's graphs have a dynamic batch
axis, so they run without CUDA graphs unless exported with a fixed batch.

Torch-free, Python 3.9, and onnxruntime is imported only when a function needs it.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import json
import os
import struct
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from hmr_trt import __version__
from hmr_trt.errors import ConfigError, HmrTrtError

TENSORRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
PREFERENCE = (TENSORRT_EP, CUDA_EP, CPU_EP)
GPU_EPS = (TENSORRT_EP, CUDA_EP)
DEVICES = ("auto", "cpu", "cuda")
SHORT_NAMES = {"tensorrt": TENSORRT_EP, "trt": TENSORRT_EP, "cuda": CUDA_EP, "cpu": CPU_EP}
GPU_PIN = "onnxruntime-gpu==1.31.1"
GPU_INSTALL_HINT = (f"install ONNX Runtime's GPU build in place of the CPU one: pip uninstall -y onnxruntime && "
                    f"pip install -c constraints.txt '.[gpu]' (pins {GPU_PIN}, built for CUDA 13; the two packages "
                    "cannot share an environment)")
# What provides each library a provider library needs (onnxruntime-gpu 1.31.1: CUDA 13, cuDNN 9, TensorRT 10;
# see docs/ort-gpu.md for the DT_NEEDED lists read from the wheel).
LIBRARY_HINTS = (
    ("libnvinfer.so.", "TensorRT {major} built for CUDA {cuda}: pip install 'tensorrt-cu{cuda}-libs=={trt}' "
                       "and put its tensorrt_libs folder on LD_LIBRARY_PATH"),
    ("libnvonnxparser.so.", "TensorRT {major}'s ONNX parser: pip install 'tensorrt-cu{cuda}-libs=={trt}' "
                            "and put its tensorrt_libs folder on LD_LIBRARY_PATH"),
    ("libcudnn.so.", "cuDNN {major}: pip install 'onnxruntime-gpu[cudnn]' (nvidia-cudnn-cu{cuda})"),
    ("libcu", "the CUDA {cuda} runtime libraries: pip install 'onnxruntime-gpu[cuda]' plus nvidia-cublas for "
              "libcublas, or a CUDA {cuda} toolkit on LD_LIBRARY_PATH"),
)
TRT_FOR_ORT = "10.16.1.11"  # the TensorRT 10 the trt-cu12/trt-cu13 extras pin (a libnvinfer.so.10)
ORT_CACHE_DIR = "ort-trt"
CACHE_ENV = "HMR_TRT_CACHE"  # the same folder as the TensorRT API route's engine cache (engines/cache.py)

# CUDA driver API numbers (cuda.h): device attributes and the errors worth naming.
_CU_ATTR_CC_MAJOR, _CU_ATTR_CC_MINOR = 75, 76
_CU_ERRORS = {35: "CUDA_ERROR_INSUFFICIENT_DRIVER", 100: "CUDA_ERROR_NO_DEVICE", 999: "CUDA_ERROR_UNKNOWN"}


class ProviderError(HmrTrtError):
    """An execution provider was asked for that this machine or this ONNX Runtime cannot run."""


# ---------------------------------------------------------------------------------------------
# what is installed and what the machine offers


def ort_cuda_version(ort: Any) -> str:
    """The CUDA version an onnxruntime-gpu build was made for ("13.0"), "" for a CPU build."""
    try:
        from onnxruntime.capi import build_and_package_info as info
    except ImportError:
        return ""
    return str(getattr(info, "cuda_version", "") or "")


def needed_libraries(path: Path) -> List[str]:
    """The ``DT_NEEDED`` entries of a 64-bit little-endian ELF shared library (what ``readelf -d`` lists as NEEDED)."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ProviderError(f"{path} is not a 64-bit little-endian ELF library")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    out: List[str] = []
    for _name, kind, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
        if kind != 6:  # SHT_DYNAMIC
            continue
        strtab_offset = sections[link][4]
        for pos in range(offset, offset + size, entsize or 16):
            tag, value = struct.unpack_from("<qQ", data, pos)
            if tag == 0:  # DT_NULL
                break
            if tag == 1:  # DT_NEEDED
                end = data.index(b"\0", strtab_offset + value)
                out.append(data[strtab_offset + value:end].decode())
    return out


def library_hint(library: str, cuda: str) -> str:
    major = library.rsplit(".so.", 1)[-1] if ".so." in library else ""
    cuda_major = cuda.split(".")[0] if cuda else "13"
    for prefix, text in LIBRARY_HINTS:
        if library.startswith(prefix):
            return text.format(major=major, cuda=cuda_major, trt=TRT_FOR_ORT)
    return "install it or add its folder to LD_LIBRARY_PATH"


def missing_library(needed: Sequence[str]) -> Optional[str]:
    """The first library in ``needed`` the dynamic loader cannot find (already-loaded ones count), or None."""
    for name in needed:
        try:
            ctypes.CDLL(name)
        except OSError:
            return name
    return None


PROVIDER_LIBRARIES = {CUDA_EP: "libonnxruntime_providers_cuda.so", TENSORRT_EP: "libonnxruntime_providers_tensorrt.so"}


def provider_library_problem(ort: Any, provider: str) -> str:
    """"" when every library the provider's own library needs can be loaded here, else what is missing and the fix."""
    lib = Path(ort.__file__).parent / "capi" / PROVIDER_LIBRARIES[provider]
    if not lib.is_file():
        return f"{provider} has no provider library in this ONNX Runtime ({lib.name} missing): {GPU_INSTALL_HINT}"
    try:
        missing = missing_library(needed_libraries(lib))
    except (OSError, ValueError, struct.error, ProviderError):
        return ""  # unreadable: leave the verdict to the session check
    if missing is None:
        return ""
    return (f"{provider} needs {missing} ({lib.name} links it), which the dynamic loader cannot find: "
            f"{library_hint(missing, ort_cuda_version(ort))}")


def _tiny_model() -> bytes:
    """A one-node float graph (Relu over (1, 4)) for the session check; needs the onnx package."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "hmr_trt_provider_check", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def provider_kept(ort: Any, provider: str) -> Optional[bool]:
    """Does ONNX Runtime keep ``provider`` in a session it starts (``get_providers()``)? None when onnx is missing."""
    try:
        model = _tiny_model()
    except ImportError:
        return None
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # a provider that fails to load is the answer here, not an error to print
    try:
        with warnings.catch_warnings():  # onnxruntime warns about a provider it does not list: the answer is False
            warnings.simplefilter("ignore")
            session = ort.InferenceSession(model, opts, providers=[provider] + ([CPU_EP] if provider != CPU_EP else []))
    except Exception:  # onnxruntime raises its own types; a session that cannot start keeps nothing
        return False
    return provider in session.get_providers()


def provider_check(ort: Any, provider: str) -> str:
    """"" when ONNX Runtime really runs ``provider`` here, else why not (library needs first, then a real session)."""
    problem = provider_library_problem(ort, provider)
    if problem:
        return problem
    if provider_kept(ort, provider) is False:
        return (f"ONNX Runtime dropped {provider} when a session started (it loaded every library it links): "
                "ONNX Runtime's log at severity 0 says why, or run with --device cpu")
    return ""


def preload_gpu_libraries(ort: Any) -> None:
    """Load the GPU libraries pip wheels put off the loader's path, as a GPU session needs them: CUDA and cuDNN
    from the nvidia-* wheels (``onnxruntime.preload_dlls()``) and TensorRT's from tensorrt-cu1x-libs (importing
    ``tensorrt_libs`` loads them). Each is optional."""
    if hasattr(ort, "preload_dlls"):
        with contextlib.suppress(Exception), contextlib.redirect_stdout(io.StringIO()):
            ort.preload_dlls()
    with contextlib.suppress(Exception):
        import tensorrt_libs  # noqa: F401  (the import loads libnvinfer and its parser)


def import_onnxruntime() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ProviderError(f"onnxruntime is not installed in this Python ({sys.executable}): pip install "
                            "-c constraints.txt '.[ort]' for the CPU, or '.[gpu]' for CUDA/TensorRT") from exc
    return ort


def available_providers() -> List[str]:
    """What this ONNX Runtime build reports (``onnxruntime.get_available_providers()``)."""
    return list(import_onnxruntime().get_available_providers())


@dataclass(frozen=True)
class CudaDriver:
    """The NVIDIA driver as the CUDA driver API sees it (device 0)."""

    usable: bool
    why: str  # "CUDA 12.4 driver, NVIDIA H100 (sm_90)" or what is missing
    version: str = ""
    gpu_name: str = ""
    compute_capability: str = ""


def cuda_driver(device: int = 0) -> CudaDriver:
    """Probe ``libcuda.so.1`` (no cuda-python needed): cuInit, the device count, the device's name and sm."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return CudaDriver(False, "no NVIDIA driver (libcuda.so.1 not found)")
    rc = lib.cuInit(0)
    if rc != 0:
        return CudaDriver(False, f"the NVIDIA driver does not start (cuInit: {_CU_ERRORS.get(rc, rc)})")
    version, count = ctypes.c_int(0), ctypes.c_int(0)
    lib.cuDriverGetVersion(ctypes.byref(version))
    lib.cuDeviceGetCount(ctypes.byref(count))
    if count.value <= device:
        return CudaDriver(False, f"the NVIDIA driver sees {count.value} GPU(s), device {device} asked for")
    dev, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    name = ctypes.create_string_buffer(256)
    lib.cuDeviceGet(ctypes.byref(dev), device)
    lib.cuDeviceGetName(name, 256, dev)
    lib.cuDeviceGetAttribute(ctypes.byref(major), _CU_ATTR_CC_MAJOR, dev)
    lib.cuDeviceGetAttribute(ctypes.byref(minor), _CU_ATTR_CC_MINOR, dev)
    text = f"{version.value // 1000}.{version.value % 1000 // 10}"
    gpu, sm = name.value.decode(errors="replace").strip(), f"sm_{major.value}{minor.value}"
    return CudaDriver(True, f"CUDA {text} driver, {gpu} ({sm})", text, gpu, sm)


def tensorrt_library_version() -> Optional[str]:
    """The version of the ``libnvinfer`` the TensorRT EP would load ("10.3.0"), or None when there is none."""
    for name in ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        v = int(lib.getInferLibVersion())
        if v >= 100000:  # TensorRT 10+: major * 10000 + minor * 100 + patch
            return f"{v // 10000}.{v // 100 % 100}.{v % 100}"
        return f"{v // 1000}.{v // 100 % 10}.{v % 100}"  # 8.x: major * 1000 + minor * 100 + patch
    return None


@dataclass(frozen=True)
class Machine:
    """What provider selection looks at; ``Machine.probe()`` reads it from this machine."""

    available: Tuple[str, ...]  # onnxruntime.get_available_providers()
    driver: CudaDriver
    tensorrt: Optional[str]  # libnvinfer version, None when absent
    ort_cuda: str = ""  # the CUDA version the onnxruntime-gpu build was made for ("13.0"); "" unknown / CPU build
    # provider -> "" (ONNX Runtime runs it here) or why not: its libraries and a real session (probe() fills it)
    checks: Tuple[Tuple[str, str], ...] = ()

    @classmethod
    def probe(cls) -> Machine:
        ort = import_onnxruntime()
        available = tuple(available_providers())
        if any(p in available for p in GPU_EPS):  # pip-installed CUDA/cuDNN/TensorRT first, as a GPU session does
            preload_gpu_libraries(ort)
        driver, cuda = cuda_driver(), ort_cuda_version(ort)
        # the driver checks alone (every provider's own check passed for now), then each one's real check
        driver_only = cls(available, driver, "", cuda, tuple((p, "") for p in GPU_EPS))
        wanted = [p for p in GPU_EPS if p in available and driver_only.usable(p)[0]]
        checks = tuple((p, provider_check(ort, p)) for p in wanted)
        return cls(available, driver, tensorrt_library_version(), cuda, checks)

    def usable(self, provider: str) -> Tuple[bool, str]:
        """(True, "") or (False, what is missing and what would fix it)."""
        if provider not in self.available:
            fix = GPU_INSTALL_HINT if provider in GPU_EPS else "install an ONNX Runtime build that has it"
            return False, (f"{provider} is not in this ONNX Runtime "
                           f"(it reports {', '.join(self.available) or 'none'}): {fix}")
        if provider in GPU_EPS and not self.driver.usable:
            return False, (f"{provider} needs a usable NVIDIA driver: {self.driver.why}; run on a machine "
                           "with an NVIDIA GPU and driver, or use --device cpu")
        if provider in GPU_EPS and self.ort_cuda and self.driver.version and \
                _major_minor(self.driver.version) < _major_minor(self.ort_cuda):
            return False, (f"{provider}: this onnxruntime-gpu is built for CUDA {self.ort_cuda}, the NVIDIA driver "
                           f"runs CUDA {self.driver.version}: upgrade the driver (CUDA 13 needs R580+) or use "
                           "--device cpu")
        checked = dict(self.checks)
        if provider in checked:
            return (False, checked[provider]) if checked[provider] else (True, "")
        if provider == TENSORRT_EP and self.tensorrt is None:  # not checked (a Machine built by hand): libnvinfer at least
            return False, (f"{provider} needs TensorRT's libnvinfer.so.10, which the dynamic loader cannot find: "
                           f"{library_hint('libnvinfer.so.10', self.ort_cuda)}")
        return True, ""


def _major_minor(text: str) -> Tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(".")[:2])
    except ValueError:
        return (0,)


# ---------------------------------------------------------------------------------------------
# choosing


def parse_providers(text: Optional[str]) -> List[str]:
    """``--ort-providers``: comma-separated full names or short ones (tensorrt, cuda, cpu), in order."""
    if not text:
        return []
    out: List[str] = []
    for raw in (p.strip() for p in text.split(",")):
        if not raw:
            continue
        name = SHORT_NAMES.get(raw.lower(), raw)
        if not name.endswith("ExecutionProvider"):
            raise ConfigError(f"--ort-providers: {raw!r} is not an execution provider; use full names such as "
                              f"{CUDA_EP} or the short names {', '.join(SHORT_NAMES)}")
        if name not in out:
            out.append(name)
    return out


def choose_providers(machine: Machine, device: str = "auto", requested: Sequence[str] = ()) -> List[str]:
    """The providers for every ONNX Runtime session, best first (ONNX Runtime falls back along the list).

    ``requested`` (``--ort-providers``) is taken as given once each is usable here; else ``device``:
    cpu -> CPU; cuda -> the GPU EPs usable here (error when none); auto -> the usable ones of
    TensorRT EP, CUDA EP, then CPU.
    """
    if device not in DEVICES:
        raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if requested:
        if device == "cpu" and any(p in GPU_EPS for p in requested):
            raise ConfigError(f"--device cpu contradicts --ort-providers {','.join(requested)}: drop one of them")
        for p in requested:
            ok, why = machine.usable(p)
            if not ok:
                raise ProviderError(f"--ort-providers: {why}")
        return list(requested)
    if device == "cpu":
        return [CPU_EP]
    gpu = [p for p in GPU_EPS if machine.usable(p)[0]]
    if device == "cuda" and not gpu:
        ok, why = machine.usable(CUDA_EP)
        raise ProviderError(f"--device cuda: {why}")
    return gpu + [CPU_EP]


def auto_route(machine: Machine, tensorrt_api: Tuple[bool, str]) -> str:
    """What ``--backend auto`` takes here, in words (doctor prints it)."""
    if tensorrt_api[0]:
        return f"the TensorRT API ({tensorrt_api[1]}) where the export has engines for it, else ONNX Runtime " \
               f"on {', '.join(choose_providers(machine))}"
    return f"ONNX Runtime on {', '.join(choose_providers(machine))} (the TensorRT API is not usable here)"


# ---------------------------------------------------------------------------------------------
# options per graph


@dataclass(frozen=True)
class OrtGraph:
    """What the provider options depend on: one exported graph's ONNX and its batch profile."""

    onnx: Path
    precision: str  # the ONNX's own precision: fp32 | fp16 | int8 (Q/DQ)
    onnx_sha256: str
    inputs: Dict[str, Tuple[Any, ...]] = field(default_factory=dict)  # name -> shape (str for dynamic axes)
    outputs: Dict[str, Tuple[Any, ...]] = field(default_factory=dict)
    batch: Optional[Tuple[int, int, int]] = None  # (min, opt, max) of axis 0

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16", "int8"):
            raise ConfigError(f"{self.onnx}: precision must be fp32, fp16 or int8, got {self.precision!r}")
        if self.batch is not None and not 1 <= self.batch[0] <= self.batch[1] <= self.batch[2]:
            raise ConfigError(f"{self.onnx}: batch profile must satisfy 1 <= min <= opt <= max, got {self.batch}")

    @property
    def static(self) -> bool:
        """Every input and output dimension fixed (and known): the one case CUDA graphs can replay."""
        shapes = list(self.inputs.values()) + list(self.outputs.values())
        return bool(shapes) and all(isinstance(d, int) and d > 0 for s in shapes for d in s)


def default_cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hmr-trt" / "engines"


def trt_ep_cache_key(graph: OrtGraph, machine: Machine, ort_version: str) -> str:
    """sha256 over what a TensorRT EP engine depends on (the TensorRT API route's key, plus ONNX Runtime's version)."""
    fields = {"route": "onnxruntime-tensorrt-ep", "onnxruntime_version": ort_version,
              "tensorrt_version": machine.tensorrt or "", "gpu_name": machine.driver.gpu_name,
              "compute_capability": machine.driver.compute_capability, "precision": graph.precision,
              "profile": list(graph.batch) if graph.batch else None, "onnx_sha256": graph.onnx_sha256,
              "hmr_trt_version": __version__}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def profile_shapes(graph: OrtGraph) -> Optional[Dict[str, str]]:
    """``trt_profile_min/opt/max_shapes`` ("name:1x16x2048,...") from the batch profile; None when another axis is dynamic."""
    if graph.batch is None or not graph.inputs:
        return None
    rows: Dict[str, List[str]] = {"min": [], "opt": [], "max": []}
    for name, shape in graph.inputs.items():
        rest = shape[1:]
        if not all(isinstance(d, int) and d > 0 for d in rest):
            return None
        for key, b in zip(("min", "opt", "max"), graph.batch):
            rows[key].append(f"{name}:" + "x".join(str(d) for d in (b, *rest)))
    return {f"trt_profile_{k}_shapes": ",".join(v) for k, v in rows.items()}


def tensorrt_ep_options(graph: OrtGraph, machine: Machine, ort_version: str,
                        cache_root: Optional[Path] = None, device_id: int = 0) -> Dict[str, str]:
    """TensorRT EP options (names as in ONNX Runtime's TensorRT EP documentation) for one graph."""
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    key = trt_ep_cache_key(graph, machine, ort_version)
    timing = root / ORT_CACHE_DIR / "timing" / f"trt-{machine.tensorrt or 'unknown'}-" \
        f"{machine.driver.compute_capability or 'unknown'}"
    opts = {
        "device_id": str(device_id),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(root / ORT_CACHE_DIR / key),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(timing),
        "trt_fp16_enable": str(graph.precision in ("fp16", "int8")),  # INT8 graphs keep FP16 for unquantized layers
        "trt_int8_enable": str(graph.precision == "int8"),  # explicit Q/DQ scales: no calibration table
    }
    opts.update(profile_shapes(graph) or {})
    return opts


def cuda_ep_options(graph: Optional[OrtGraph], device_id: int = 0) -> Dict[str, str]:
    """CUDA EP options: TF32 off (the CUDA EP's default is ``use_tf32=1``: FP32 GEMMs and convolutions would round
    their inputs to 10 mantissa bits); CUDA graphs only for fully static shapes (the backend then binds fixed
    device buffers)."""
    return {"device_id": str(device_id), "use_tf32": "0",
            "enable_cuda_graph": "1" if graph is not None and graph.static else "0"}


TF32_ENV = "NVIDIA_TF32_OVERRIDE"  # NVIDIA's process-wide override: "0" keeps FP32 math off TF32 Tensor Cores


def tf32_state(provider: str) -> str:
    """How FP32 stays FP32 on ``provider`` (the verdict line for a GPU session)."""
    if provider == CUDA_EP:
        return "TF32 off (CUDA EP use_tf32=0)"
    if provider == TENSORRT_EP:
        env = os.environ.get(TF32_ENV)
        return ("TF32: ONNX Runtime's TensorRT EP has no option for it (TensorRT enables TF32 by default); "
                + (f"{TF32_ENV}={env} is set for the process" if env is not None else f"{TF32_ENV} is not set"))
    return "no TF32 on the CPU"


def session_providers(providers: Sequence[str], graph: Optional[OrtGraph], machine: Optional[Machine] = None,
                      ort_version: str = "", cache_root: Optional[Path] = None) -> List[Any]:
    """``providers=`` for ``InferenceSession``: names, with option dicts for the TensorRT and CUDA EPs."""
    out: List[Any] = []
    cuda_graph_ok = list(providers) in ([CUDA_EP], [CUDA_EP, CPU_EP])  # CUDA graphs need every node on the CUDA EP
    for p in providers:
        if p == TENSORRT_EP and graph is not None and machine is not None:
            opts = tensorrt_ep_options(graph, machine, ort_version, cache_root)
            for key in ("trt_engine_cache_path", "trt_timing_cache_path"):  # folders, made before the EP writes
                Path(opts[key]).mkdir(parents=True, exist_ok=True)
            out.append((p, opts))
        elif p == CUDA_EP:
            out.append((p, cuda_ep_options(graph if cuda_graph_ok else None)))
        else:
            out.append(p)
    return out


def short(provider: str) -> str:
    """"CUDAExecutionProvider" -> "CUDA" (for the progress line and the summary)."""
    return provider.replace("ExecutionProvider", "").replace("Tensorrt", "TensorRT")
