"""Serve an hmr-trt export on a CPU Triton server (PyTriton's bundled ``tritonserver``, python backend).

``python -m hmr_trt.runtime.triton_serve EXPORT_DIR [--http-port 8000]`` serves every graph of the export
as the Triton model ``<model>_<graph>`` (the names ``trt-triton`` gives them), each computed by hmr-trt's
ONNX Runtime backend, with Triton's dynamic batching. It is the CPU stand-in for the NGC Triton
container serving a ``trt-triton`` repository on a GPU host (PyTriton's server has only the python
backend: it cannot load ``model.plan`` or ``model.onnx`` itself). Clients (``trt-run --backend triton``)
see the same model names, inputs and outputs either way.

Needs ``nvidia-pytriton`` (numpy < 2, so its own environment: ``make .venv-triton``). With a pyenv-built
Python, set ``LD_LIBRARY_PATH`` to that Python's lib directory (the python-backend stub links libpython).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from hmr_trt.cli_common import run_cli
from hmr_trt.errors import HmrTrtError
from hmr_trt.manifest import MANIFEST_NAME, Manifest

from .backends import OnnxRuntimeBackend
from .graph_loader import contract_from_manifest, graph_from_manifest


def _infer_fn(backend: OnnxRuntimeBackend) -> Callable[[List], List[Dict[str, np.ndarray]]]:
    def infer(requests: List) -> List[Dict[str, np.ndarray]]:
        # PyTriton hands a list of requests (dynamic batching): concatenate, run once, split back
        names = [s.name for s in backend.inputs]
        sizes = [len(r[names[0]]) for r in requests]
        feed = {n: np.concatenate([r[n] for r in requests]).astype(np.float32, copy=False) for n in names}
        out = backend.infer(feed)
        splits = np.cumsum(sizes)[:-1]
        parts = {k: np.split(v, splits) for k, v in out.items()}
        return [{k: parts[k][i] for k in out} for i in range(len(requests))]

    return infer


def serve(export_dir: Path, http_port: int = 8000, grpc_port: int = 8001, precision: str = "fp32") -> None:
    manifest = Manifest.read(export_dir)
    contract = contract_from_manifest(manifest, str(Path(export_dir) / MANIFEST_NAME))
    served = {}  # graph -> its ONNX, verified against the manifest and the contract before the server starts
    for graph in contract.graphs:
        if graph.role == "step":
            continue  # sequence batching with implicit state needs the onnxruntime/tensorrt backends
        wanted = precision if graph.precision_passes else "fp32"
        art = manifest.find(graph.name, "onnx", wanted) or manifest.find(graph.name, "onnx", "fp32")
        if art is None:
            raise HmrTrtError(f"{export_dir}/{MANIFEST_NAME} lists no ONNX for the {graph.name} graph")
        served[graph.name] = graph_from_manifest(export_dir, manifest, art, contract).path
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    config = TritonConfig(http_address="127.0.0.1", http_port=http_port, grpc_address="127.0.0.1",
                          grpc_port=grpc_port, allow_metrics=False, log_verbose=0)
    with ExitStack() as stack:
        triton = stack.enter_context(Triton(config=config))
        for graph in (g for g in contract.graphs if g.name in served):
            backend = stack.enter_context(OnnxRuntimeBackend(served[graph.name], threads=1))
            max_batch = int(manifest.profile["max"]) * contract.rows_per_item(graph)
            triton.bind(
                model_name=f"{contract.name}_{graph.name}",
                infer_func=_infer_fn(backend),
                inputs=[Tensor(name=s.name, dtype=np.dtype(s.dtype).type, shape=tuple(s.shape[1:])) for s in graph.inputs],
                outputs=[Tensor(name=s.name, dtype=np.dtype(s.dtype).type, shape=tuple(s.shape[1:])) for s in graph.outputs],
                config=ModelConfig(max_batch_size=max_batch, batcher=DynamicBatcher(max_queue_delay_microseconds=500)),
                strict=True,
            )
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        triton.run()
        print(f"serving {export_dir} on 127.0.0.1:{http_port}", flush=True)
        while not stop.wait(0.5):
            pass


def main(argv: List[str] = sys.argv[1:]) -> None:
    parser = argparse.ArgumentParser(prog="python -m hmr_trt.runtime.triton_serve", description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args(argv)
    run_cli(lambda: serve(args.export_dir, args.http_port, args.grpc_port, args.precision))


if __name__ == "__main__":
    main()
