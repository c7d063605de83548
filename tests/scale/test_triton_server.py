"""A real tritonserver (PyTriton's, python backend, serving hmr-trt's ONNX Runtime backend) answers trt-run's
pipeline with the same results as a local run. Inside its own network namespace; everything it starts dies
with it."""

from __future__ import annotations

import json
import os
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from .conftest import isolated

SCENARIO = Path(__file__).with_name("scenario_triton.py")


@pytest.fixture(scope="module")
def served(full_export, short_clips, tmp_path_factory):
    server_py = os.environ.get("HMR_TRT_TRITON_PY")
    if not server_py or not Path(server_py).is_file():
        pytest.skip("no PyTriton environment (HMR_TRT_TRITON_PY; `make test` builds .venv-triton)")
    export_dir, _ = full_export
    out = tmp_path_factory.mktemp("triton-run")
    # the python-backend stub links libpython: point it at this Python's (pyenv builds differ from the system's)
    env = {"LD_LIBRARY_PATH": os.pathsep.join(filter(None, [sysconfig.get_config_var("LIBDIR"),
                                                            os.environ.get("LD_LIBRARY_PATH")]))}
    import sys

    run = isolated([sys.executable, SCENARIO, export_dir, short_clips / "walk_a.avi", out, server_py],
                   timeout=600, env=env)
    log = (out / "server.log").read_text()[-3000:] if (out / "server.log").exists() else ""
    assert run.returncode == 0, run.stderr[-3000:] + "\n--- server.log ---\n" + log
    return out, json.loads((out / "results.json").read_text())


def test_triton_run_equals_local_run(served) -> None:
    out, results = served
    assert results["remote_backend"].startswith("triton at 127.0.0.1:8000")
    remote = sorted((out / "remote").glob("track_*.npz"))
    local = sorted((out / "local").glob("track_*.npz"))
    assert remote and [p.name for p in remote] == [p.name for p in local]
    for a, b in zip(remote, local):
        with np.load(a) as ra, np.load(b) as lb:
            assert set(ra.files) == set(lb.files)
            for key in ra.files:
                if ra[key].dtype.kind == "f":
                    np.testing.assert_allclose(ra[key], lb[key], atol=1e-4, err_msg=f"{a.name}:{key}")
                else:
                    np.testing.assert_array_equal(ra[key], lb[key])


def test_server_down_and_wrong_model_are_one_line(served) -> None:
    _, results = served
    assert "no Triton server answers at 127.0.0.1:8000" in results["down"] and "\n" not in results["down"]
    assert "takes inputs" in results["wrong_model"] and "expected ['features']" in results["wrong_model"]
