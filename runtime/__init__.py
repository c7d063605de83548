"""runtime: ``Runtime`` (runtime/api.py) is the Python API; ``trt-run`` (runtime/cli.py) its command line."""

from typing import Any


def __getattr__(name: str) -> Any:  # lazy: importing the package stays light (no OpenCV, no backends)
    if name in ("Runtime", "FrameOutput", "Person"):
        from . import api

        return getattr(api, name)
    raise AttributeError(name)
