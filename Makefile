# hmr-trt: `make demo` and `make test` each create .venv with pinned dependencies, then run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The first Python 3.9 that actually runs (pyenv's shim exists but may refuse to run).
PY39 ?= $(shell for p in $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.9*/bin/python3.9 2>/dev/null) $$(command -v python3.9); do "$$p" -c 'import sys' 2>/dev/null && echo "$$p" && break; done)
VENV39 ?= .venv39
SAMPLE := data/vtest.avi
DEMO_OUT ?= out/demo

.PHONY: install demo test lint pytest test-slow test-gpu bench clean

install: $(STAMP)

# torch first, alone: pip takes the local CPU build of 2.13.0 instead of resolving a CUDA build.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e ".[export,ort,video,dev,triton,ray]"
	touch $@

# Python 3.9 with numpy and OpenCV alone: the runtime's promise for bare GPU images (see tests/runtime/test_py39.py).
$(VENV39)/.installed: constraints.txt
	@if [ -n "$(PY39)" ]; then \
	  $(PY39) -m venv $(VENV39) && \
	  $(VENV39)/bin/pip install -q --disable-pip-version-check "numpy<2.1" "opencv-python-headless==4.14.0.94" "packaging" && \
	  touch $@; \
	else echo "no python3.9 on this machine: the Python 3.9 runtime test will skip"; fi

# PyTriton's CPU tritonserver (python backend) for the Triton tests: nvidia-pytriton needs numpy < 2, so it
# lives in its own venv with hmr-trt's runtime (no torch). See runtime/triton_serve.py.
VENVT ?= .venv-triton
$(VENVT)/.installed: constraints-triton.txt pyproject.toml
	$(PYTHON) -m venv $(VENVT)
	$(VENVT)/bin/pip install -q --disable-pip-version-check -c constraints-triton.txt nvidia-pytriton onnxruntime numpy
	$(VENVT)/bin/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

$(SAMPLE):
	tools/fetch_sample_video.sh $@ $(BIN)/python

# The main job on the embedded default: export (ONNX + parity in mm), then the whole video through
# detection, tracking, backbone, temporal model and body model, with the meshes rendered.
# The SSDLite person detector is converted (once, cached; tools/convert_ssdlite.py) while the
# export runs; if that fails, trt-run's --detector auto falls back to HOG and says so. The demo keeps
# every track (--min-track-frames 1), so every walker the detector finds carries a mesh in the video.
demo: $(STAMP) $(SAMPLE)
	@mkdir -p $(DEMO_OUT)
	$(BIN)/python tools/convert_ssdlite.py --verify > $(DEMO_OUT)/convert_ssdlite.log 2>&1 & conv=$$!; \
	$(BIN)/trt-export --model coseg --precision fp32 --window 16 --batch 1:8:64 --video $(SAMPLE) --out $(DEMO_OUT)/export; \
	status=$$?; wait $$conv && tail -n 2 $(DEMO_OUT)/convert_ssdlite.log || \
	  echo "SSDLite conversion failed (see $(DEMO_OUT)/convert_ssdlite.log): the demo detects with HOG"; \
	exit $$status
	$(BIN)/trt-run --video $(SAMPLE) --export $(DEMO_OUT)/export --out $(DEMO_OUT)/run --emit all \
	  --render $(DEMO_OUT)/vtest_meshes.mp4 --min-track-frames 1

lint: $(STAMP)
	$(BIN)/ruff check .

pytest: $(STAMP) $(SAMPLE) $(VENV39)/.installed $(VENVT)/.installed
	HMR_TRT_PY39=$(abspath $(VENV39))/bin/python HMR_TRT_TRITON_PY=$(abspath $(VENVT))/bin/python \
	  $(BIN)/python -m pytest -m "not slow"

# The tests marked slow (the INT8 sensitivity sweep from scratch, about 5 minutes on 2 cores).
test-slow: $(STAMP) $(SAMPLE)
	$(BIN)/python -m pytest -m slow

test: lint pytest

# --- GPU ------------------------------------------------------------------------------------
# Export with a Python that has torch (EXPORT_PY), then build engines and compare them with the
# torch reference in mm under the Python that has TensorRT (TRT_PY: a TensorRT container's
# python3, or `py39` from the offline TensorRT 8.6 bundle in ../shared/gpu). The package is
# staged under build/stage (no pip needed on either side).
TRT_PY ?= $(shell command -v py39 2>/dev/null || echo python3)
EXPORT_PY ?= $(shell [ -x $(BIN)/python ] && echo $(BIN)/python || echo python3)
GPU_OUT ?= out/gpu

STAGE := PYTHONPATH=$(abspath build/stage)

# The streaming runtime then runs on the sample video with the FP16 engines, even when parity
# failed (the recipe keeps pytest's exit status). The TensorRT Python needs the runtime's
# dependencies too: OpenCV < 5, edgefirst-tracker, typer, rich (for the offline bundle, add
# edgefirst-tracker to its EXTRA_WHEELS).
# One export per precision (trt-export writes one reduced precision per run). FP32 and INT8 use
# --strict (a miss of the contract's goal on the CPU stops here, nothing written). FP16 does not:
# its CPU stand-in misses the goal on the seeded weights (trt-export writes it, warns and records
# the MISS), and the GPU tests judge what TensorRT really does against the same goal, strictly.
test-gpu:
	@test -f $(SAMPLE) || { echo "missing $(SAMPLE): run 'make $(SAMPLE)' where apt works, or copy vtest.avi there"; exit 1; }
	python3 tools/stage_package.py build/stage >/dev/null
	$(STAGE) $(TRT_PY) -m hmr_trt.engines.doctor
	$(STAGE) $(EXPORT_PY) -m hmr_trt.export --precision fp32 --strict --video $(SAMPLE) --out $(GPU_OUT)/export/fp32
	$(STAGE) $(EXPORT_PY) -m hmr_trt.export --precision fp16 --video $(SAMPLE) --out $(GPU_OUT)/export/fp16
	$(STAGE) $(EXPORT_PY) -m hmr_trt.export --precision int8 --strict --video $(SAMPLE) --out $(GPU_OUT)/export/int8
	$(STAGE) HMR_TRT_EXPORT_DIR=$(abspath $(GPU_OUT)/export) HMR_TRT_GPU_OUT=$(abspath $(GPU_OUT)) \
	  HMR_TRT_SAMPLE_VIDEO=$(abspath $(SAMPLE)) $(TRT_PY) -m pytest -o addopts="" --strict-markers -p no:cacheprovider \
	  -c pyproject.toml -m "gpu or trt" -v tests/gpu; status=$$?; \
	$(STAGE) $(TRT_PY) -m hmr_trt.engines $(GPU_OUT)/export/fp16 --precision fp16 --out $(GPU_OUT)/engines-fp16 && \
	$(STAGE) $(TRT_PY) -m hmr_trt.runtime --video $(SAMPLE) --export $(GPU_OUT)/engines-fp16 --backend tensorrt \
	  --precision fp16 --emit center --out $(GPU_OUT)/run --render $(GPU_OUT)/run.mp4 --quiet && exit $$status

# --- benchmarks ---------------------------------------------------------------------------------
BENCH_ARGS ?=
bench: $(STAMP) $(SAMPLE)
	$(BIN)/trt-bench --out out/bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(VENV39) $(VENVT) out .pytest_cache .ruff_cache
