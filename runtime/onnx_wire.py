"""ONNX files read straight from the protobuf wire format, without the onnx package.

The GPU image has tensorrt and numpy, not onnx; the runtime and the engine builder still need two
things from an ONNX file before anything loads it: ``ModelProto.metadata_props`` (what trt-export
wrote: ``hmr_trt.graph``, ``hmr_trt.model``, ...) and the graph's inputs and outputs (names, element
types, shapes), which ``runtime/graph_loader.py`` compares with the model contract. The file is
memory-mapped and length-delimited fields are skipped by their length, so a large graph's weights
are never read.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from hmr_trt.errors import EngineError

PathLike = Union[str, Path]
Dim = Union[int, str]  # dim_value, or dim_param ("" when the axis is unnamed and unknown)

# ModelProto: graph = 7, metadata_props = 14 (StringStringEntryProto: key = 1, value = 2)
MODEL_GRAPH_FIELD, MODEL_METADATA_FIELD = 7, 14
# GraphProto: initializer = 5 (TensorProto, name = 8), input = 11, output = 12 (ValueInfoProto)
GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_OUTPUT, TENSOR_NAME = 5, 11, 12, 8
# TensorProto.DataType -> numpy dtype name
ELEM_TYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
              9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16"}


@dataclass(frozen=True)
class OnnxTensor:
    """One graph input or output as the file declares it; ``shape`` None when it declares no shape."""

    name: str
    dtype: str
    shape: Optional[Tuple[Dim, ...]]


@dataclass(frozen=True)
class OnnxInfo:
    metadata: Dict[str, str]
    inputs: Tuple[OnnxTensor, ...]  # graph inputs that are not initializers
    outputs: Tuple[OnnxTensor, ...]


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


def fields(buf: Any, start: int, end: int) -> Iterator[Tuple[int, int, Any]]:
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


def _text(buf: Any, span: Tuple[int, int]) -> str:
    return bytes(buf[span[0]:span[1]]).decode()


def _first(buf: Any, span: Tuple[int, int], number: int, wire: int = 2) -> Any:
    return next((v for n, w, v in fields(buf, *span) if n == number and w == wire), None)


def _metadata_from(buf: Any) -> Dict[str, str]:
    props: Dict[str, str] = {}
    for number, wire, value in fields(buf, 0, len(buf)):
        if number != MODEL_METADATA_FIELD or wire != 2:
            continue
        entry = {n: _text(buf, v) for n, w, v in fields(buf, *value) if w == 2 and n in (1, 2)}
        props[entry.get(1, "")] = entry.get(2, "")
    return props


def _tensor(buf: Any, span: Tuple[int, int]) -> OnnxTensor:
    """A ValueInfoProto (name = 1, type = 2): TypeProto.tensor_type = 1 -> elem_type = 1, shape = 2 ->
    TensorShapeProto.dim = 1 -> Dimension dim_value = 1 | dim_param = 2."""
    name_span = _first(buf, span, 1)
    name = _text(buf, name_span) if name_span else ""
    dtype, shape = "?", None
    type_span = _first(buf, span, 2)
    tensor_span = _first(buf, type_span, 1) if type_span else None
    if tensor_span:
        elem = _first(buf, tensor_span, 1, wire=0)
        dtype = ELEM_TYPES.get(elem, f"onnx type {elem}") if elem is not None else "?"
        shape_span = _first(buf, tensor_span, 2)
        if shape_span is not None:
            dims: List[Dim] = []
            for n, w, dim in fields(buf, *shape_span):
                if n != 1 or w != 2:
                    continue
                value, param = _first(buf, dim, 1, wire=0), _first(buf, dim, 2)
                dims.append(int(value) if value is not None else (_text(buf, param) if param else ""))
            shape = tuple(dims)
    return OnnxTensor(name, dtype, shape)


def _info_from(buf: Any) -> OnnxInfo:
    graph = _first(buf, (0, len(buf)), MODEL_GRAPH_FIELD)
    inputs: List[OnnxTensor] = []
    outputs: List[OnnxTensor] = []
    initializers = set()
    if graph is not None:
        for number, wire, value in fields(buf, *graph):
            if wire != 2:
                continue
            if number == GRAPH_INPUT:
                inputs.append(_tensor(buf, value))
            elif number == GRAPH_OUTPUT:
                outputs.append(_tensor(buf, value))
            elif number == GRAPH_INITIALIZER:
                name = _first(buf, value, TENSOR_NAME)
                initializers.add(_text(buf, name) if name else "")
    return OnnxInfo(_metadata_from(buf), tuple(t for t in inputs if t.name not in initializers), tuple(outputs))


def _mapped(path: PathLike, read: Any) -> Any:
    path = Path(path)
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return read(buf)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise EngineError(f"{path} is not a readable ONNX file: {getattr(exc, 'strerror', None) or exc}") from exc


def read_onnx_metadata(path: PathLike) -> Dict[str, str]:
    """``ModelProto.metadata_props`` of an ONNX file."""
    return _mapped(path, _metadata_from)


def read_onnx_info(path: PathLike) -> OnnxInfo:
    """The metadata, inputs (initializers left out) and outputs an ONNX file declares."""
    return _mapped(path, _info_from)
