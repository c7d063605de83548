"""``python -m hmr_trt.engines.doctor``: which TensorRT and GPU this Python sees (exit 1 if none).

``make test-gpu`` runs it first, so a GPU job's log says which TensorRT it tested.
"""

from __future__ import annotations

import sys

from hmr_trt.runtime.trt_compat import trt_available


def main() -> int:
    ok, what = trt_available()
    print(f"hmr-trt doctor ({sys.executable}, Python {sys.version.split()[0]}): {what}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
