"""What every hmr-trt command shares: one-line errors with exit code 1, Ctrl-C handling, progress."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from enum import Enum
from typing import Callable, Iterator, TypeVar

from .errors import HmrTrtError

T = TypeVar("T")


class Precision(str, Enum):
    """--precision, the same choice in trt-export, trt-build and trt-run."""

    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"
DEBUG_ENV = "HMR_TRT_DEBUG"


def run_cli(fn: Callable[[], T]) -> T:
    """Call ``fn``; a project error (or an OSError about a path) becomes one line on stderr and exit code 1
    (HMR_TRT_DEBUG=1: traceback)."""
    try:
        return fn()
    except HmrTrtError as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:  # a path the checks above did not foresee (too long, unreadable, disk full)
        if os.environ.get(DEBUG_ENV):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        sys.exit(130)


@contextlib.contextmanager
def step(label: str) -> Iterator[None]:
    """Show a spinner while one step of long work runs, then its duration."""
    from rich.console import Console

    console = Console(stderr=True)
    start = time.perf_counter()
    with console.status(f"{label} ..."):
        yield
    console.print(f"[green]done[/] {label} ({time.perf_counter() - start:.1f} s)")
