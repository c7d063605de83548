"""TensorRT backend: ``with TensorRTBackend("temporal_fp16.engine") as b: outputs = b.infer(feed)``.

An engine file is opened through ``engine_loader.engine_from_path``: its sidecar is checked (TensorRT
version, compute capability, sha256) before TensorRT sees a byte. The same contract as ``OnnxRuntimeBackend``: ``inputs``/``outputs`` IOSpecs and ``max_batch`` read
from the engine (its optimization profile), feeds checked before anything runs. Execution uses the
name-based API that TensorRT 8.5 to 11 share: ``set_input_shape`` + ``set_tensor_address`` +
``execute_async_v3`` (no bindings, no ``execute_async_v2``). Device buffers and pinned host buffers
are allocated once, sized for the profile's maximum; output shapes come from the context once the
input shapes are set.

Double buffering (``num_buffers=2``): ``submit(feed) -> handle`` stages a batch in one slot (pinned
host + device buffers + its own copy stream) and enqueues it; ``collect(handle)`` waits for that
batch's outputs. While batch n computes, batch n+1's inputs upload and batch n-1's outputs
download. One execution context runs every batch on one compute stream (contexts sharing an
optimization profile must not run concurrently), so computes are serialized and copies overlap.
A submit into a slot whose batch was never collected finishes that batch first (its outputs wait
on its handle). Not thread-safe: one backend per thread.

CUDA graphs (``cuda_graphs=True``): for a new input shape the first call enqueues plainly (the
warm-up trtexec also does), then captures ``execute_async_v3`` into a graph that later calls with
the same shapes replay. A graph holds the context's state at capture, so a different shape drops it
and the next repeat captures again; steady batch sizes (a stream of full batches) replay. Any
capture failure switches graphs off for good and falls back to plain enqueue (``graph_error``).

tensorrt and cuda-python (``cuda.bindings.runtime``, or the older ``cuda.cudart``) are imported in
``_activate``: this module imports on Python 3.9 with numpy alone.
"""

from __future__ import annotations

import ctypes
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from hmr_trt.errors import ConfigError, EngineError, GraphError, HmrTrtError, InputSpecError
from hmr_trt.runtime import trt_compat

from .backends import Backend, IOSpec
from .engine_loader import engine_from_bytes, engine_from_path, engine_runs_here

__all__ = ["TensorRTBackend", "TrtHandle", "engine_runs_here"]

Shape = Tuple[int, ...]
def _as_int(handle: Any) -> int:
    """A cuda-python handle (stream, pointer) as the integer TensorRT takes."""
    try:
        return int(handle)
    except TypeError:
        return int(handle.getPtr())


def _profile_shape(engine: Any, name: str) -> Any:
    """(min, opt, max) of an input in optimization profile 0 (name-based API of 8.5+; the older one as a fallback)."""
    try:
        return engine.get_tensor_profile_shape(name, 0)
    except AttributeError:
        return engine.get_profile_shape(0, name)


