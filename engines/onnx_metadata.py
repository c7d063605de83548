"""ONNX metadata without the onnx package (the GPU image has tensorrt and numpy, not onnx).

``read_onnx_metadata`` reads ``ModelProto.metadata_props`` straight from the protobuf wire format
(memory-mapped, so a large graph is not loaded; the reader lives in ``hmr_trt.runtime.onnx_wire``,
which the runtime shares); ``require_hmr_trt_graph`` refuses ONNX files that trt-export did not
write (no ``hmr_trt.graph`` entry).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Union

from hmr_trt.errors import EngineError
from hmr_trt.fileio import path_problem
from hmr_trt.runtime.onnx_wire import read_onnx_metadata

__all__ = ["GRAPH_KEY", "METADATA_PREFIX", "read_onnx_metadata", "require_hmr_trt_graph"]

PathLike = Union[str, Path]
METADATA_PREFIX = "hmr_trt."
GRAPH_KEY = METADATA_PREFIX + "graph"


def require_hmr_trt_graph(path: PathLike) -> Dict[str, str]:
    """The ``hmr_trt.*`` metadata (prefix stripped) of an ONNX file; EngineError when it is not ours."""
    path = Path(path)
    problem = path_problem(path, "file")
    if problem:
        raise EngineError(f"ONNX file {problem}")
    props = read_onnx_metadata(path)
    if GRAPH_KEY not in props:
        raise EngineError(f"{path} is not an hmr-trt export (no '{GRAPH_KEY}' metadata): build engines from the "
                          "ONNX files trt-export writes (or its export directory)")
    return {k[len(METADATA_PREFIX):]: v for k, v in props.items() if k.startswith(METADATA_PREFIX)}
