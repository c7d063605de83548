"""A backend whose inference runs on a Triton Inference Server (``trt-run --backend triton``).

The same ``with backend: backend.infer(feed)`` contract as the local backends: one backend per graph,
talking to the Triton model ``<model>_<graph>`` of a repository written by ``trt-triton`` (or served by
``python -m hmr_trt.runtime.triton_serve``). On activation it checks that the server answers, that the
model is ready, and that its inputs and outputs are the graph's (names, dtypes, shapes), so a server that
is down or serves another model fails with one line before any video work. ``tritonclient[http]`` is an
optional dependency (the ``triton`` extra), imported lazily.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from hmr_trt.errors import ConfigError, HmrTrtError

from .backends import Backend, IOSpec

_DTYPES = {"FP32": np.float32, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32, "UINT8": np.uint8}
DEFAULT_URL = "127.0.0.1:8000"


def _client(url: str, timeout: float) -> Any:
    try:
        import tritonclient.http as httpclient
    except ImportError as exc:
        raise HmrTrtError("--backend triton needs tritonclient: pip install 'hmr-trt[triton]'") from exc
    url = url.split("://", 1)[-1]
    try:
        return httpclient.InferenceServerClient(url=url, connection_timeout=timeout, network_timeout=timeout)
    except Exception as exc:  # bad URL syntax
        raise ConfigError(f"--triton-url {url!r}: {exc}") from exc


class TritonBackend(Backend):
    """One Triton model over HTTP; ``expected_inputs`` (names) guards against another model of that name."""

    name = "triton"

    def __init__(self, url: str, model: str, expected_inputs: Optional[tuple] = None, timeout: float = 60.0) -> None:
        super().__init__()
        self.url, self.model, self.timeout = url, model, timeout
        self.expected_inputs = expected_inputs
        self.client: Any = None

    def _activate(self) -> None:
        client = _client(self.url, self.timeout)
        try:
            live = client.is_server_live()
        except Exception as exc:  # connection refused, DNS, timeout
            raise HmrTrtError(f"no Triton server answers at {self.url} ({type(exc).__name__}): start it, "
                              "or pass --triton-url HOST:PORT") from exc
        if not live:
            raise HmrTrtError(f"the Triton server at {self.url} is not live")
        try:
            ready = client.is_model_ready(self.model)
        except Exception as exc:
            raise HmrTrtError(f"Triton at {self.url}: cannot query model {self.model}: {exc}") from exc
        if not ready:
            names = sorted(m.get("name", "?") for m in _safe(lambda: client.get_model_repository_index(), []))
            raise HmrTrtError(f"the Triton server at {self.url} has no ready model {self.model!r} "
                              f"(it serves: {', '.join(names) or 'nothing'}); serve this export's repository "
                              "(trt-triton EXPORT --out REPO)")
        meta = client.get_model_metadata(self.model)
        config = _safe(lambda: client.get_model_config(self.model), {})
        batching = int(config.get("max_batch_size", 0) or 0) > 0
        self.max_batch = int(config["max_batch_size"]) if batching else None

        def specs(entries: list) -> list:
            out = []
            for e in entries:
                shape = tuple(int(d) for d in e["shape"])
                if batching and shape and shape[0] == -1:
                    shape = ("batch",) + shape[1:]
                out.append(IOSpec(e["name"], shape, np.dtype(_DTYPES.get(e["datatype"], np.float32))))
            return out

        self.inputs, self.outputs = specs(meta.get("inputs", [])), specs(meta.get("outputs", []))
        if self.expected_inputs is not None and tuple(s.name for s in self.inputs) != tuple(self.expected_inputs):
            raise HmrTrtError(f"Triton model {self.model!r} at {self.url} takes inputs "
                              f"{[s.name for s in self.inputs]}, expected {list(self.expected_inputs)}: "
                              "the server serves another model under that name")
        self.client = client

    def _deactivate(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None

    def _infer(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        import tritonclient.http as httpclient

        inputs = []
        for spec in self.inputs:
            value = np.ascontiguousarray(feed[spec.name])
            item = httpclient.InferInput(spec.name, list(value.shape), _triton_type(value.dtype))
            item.set_data_from_numpy(value, binary_data=True)
            inputs.append(item)
        wanted = [httpclient.InferRequestedOutput(s.name, binary_data=True) for s in self.outputs]
        try:
            result = self.client.infer(self.model, inputs, outputs=wanted)
        except Exception as exc:
            raise HmrTrtError(f"Triton model {self.model!r} at {self.url} failed: {str(exc).splitlines()[0]}") from exc
        return {s.name: result.as_numpy(s.name) for s in self.outputs}


def _triton_type(dtype: np.dtype) -> str:
    for name, np_type in _DTYPES.items():
        if np.dtype(np_type) == dtype:
            return name
    raise HmrTrtError(f"dtype {dtype} has no Triton type here")


def _safe(fn: Any, default: Any) -> Any:
    try:
        return fn()
    except Exception:
        return default
