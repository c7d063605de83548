"""ONNX metadata without the onnx package (the GPU image has tensorrt and numpy, not onnx).

``read_onnx_metadata`` reads ``ModelProto.metadata_props`` straight from the protobuf wire format
(memory-mapped, so a large graph is not loaded); ``require_hmr_trt_graph`` refuses ONNX files that
trt-export did not write (no ``hmr_trt.graph`` entry).
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple, Union

from hmr_trt.errors import EngineError

PathLike = Union[str, Path]
METADATA_PREFIX = "hmr_trt."
GRAPH_KEY = METADATA_PREFIX + "graph"


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