class _Cuda:
    """The cuda-python runtime calls this backend makes, each checked; owns what it allocates."""

    def __init__(self) -> None:
        self.rt = trt_compat.import_cudart()
        self.owned: List[Tuple[str, Any]] = []  # (kind, handle) in allocation order

    def check(self, result: Any, what: str) -> Any:
        return trt_compat.cuda_check(result, what)

    def malloc(self, nbytes: int) -> int:
        ptr = _as_int(self.check(self.rt.cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))
        self.owned.append(("device", ptr))
        return ptr

    def pinned(self, nbytes: int) -> _HostBuffer:
        ptr = _as_int(self.check(self.rt.cudaMallocHost(nbytes), f"cudaMallocHost({nbytes})"))
        self.owned.append(("host", ptr))
        return _HostBuffer(ptr, nbytes)

    def stream(self) -> Any:
        flags = getattr(self.rt, "cudaStreamNonBlocking", 1)
        stream = self.check(self.rt.cudaStreamCreateWithFlags(flags), "cudaStreamCreateWithFlags")
        self.owned.append(("stream", stream))
        return stream

    def event(self) -> Any:
        flags = getattr(self.rt, "cudaEventDisableTiming", 2)
        event = self.check(self.rt.cudaEventCreateWithFlags(flags), "cudaEventCreateWithFlags")
        self.owned.append(("event", event))
        return event

    def copy(self, dst: int, src: int, nbytes: int, kind: str, stream: Any) -> None:
        member = getattr(self.rt.cudaMemcpyKind, f"cudaMemcpy{kind}")
        self.check(self.rt.cudaMemcpyAsync(dst, src, nbytes, member, stream), f"cudaMemcpyAsync {kind}")

    def record(self, event: Any, stream: Any) -> None:
        self.check(self.rt.cudaEventRecord(event, stream), "cudaEventRecord")

    def wait(self, stream: Any, event: Any) -> None:
        self.check(self.rt.cudaStreamWaitEvent(stream, event, 0), "cudaStreamWaitEvent")

    def sync_event(self, event: Any) -> None:
        self.check(self.rt.cudaEventSynchronize(event), "cudaEventSynchronize")

    def release(self) -> None:
        """Synchronize streams, then free everything owned (best effort: errors are ignored)."""
        rt = self.rt
        for kind, handle in self.owned:
            if kind == "stream":
                rt.cudaStreamSynchronize(handle)
        free = {"device": rt.cudaFree, "host": rt.cudaFreeHost, "stream": rt.cudaStreamDestroy,
                "event": rt.cudaEventDestroy}
        for kind, handle in reversed(self.owned):
            try:
                free[kind](handle)
            except Exception:  # noqa: BLE001 - cleanup must go on; cuda-python raises its own types
                pass
        self.owned = []


class _HostBuffer:
    """Pinned host memory seen as numpy arrays of any dtype and shape that fit."""

    def __init__(self, ptr: int, nbytes: int) -> None:
        self.ptr = ptr
        self.nbytes = nbytes
        self.bytes = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(ptr))

    def view(self, dtype: np.dtype, shape: Shape) -> np.ndarray:
        n = math.prod(shape) * np.dtype(dtype).itemsize
        return self.bytes[:n].view(dtype).reshape(shape)


@dataclass(frozen=True)
class _Tensor:
    name: str
    shape: Shape  # as the engine reports it; -1 marks a dynamic axis
    dtype: np.dtype
    max_shape: Shape  # the profile's largest, for buffer sizes

    @property
    def max_bytes(self) -> int:
        return max(math.prod(self.max_shape) * self.dtype.itemsize, 1)

    def spec(self) -> IOSpec:
        dims = tuple(("batch" if axis == 0 else None) if d < 0 else d for axis, d in enumerate(self.shape))
        return IOSpec(self.name, dims, self.dtype)


class _Slot:
    """One staging area: pinned host and device buffers, a copy stream, three events, at most one batch."""

    def __init__(self, index: int, stream: Any, host_in: Dict[str, _HostBuffer], host_out: Dict[str, _HostBuffer],
                 dev_in: Dict[str, int], dev_out: Dict[str, int], events: List[Any]) -> None:
        self.index = index
        self.stream = stream
        self.host_in, self.host_out = host_in, host_out
        self.dev_in, self.dev_out = dev_in, dev_out
        self.inputs_ready, self.computed, self.outputs_ready = events
        self.pending: Optional[TrtHandle] = None


@dataclass
class TrtHandle:
    """One submitted batch; ``collect`` it (once) for its outputs."""

    slot: int
    epoch: int  # the activation it belongs to
    batch: int
    shapes: Dict[str, Shape]  # output shapes
    outputs: Optional[Dict[str, np.ndarray]] = None
    collected: bool = False


