"""Backends with one contract: ``with backend: outputs = backend.infer(feed)``.

Every backend checks input names, dtypes and shapes against the graph before running
(Polygraphy's runners do the same) and hands the real work to ``_infer``. Backends here are
torch-free and run on Python 3.9; onnxruntime, tensorrt and cuda-python are imported lazily.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from hmr_trt.errors import HmrTrtError, InputSpecError

from .ort_providers import CPU_EP, CUDA_EP, GPU_EPS, Machine, OrtGraph, ProviderError

Dim = Union[int, str, None]  # a fixed size, or a dynamic axis (name or None)


@dataclass(frozen=True)
class IOSpec:
    name: str
    shape: tuple  # of Dim
    dtype: np.dtype

    def check(self, value: np.ndarray, max_batch: Optional[int] = None) -> None:
        if not isinstance(value, np.ndarray):
            raise InputSpecError(f"input '{self.name}' must be a numpy array, got {type(value).__name__}")
        if value.dtype != self.dtype:
            raise InputSpecError(f"input '{self.name}' has dtype {value.dtype}, expected {self.dtype}")
        if value.ndim != len(self.shape):
            raise InputSpecError(
                f"input '{self.name}' has shape {tuple(value.shape)}, expected {len(self.shape)} dims {self.pretty()}"
            )
        for axis, (got, want) in enumerate(zip(value.shape, self.shape)):
            if isinstance(want, int) and want >= 0 and got != want:
                raise InputSpecError(
                    f"input '{self.name}' has shape {tuple(value.shape)}, expected {self.pretty()} (axis {axis})"
                )
        if value.shape[0] < 1:
            raise InputSpecError(f"input '{self.name}' is empty (batch 0)")
        if max_batch is not None and value.shape[0] > max_batch:
            raise InputSpecError(f"input '{self.name}' batch {value.shape[0]} exceeds the maximum {max_batch}")

    def pretty(self) -> str:
        return "(" + ", ".join(str(d) if isinstance(d, int) and d >= 0 else str(d or "?") for d in self.shape) + ")"


class Backend:
    """Base runner: subclasses set ``inputs``/``outputs`` in ``_activate`` and implement ``_infer``."""

    name = "base"

    def __init__(self) -> None:
        self.inputs: List[IOSpec] = []
        self.outputs: List[IOSpec] = []
        self.max_batch: Optional[int] = None
        self.active = False

    def __enter__(self) -> Backend:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def activate(self) -> None:
        if not self.active:
            self._activate()
            self.active = True

    def deactivate(self) -> None:
        if self.active:
            self._deactivate()
            self.active = False

    def check_feed(self, feed: Dict[str, np.ndarray]) -> None:
        expected = {s.name for s in self.inputs}
        missing, extra = sorted(expected - set(feed)), sorted(set(feed) - expected)
        if missing or extra:
            raise InputSpecError(
                f"{self.name}: inputs {sorted(feed)} do not match the graph's {sorted(expected)}"
                + (f"; missing {missing}" if missing else "") + (f"; unexpected {extra}" if extra else "")
            )
        batches = set()
        for spec in self.inputs:
            spec.check(feed[spec.name], self.max_batch)
            batches.add(feed[spec.name].shape[0])
        if len(batches) > 1:
            raise InputSpecError(f"{self.name}: inputs disagree on the batch size: {sorted(batches)}")

    def infer(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if not self.active:
            raise HmrTrtError(f"{self.name} backend used outside 'with backend:' (call activate() first)")
        self.check_feed(feed)
        return self._infer(feed)

    def _activate(self) -> None:
        raise NotImplementedError

    def _deactivate(self) -> None:
        pass

    def _infer(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        raise NotImplementedError


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(uint8)": np.uint8}


def _is_fp8_graph(path: Path) -> bool:
    """An FP8 Q/DQ graph of calibration/fp8.py (its ``hmr_trt.precision`` metadata)."""
    from .onnx_wire import read_onnx_metadata

    try:
        return read_onnx_metadata(path).get("hmr_trt.precision") == "fp8"
    except Exception:  # noqa: BLE001 - not an ONNX hmr-trt wrote: ONNX Runtime says what is wrong with it
        return False


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on the providers given, best first (default: the CPU).

    ``graph`` (an ``OrtGraph``) and ``machine`` give the TensorRT and CUDA EPs their options
    (runtime/ort_providers.py). ONNX Runtime drops a provider it cannot start without a word:
    ``ran_on`` is what the session really runs on; with ``strict`` a GPU provider asked for that
    did not start is an error, with ``need_gpu`` (``--device cuda``) a session left without any. With CUDA graphs on (fully static shapes, CUDA EP alone),
    inputs and outputs live in fixed device buffers bound once, as CUDA graph replay needs.
    """

    name = "onnxruntime"

    def __init__(self, path: Union[str, Path], providers: Optional[Sequence[str]] = None, threads: int = 0,
                 max_batch: Optional[int] = None, graph: Optional[OrtGraph] = None,
                 machine: Optional[Machine] = None, strict: bool = False, need_gpu: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.providers = list(providers) if providers else [CPU_EP]
        self.threads = threads
        self.max_batch = max_batch
        self.graph, self.machine, self.strict, self.need_gpu = graph, machine, strict, need_gpu
        self.session = None
        self.ran_on: List[str] = []
        self.tf32: Dict[str, str] = {}  # provider -> how FP32 stays FP32 there (ort_providers.tf32_state)
        self._binding: Optional[tuple] = None  # (io_binding, {input: OrtValue}, {output: OrtValue}) for CUDA graphs

    def _activate(self) -> None:
        from .ort_providers import (
            TENSORRT_EP,
            TF32_ENV,
            import_onnxruntime,
            preload_gpu_libraries,
            provider_check,
            session_providers,
            tf32_state,
        )

        ort = import_onnxruntime()
        if not self.path.is_file():
            raise HmrTrtError(f"ONNX file not found: {self.path}")
        if any(p in GPU_EPS for p in self.providers):  # CUDA/cuDNN/TensorRT from pip wheels, when installed that way
            preload_gpu_libraries(ort)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
        if _is_fp8_graph(self.path):
            # ONNX Runtime 1.31 (CPU) miscomputes float8 Q/DQ graphs after its extended-level fusions (measured: a
            # 2-MatMul graph off by 100% of its output, exact at the basic level) and fuses a float8 DQ -> MatMul
            # into MatMulIntegerToFloat, which takes int8 only: basic optimizations, no QDQ fusions
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            opts.add_session_config_entry("session.disable_quant_qdq", "1")
        if TENSORRT_EP in self.providers:  # the TensorRT EP has no TF32 option: NVIDIA's override, unless the user set it
            os.environ.setdefault(TF32_ENV, "0")
        providers = session_providers(self.providers, self.graph, self.machine, ort.__version__)
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise HmrTrtError(f"ONNX Runtime cannot load {self.path} on {', '.join(self.providers)}: "
                              f"{str(exc).splitlines()[0]}") from exc
        self.ran_on = list(self.session.get_providers())
        self.tf32 = {p: tf32_state(p) for p in self.ran_on}
        missing = [p for p in self.providers if p in GPU_EPS and p not in self.ran_on]
        if missing and (self.strict or (self.need_gpu and not any(p in GPU_EPS for p in self.ran_on))):
            self.session = None
            whys = [provider_check(ort, p) for p in missing]
            raise ProviderError(f"ONNX Runtime did not start {', '.join(missing)} for {self.path.name} (it runs on "
                                f"{', '.join(self.ran_on)}): " + ("; ".join(w for w in whys if w) or
                                "see ONNX Runtime's log (log_severity_level 0)"))
        self.inputs = [IOSpec(i.name, tuple(i.shape), np.dtype(_ORT_TYPES.get(i.type, np.float32)))
                       for i in self.session.get_inputs()]
        self.outputs = [IOSpec(o.name, tuple(o.shape), np.dtype(_ORT_TYPES.get(o.type, np.float32)))
                        for o in self.session.get_outputs()]
        if self.ran_on[:1] == [CUDA_EP] and _cuda_graph_on(self.session):
            self._binding = self._bind_fixed_buffers(ort)

    def _bind_fixed_buffers(self, ort: Any) -> tuple:
        """Device buffers for every input and output (static shapes), bound once: CUDA graphs replay their addresses."""
        binding = self.session.io_binding()
        ins = {s.name: ort.OrtValue.ortvalue_from_shape_and_type(list(s.shape), s.dtype, "cuda", 0) for s in self.inputs}
        outs = {s.name: ort.OrtValue.ortvalue_from_shape_and_type(list(s.shape), s.dtype, "cuda", 0)
                for s in self.outputs}
        for name, value in ins.items():
            binding.bind_ortvalue_input(name, value)
        for name, value in outs.items():
            binding.bind_ortvalue_output(name, value)
        return binding, ins, outs

    def _deactivate(self) -> None:
        self.session, self._binding = None, None

    def _infer(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if self._binding is not None:
            binding, ins, outs = self._binding
            for name, value in feed.items():
                ins[name].update_inplace(np.ascontiguousarray(value))
            self.session.run_with_iobinding(binding)
            return {name: value.numpy() for name, value in outs.items()}
        names = [o.name for o in self.outputs]
        return dict(zip(names, self.session.run(names, feed)))


def _cuda_graph_on(session: Any) -> bool:
    options = session.get_provider_options().get(CUDA_EP, {})
    return str(options.get("enable_cuda_graph", "0")) in ("1", "True", "true")
