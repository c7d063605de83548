"""``python -m hmr_trt.engines.doctor``: the GPU routes this Python has, and which one ``--backend auto`` takes.

Prints the TensorRT API (TensorRT + cuda-python + a GPU), ONNX Runtime's execution providers
(what ``get_available_providers()`` reports, and whether each can run here: a driver that runs the
build's CUDA version, every library the provider library links, and a real session that keeps it;
for a usable GPU provider, how FP32 stays FP32 there), and the route ``trt-run --backend auto``
would take. Exit status 0 when a GPU route exists, 1 when only the CPU is left (``make test-gpu``
runs it first, so a GPU job's log says what it tested and stops early on a machine without one).
"""

from __future__ import annotations

import sys
from typing import List, Optional

from hmr_trt.errors import HmrTrtError
from hmr_trt.runtime.ort_providers import (
    GPU_EPS,
    PREFERENCE,
    Machine,
    auto_route,
    import_onnxruntime,
    tf32_state,
)
from hmr_trt.runtime.trt_compat import trt_available


def report(machine: Optional[Machine], ort_error: str = "") -> List[str]:
    """The doctor's lines (without the header); ``machine`` None when onnxruntime is missing (``ort_error``)."""
    ok, what = trt_available()
    lines = [f"TensorRT API: {what}"]
    if machine is None:
        lines += [f"ONNX Runtime: {ort_error}", f"--backend auto: {'the TensorRT API' if ok else 'nothing runs'}"]
        return lines
    ort = import_onnxruntime()
    lines.append(f"ONNX Runtime {ort.__version__} ({ort.get_device()} build); NVIDIA driver: {machine.driver.why}; "
                 f"libnvinfer: {machine.tensorrt or 'not found'}")
    listed = [p for p in PREFERENCE if p in machine.available] + \
        [p for p in machine.available if p not in PREFERENCE]
    for p in listed:
        usable, why = machine.usable(p)
        fp32 = f" (FP32: {tf32_state(p)})" if usable and p in GPU_EPS else ""
        lines.append(f"  {p}: {'usable' + fp32 if usable else why}")
    for p in GPU_EPS:
        if p not in machine.available:
            lines.append(f"  {p}: not in this build")
    lines.append(f"--backend auto: {auto_route(machine, (ok, what))}")
    return lines


def gpu_route(machine: Optional[Machine]) -> bool:
    return trt_available()[0] or (machine is not None and any(machine.usable(p)[0] for p in GPU_EPS))


def main() -> int:
    try:
        machine: Optional[Machine] = Machine.probe()
        ort_error = ""
    except HmrTrtError as exc:
        machine, ort_error = None, str(exc)
    print(f"hmr-trt doctor ({sys.executable}, Python {sys.version.split()[0]})")
    for line in report(machine, ort_error):
        print(line)
    return 0 if gpu_route(machine) else 1


if __name__ == "__main__":
    sys.exit(main())
