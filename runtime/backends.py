"""Backends with one contract: ``with backend: outputs = backend.infer(feed)``.

Every backend checks input names, dtypes and shapes against the graph before running
(Polygraphy's runners do the same) and hands the real work to ``_infer``. Backends here are
torch-free and run on Python 3.9; onnxruntime, tensorrt and cuda-python are imported lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from hmr_trt.errors import HmrTrtError, InputSpecError

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


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on the CPU (or CUDA when onnxruntime-gpu is installed and ``providers`` ask for it)."""

    name = "onnxruntime"

    def __init__(self, path: Union[str, Path], providers: Optional[Sequence[str]] = None, threads: int = 0,
                 max_batch: Optional[int] = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.providers = list(providers) if providers else ["CPUExecutionProvider"]
        self.threads = threads
        self.max_batch = max_batch
        self.session = None

    def _activate(self) -> None:
        import onnxruntime as ort

        if not self.path.is_file():
            raise HmrTrtError(f"ONNX file not found: {self.path}")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise HmrTrtError(f"ONNX Runtime cannot load {self.path}: {str(exc).splitlines()[0]}") from exc
        self.inputs = [IOSpec(i.name, tuple(i.shape), np.dtype(_ORT_TYPES.get(i.type, np.float32)))
                       for i in self.session.get_inputs()]
        self.outputs = [IOSpec(o.name, tuple(o.shape), np.dtype(_ORT_TYPES.get(o.type, np.float32)))
                        for o in self.session.get_outputs()]

    def _deactivate(self) -> None:
        self.session = None

    def _infer(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        names = [o.name for o in self.outputs]
        return dict(zip(names, self.session.run(names, feed)))
