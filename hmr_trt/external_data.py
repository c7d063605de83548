"""ONNX graphs over protobuf's 2 GB limit: weights in one external data file beside the graph.

An FP32 ViT-H graph (HMR 2.0: ~632 M parameters, ~2.5 GB) cannot be one protobuf. Such a graph is
written as ``<name>.onnx`` (the graph, small) and ``<name>.onnx.data`` (every initializer, one file,
ONNX's external-data layout: ``location``/``offset``/``length`` on each tensor). The graph's metadata
records the data file's sha256 and size (``hmr_trt.external_data``), so a data file that does not
belong to its graph, or was cut short in a copy, is named before anyone builds or runs it; the
manifest records the same next to the graph's own sha256.

torch-free (``onnx`` imported where used); the checks read only the graph and the data file's size
and hash.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional

from .errors import ExportError

METADATA_KEY = "hmr_trt.external_data"  # {"location", "sha256", "bytes"}
# Graphs whose initializers total more than this go external (protobuf refuses 2 GiB; leave room for the graph).
THRESHOLD_BYTES = 2 * 1024 ** 3 - 64 * 1024 ** 2


def data_name(graph: Path) -> str:
    return Path(graph).name + ".data"


def _locations(model: Any) -> Dict[str, int]:
    """location -> bytes the graph reads from it (max offset + length over its tensors)."""
    import onnx

    need: Dict[str, int] = {}
    for tensor in _all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        end = int(info.get("offset", 0)) + int(info.get("length", 0))
        need[info["location"]] = max(need.get(info["location"], 0), end)
    return need


def _all_tensors(model: Any):
    from onnx.external_data_helper import _get_all_tensors

    return _get_all_tensors(model)


def recorded(model: Any) -> Optional[Dict[str, Any]]:
    """The graph's record of its data file, or None (a graph with its weights inside)."""
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return None


def check(graph: Path, expected_sha256: Optional[str] = None, hash_data: bool = True) -> Optional[Dict[str, Any]]:
    """Raise ExportError (one line naming the file) when the graph's external data is missing, shorter than
    the graph reads, or not the file the graph (or the manifest: ``expected_sha256``) records. Returns the
    record, or None for a graph without external data."""
    import onnx

    from .manifest import sha256_of

    graph = Path(graph)
    model = onnx.load(str(graph), load_external_data=False)
    need = _locations(model)
    if not need:
        return None
    if len(need) != 1:
        raise ExportError(f"{graph}: its weights are spread over {len(need)} files ({', '.join(sorted(need))}); "
                          f"hmr-trt writes one data file beside the graph")
    location, length = next(iter(need.items()))
    data = graph.parent / location
    if not data.is_file():
        raise ExportError(f"{data}: the external data file of {graph.name} is missing (keep it beside the graph)")
    size = data.stat().st_size
    if size < length:
        raise ExportError(f"{data}: truncated: {size} bytes, {graph.name} reads {length}")
    record = recorded(model)
    if record is not None and int(record.get("bytes", size)) != size:
        raise ExportError(f"{data}: does not match {graph.name}: {size} bytes, the graph records "
                          f"{record['bytes']}")
    if hash_data and (record is not None or expected_sha256):
        sha = sha256_of(data)
        for want, who in ((record or {}).get("sha256"), graph.name), (expected_sha256, "the manifest"):
            if want and sha != want:
                raise ExportError(f"{data}: does not match {graph.name}: sha256 {sha[:16]}..., {who} records "
                                  f"{want[:16]}...")
    return record or {"location": location, "bytes": size}


def save(model: Any, graph: Path, external: bool) -> Optional[Dict[str, Any]]:
    """Write ``model`` (weights in memory) to ``graph``, atomically: with ``external``, its initializers go to
    one ``<graph>.data`` beside it (written first), the graph records the data file's sha256 and size, and
    the graph is renamed into place last. Returns the record (None: weights inside the graph)."""
    import onnx

    from .manifest import sha256_of

    graph = Path(graph)
    tmp_graph = graph.with_name(f".{graph.name}.tmp")
    if not external:
        _drop_record(model)
        onnx.save(model, str(tmp_graph))
        os.replace(tmp_graph, graph)
        return None
    name = data_name(graph)
    tmp_data = graph.with_name(f".{name}.tmp")
    # write tensors to the temporary data file, then point the graph at the final name
    onnx.save(model, str(tmp_graph), save_as_external_data=True, all_tensors_to_one_file=True,
              location=tmp_data.name, size_threshold=0)
    for tensor in _all_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = name
    record = {"location": name, "sha256": sha256_of(tmp_data), "bytes": tmp_data.stat().st_size}
    _drop_record(model)
    prop = model.metadata_props.add()
    prop.key, prop.value = METADATA_KEY, json.dumps(record)
    onnx.save(model, str(tmp_graph))  # the tensors are external now: the graph alone
    os.chmod(tmp_data, os.stat(tmp_graph).st_mode & 0o777)  # onnx creates the data file 0600; match the graph
    os.replace(tmp_data, graph.parent / name)
    os.replace(tmp_graph, graph)
    return record


def _drop_record(model: Any) -> None:
    keep = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)


def initializer_bytes(model: Any) -> int:
    """Bytes of the weights the graph carries (inside or external)."""
    import numpy as np
    import onnx

    total = 0
    for tensor in _all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            total += int({e.key: e.value for e in tensor.external_data}.get("length", 0))
        else:
            count = int(np.prod(tensor.dims)) if len(tensor.dims) else 1
            total += count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return total


def manifest_extra(graph: Path) -> Dict[str, Any]:
    """``{"external_data": {"location", "sha256", "bytes"}}`` for the manifest entry of a graph with a data
    file (read from the graph's own record), else {}."""
    import onnx

    record = recorded(onnx.load(str(graph), load_external_data=False))
    return {"external_data": record} if record else {}