class TensorRTBackend(Backend):
    """A TensorRT engine (path, serialized bytes or a deserialized ICudaEngine) behind the Backend contract."""

    name = "tensorrt"

    def __init__(self, engine: Any, *, num_buffers: int = 1, cuda_graphs: bool = False, device: int = 0,
                 expect: Any = None) -> None:
        """``expect``: a ``graph_loader.VerifiedGraph`` (trt-run's backends): the engine file's sha256 must be
        the manifest's, and its inputs and outputs the contract graph's, before the first batch."""
        super().__init__()
        self.expect = expect
        if num_buffers < 1:
            raise ConfigError(f"num_buffers must be >= 1, got {num_buffers}")
        self.engine_source = engine
        self.num_buffers = num_buffers
        self.cuda_graphs = cuda_graphs
        self.device = device
        self.min_batch = 1
        self.graph_error: Optional[str] = None  # why CUDA graphs were switched off
        self.counts = {"enqueue": 0, "graph_capture": 0, "graph_launch": 0}
        self._epoch = 0
        self._clear()

    def _clear(self) -> None:
        self._cuda: Optional[_Cuda] = None
        self._engine: Any = None
        self._context: Any = None
        self._compute: Any = None
        self._compute_in: Dict[str, int] = {}
        self._compute_out: Dict[str, int] = {}
        self._in: List[_Tensor] = []
        self._out: List[_Tensor] = []
        self._slots: List[_Slot] = []
        self._next_slot = 0
        self._configured: Optional[tuple] = None  # the input shapes the context is set to
        self._out_shapes: Dict[tuple, Dict[str, Shape]] = {}
        self._graph: Any = None
        self._graph_key: Optional[tuple] = None

    # -- activation -------------------------------------------------------------------------------

    def _activate(self) -> None:
        trt = trt_compat.import_tensorrt()
        self._cuda = _Cuda()
        try:
            self._cuda.check(self._cuda.rt.cudaSetDevice(self.device), f"cudaSetDevice({self.device})")
            self._engine = self._deserialize(trt)
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise EngineError("TensorRT could not create an execution context (out of GPU memory?)")
            self._describe(trt)
            self._check_expected()
            self._allocate()
        except BaseException:
            self._release()
            raise
        self._epoch += 1

    def _deserialize(self, trt: Any) -> Any:
        """A path goes through the verified loader (sidecar, TensorRT version, GPU, sha256); bytes are
        deserialized as given; anything else is taken as an ICudaEngine from ``engine_from_path``."""
        source = self.engine_source
        if isinstance(source, (str, Path)):
            return engine_from_path(source, target=trt_compat.current_target(self.device),
                                    manifest_sha256=self.expect.sha256 if self.expect is not None else "")
        if isinstance(source, (bytes, bytearray, memoryview)):
            return engine_from_bytes(source)
        return source

    def _describe(self, trt: Any) -> None:
        """IO tensors, their profile-max shapes and the batch range of optimization profile 0."""
        engine = self._engine
        raw_in, raw_out = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            try:
                dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            except TypeError as exc:
                raise EngineError(f"tensor '{name}' has a dtype numpy cannot hold: {exc}") from exc
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (raw_in if is_input else raw_out).append((name, shape, dtype))
        lo, hi, max_shapes = 1, None, {}
        for name, shape, _dtype in raw_in:
            pmin, pmax = shape, shape
            if any(d < 0 for d in shape):
                prof = _profile_shape(engine, name)
                pmin, pmax = tuple(int(d) for d in prof[0]), tuple(int(d) for d in prof[2])
            max_shapes[name] = pmax
            if shape:
                lo, hi = max(lo, pmin[0]), pmax[0] if hi is None else min(hi, pmax[0])
        self._in = [_Tensor(n, s, d, max_shapes[n]) for n, s, d in raw_in]
        out_max = self._set_shapes({n: max_shapes[n] for n, _s, _d in raw_in})
        self._out = [_Tensor(n, s, d, out_max[n]) for n, s, d in raw_out]
        self.inputs, self.outputs = [t.spec() for t in self._in], [t.spec() for t in self._out]
        self.min_batch, self.max_batch = lo, hi

    def _check_expected(self) -> None:
        """The deserialized engine's inputs and outputs against the contract graph (``expect``)."""
        if self.expect is None:
            return
        from .graph_loader import io_problems

        def triples(tensors: List[_Tensor]) -> list:
            return [(t.name, t.dtype.name, tuple(d if d >= 0 else "" for d in t.shape)) for t in tensors]

        problems = io_problems(triples(self._in), triples(self._out), self.expect.spec)
        if problems:
            raise GraphError(f"{self.expect.path} contradicts the contract of its export ({self.expect.spec.name} "
                             f"graph): {'; '.join(problems)}; rebuild the engine with trt-build from a fresh trt-export")

    def _set_shapes(self, shapes: Dict[str, Shape]) -> Dict[str, Shape]:
        """Set the context's input shapes (when they change); the output shapes they give."""
        key = tuple((n, tuple(shapes[n])) for n in sorted(shapes))
        if key != self._configured:
            self._drop_graph()
            for name, shape in key:
                if not self._context.set_input_shape(name, shape):
                    raise InputSpecError(f"TensorRT refused shape {shape} for input '{name}' (outside the profile?)")
            self._configured = key
        if key not in self._out_shapes:
            out = {}
            for name in self._output_names():
                shape = tuple(int(d) for d in self._context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise EngineError(f"output '{name}' has a data-dependent shape {shape}: not supported")
                out[name] = shape
            self._out_shapes[key] = out
        return self._out_shapes[key]

    def _output_names(self) -> List[str]:
        if self._out:
            return [t.name for t in self._out]
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = {t.name for t in self._in}
        return [n for n in names if n not in inputs]

    def _allocate(self) -> None:
        cuda = self._cuda
        self._compute = cuda.stream()
        self._compute_in = {t.name: cuda.malloc(t.max_bytes) for t in self._in}
        self._compute_out = {t.name: cuda.malloc(t.max_bytes) for t in self._out}
        for name, ptr in {**self._compute_in, **self._compute_out}.items():
            if not self._context.set_tensor_address(name, ptr):
                raise EngineError(f"TensorRT refused the device address of tensor '{name}'")
        for index in range(self.num_buffers):
            shared = self.num_buffers == 1  # one slot: stage straight in the compute buffers, on the compute stream
            self._slots.append(_Slot(
                index, self._compute if shared else cuda.stream(),
                {t.name: cuda.pinned(t.max_bytes) for t in self._in},
                {t.name: cuda.pinned(t.max_bytes) for t in self._out},
                self._compute_in if shared else {t.name: cuda.malloc(t.max_bytes) for t in self._in},
                self._compute_out if shared else {t.name: cuda.malloc(t.max_bytes) for t in self._out},
                [cuda.event() for _ in range(3)],
            ))

    def _deactivate(self) -> None:
        self._release()

    def _release(self) -> None:
        for slot in self._slots:
            slot.pending = None
        self._drop_graph()
        if self._cuda is not None:
            self._cuda.release()
        context, engine = self._context, self._engine
        self._context = self._engine = None  # context before engine before runtime
        del context, engine
        self._clear()

    # -- running ----------------------------------------------------------------------------------

    def check_feed(self, feed: Dict[str, np.ndarray]) -> None:
        super().check_feed(feed)
        for t in self._in:
            value = feed[t.name]
            if value.shape and value.shape[0] < self.min_batch:
                raise InputSpecError(f"input '{t.name}' batch {value.shape[0]} is below the engine's minimum "
                                     f"{self.min_batch}")
            if value.nbytes > t.max_bytes:
                raise InputSpecError(f"input '{t.name}' {value.shape} exceeds the engine's profile {t.max_shape}")

    def _infer(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return self.collect(self._submit(feed))

    def submit(self, feed: Dict[str, np.ndarray]) -> TrtHandle:
        """Stage and enqueue one batch; returns at once. ``collect`` the handle for the outputs."""
        if not self.active:
            raise HmrTrtError(f"{self.name} backend used outside 'with backend:' (call activate() first)")
        self.check_feed(feed)
        return self._submit(feed)

    def collect(self, handle: TrtHandle) -> Dict[str, np.ndarray]:
        """Wait for a submitted batch and return its outputs (fresh arrays)."""
        if not isinstance(handle, TrtHandle):
            raise HmrTrtError(f"collect() takes a handle from submit(), got {type(handle).__name__}")
        if handle.collected:
            raise HmrTrtError("this batch was already collected")
        if handle.outputs is None:
            slot = self._slots[handle.slot] if self.active and handle.epoch == self._epoch else None
            if slot is None or slot.pending is not handle:
                raise HmrTrtError("this batch was lost: the backend was deactivated before it was collected")
            self._finish(handle)
        outputs, handle.outputs, handle.collected = handle.outputs, None, True
        return outputs

    def _submit(self, feed: Dict[str, np.ndarray]) -> TrtHandle:
        cuda, slot = self._cuda, self._take_slot()
        arrays = {t.name: np.ascontiguousarray(feed[t.name]) for t in self._in}
        for name, arr in arrays.items():
            np.copyto(slot.host_in[name].view(arr.dtype, arr.shape), arr)
            cuda.copy(slot.dev_in[name], slot.host_in[name].ptr, arr.nbytes, "HostToDevice", slot.stream)
        separate = slot.stream is not self._compute
        if separate:
            cuda.record(slot.inputs_ready, slot.stream)
            cuda.wait(self._compute, slot.inputs_ready)
            for name, arr in arrays.items():
                cuda.copy(self._compute_in[name], slot.dev_in[name], arr.nbytes, "DeviceToDevice", self._compute)
        shapes = self._run({name: arr.shape for name, arr in arrays.items()})
        sizes = {t.name: math.prod(shapes[t.name]) * t.dtype.itemsize for t in self._out}
        if separate:
            for name, size in sizes.items():
                cuda.copy(slot.dev_out[name], self._compute_out[name], size, "DeviceToDevice", self._compute)
            cuda.record(slot.computed, self._compute)
            cuda.wait(slot.stream, slot.computed)
        for name, size in sizes.items():
            cuda.copy(slot.host_out[name].ptr, slot.dev_out[name], size, "DeviceToHost", slot.stream)
        cuda.record(slot.outputs_ready, slot.stream)
        batch = next(iter(arrays.values())).shape[0] if arrays else 0
        slot.pending = TrtHandle(slot.index, self._epoch, batch, shapes)
        return slot.pending

    def _take_slot(self) -> _Slot:
        slot = self._slots[self._next_slot]
        self._next_slot = (self._next_slot + 1) % len(self._slots)
        if slot.pending is not None:
            self._finish(slot.pending)  # its outputs wait on its handle
        return slot

    def _finish(self, handle: TrtHandle) -> None:
        slot = self._slots[handle.slot]
        self._cuda.sync_event(slot.outputs_ready)
        handle.outputs = {t.name: slot.host_out[t.name].view(t.dtype, handle.shapes[t.name]).copy() for t in self._out}
        slot.pending = None

    def _run(self, input_shapes: Dict[str, Shape]) -> Dict[str, Shape]:
        """Enqueue one inference on the compute stream (replaying a graph when one fits); output shapes."""
        shapes = self._set_shapes(input_shapes)
        if self._graph is not None and self._graph_key == self._configured:
            self._cuda.check(self._cuda.rt.cudaGraphLaunch(self._graph, self._compute), "cudaGraphLaunch")
            self.counts["graph_launch"] += 1
            return shapes
        if not self._context.execute_async_v3(_as_int(self._compute)):
            raise EngineError("TensorRT execute_async_v3 failed (run with HMR_TRT_DEBUG=1 for its log)")
        self.counts["enqueue"] += 1
        if self.cuda_graphs and self.graph_error is None:
            self._capture()
        return shapes

    # -- CUDA graphs ------------------------------------------------------------------------------

    def _capture(self) -> None:
        """Capture execute_async_v3 for the current shapes; on failure switch graphs off (plain enqueue)."""
        cuda, rt = self._cuda, self._cuda.rt
        try:
            mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
            cuda.check(rt.cudaStreamBeginCapture(self._compute, mode), "cudaStreamBeginCapture")
            ok = False
            try:
                ok = bool(self._context.execute_async_v3(_as_int(self._compute)))
            finally:
                graph = cuda.check(rt.cudaStreamEndCapture(self._compute), "cudaStreamEndCapture")
            if not ok:
                raise EngineError("execute_async_v3 failed during stream capture")
            try:
                self._graph = self._instantiate(graph)
            finally:
                rt.cudaGraphDestroy(graph)
            self._graph_key = self._configured
            self.counts["graph_capture"] += 1
        except Exception as exc:  # noqa: BLE001 - any capture failure means: no graphs, plain enqueue
            self.graph_error = f"{type(exc).__name__}: {exc}"
            rt.cudaGetLastError()  # clear the capture error so later calls do not report it
            warnings.warn(f"CUDA graph capture failed, using plain enqueue: {self.graph_error}", stacklevel=4)

    def _instantiate(self, graph: Any) -> Any:
        rt = self._cuda.rt
        with_flags = getattr(rt, "cudaGraphInstantiateWithFlags", None)
        if with_flags is not None:  # (graph, flags) from CUDA 11.4 on
            return self._cuda.check(with_flags(graph, 0), "cudaGraphInstantiateWithFlags")
        return self._cuda.check(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")

    def _drop_graph(self) -> None:
        if self._graph is not None and self._cuda is not None:
            self._cuda.rt.cudaGraphExecDestroy(self._graph)  # a launch in flight completes first
        self._graph, self._graph_key = None, None
