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

.PHONY: install demo test lint pytest test-slow test-gpu bench-gpu bench bench-zoo clean

install: $(STAMP)

# torch first, alone: pip takes the local CPU build of 2.13.0 instead of resolving a CUDA build.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e ".[export,ort,video,dev,triton,ray]"
	touch $@

# Python 3.9 with numpy and OpenCV alone: the runtime's promise for bare GPU images (see tests/runtime/test_py39.py).
$(VENV39)/.installed: constraints-gpu.txt
	@if [ -n "$(PY39)" ]; then \
	  $(PY39) -m venv $(VENV39) && \
	  $(VENV39)/bin/pip install -q --disable-pip-version-check -c constraints-gpu.txt numpy opencv-python-headless packaging && \
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
# torch reference in mm under the Python that has TensorRT (TRT_PY: a venv, a TensorRT container's
# python3, or `py39` from the offline TensorRT 8.6 bundle in ../shared/gpu). The package is
# staged under build/stage (no pip needed for hmr-trt itself on either side).
#
# First, tools/gpu_env.py sets TRT_PY up and stops in one line (exit 1, no traceback) when this box
# cannot run the GPU tests: it installs what is missing with TRT_PY's pip, pinned by
# constraints-gpu.txt (the gpu-test extra: pytest, packaging, typer, rich, OpenCV < 5,
# edgefirst-tracker; then TensorRT + cuda-python, the trt-cu12 or trt-cu13 extra picked from the
# driver's CUDA major, or TRT_EXTRA), then checks the driver, the GPU, TensorRT and that EXPORT_PY
# has torch. A box that already has everything (the offline bundle) installs nothing.
TRT_PY ?= $(shell command -v py39 2>/dev/null || echo python3)
EXPORT_PY ?= $(shell [ -x $(BIN)/python ] && echo $(BIN)/python || echo python3)
TRT_EXTRA ?= auto
GPU_OUT ?= out/gpu

STAGE := PYTHONPATH=$(abspath build/stage)

# The streaming runtime then runs on the sample video with the FP16 engines, even when parity
# failed (the recipe keeps pytest's exit status).
# One export per precision (trt-export writes one reduced precision per run). FP32 and INT8 use
# --strict (a miss of the contract's goal on the CPU stops here, nothing written). FP16 does not:
# its CPU stand-in misses the goal on the seeded weights (trt-export writes it, warns and records
# the MISS), and the GPU tests judge what TensorRT really does against the same goal, strictly.
test-gpu:
	@python3 tools/stage_package.py build/stage >/dev/null
	@$(STAGE) $(TRT_PY) tools/gpu_env.py --export-py "$(EXPORT_PY)" --extra $(TRT_EXTRA)
	@test -f $(SAMPLE) || tools/fetch_sample_video.sh $(SAMPLE) $(TRT_PY)
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

# --- GPU benchmark ----------------------------------------------------------------------------
# The engines built from test-gpu's exports (TensorRT FP32, FP16, INT8: one trt-build folder each,
# listed under one manifest by tools/engine_sets.py) against torch eager and torch.compile on the
# same GPU, in one round robin per batch (trt-bench --gpu). The bench runs in TRT_PY, which then
# also gets CUDA torch and the export/ort/video/dev extras (Python 3.11+; pinned by both
# constraints files). Run after test-gpu (it needs $(GPU_OUT)/export/{fp32,fp16,int8}).
BENCH_GPU_OUT ?= out/bench-gpu
BENCH_GPU_MODEL ?= coseg
bench-gpu:
	@python3 tools/stage_package.py build/stage >/dev/null
	@$(STAGE) $(TRT_PY) tools/gpu_env.py --extra $(TRT_EXTRA)
	$(TRT_PY) -m pip install -q --disable-pip-version-check -c constraints.txt -c constraints-gpu.txt torch==2.13.0
	$(TRT_PY) -m pip install -q --disable-pip-version-check -c constraints.txt -c constraints-gpu.txt ".[export,ort,video,dev]"
	for p in fp32 fp16 int8; do \
	  $(STAGE) $(TRT_PY) -m hmr_trt.engines $(GPU_OUT)/export/$$p --precision $$p --out $(GPU_OUT)/engines-$$p || exit 1; \
	done
	$(STAGE) $(TRT_PY) tools/engine_sets.py $(GPU_OUT)/bench-export $(GPU_OUT)/engines-fp32 $(GPU_OUT)/engines-fp16 \
	  $(GPU_OUT)/engines-int8
	$(STAGE) $(TRT_PY) -c "from hmr_trt.export.bench import main; main()" --gpu --models $(BENCH_GPU_MODEL) \
	  --export $(GPU_OUT)/bench-export --video $(SAMPLE) --out $(BENCH_GPU_OUT)

# --- benchmarks ---------------------------------------------------------------------------------
# bench: the default model end to end in minutes (its export reused when its files check out, else made
# into out/bench/export/coseg), measured afresh each time, a progress line per measurement.
# bench-zoo: every registered model with the full plan; models already measured in out/bench are kept
# (interrupt and run again to resume; BENCH_ARGS=--force measures all again), then README's zoo table
# is rewritten from the records. BENCH_ARGS goes to both (e.g. --gpu, --export DIR, --budget-s 1).
BENCH_ARGS ?=
bench: $(STAMP) $(SAMPLE)
	$(BIN)/trt-bench --out out/bench --force $(BENCH_ARGS)

bench-zoo: $(STAMP) $(SAMPLE)
	$(BIN)/trt-bench --models all --plan full --out out/bench --readme README.md $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(VENV39) $(VENVT) out .pytest_cache .ruff_cache
