# hmr-trt: `make demo` and `make test` each create .venv with pinned dependencies, then run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PY39 ?= $(shell command -v python3.9 2>/dev/null || ls /root/.pyenv/versions/3.9*/bin/python3.9 2>/dev/null | head -1)
VENV39 ?= .venv39
SAMPLE := data/vtest.avi
DEMO_OUT ?= out/demo

.PHONY: install demo test lint pytest test-gpu bench clean

install: $(STAMP)

# torch first, alone: pip takes the local CPU build of 2.13.0 instead of resolving a CUDA build.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e ".[export,ort,video,dev]"
	touch $@

# Python 3.9 with numpy and OpenCV alone: the runtime's promise for bare GPU images (see tests/runtime/test_py39.py).
$(VENV39)/.installed: constraints.txt
	@if [ -n "$(PY39)" ]; then \
	  $(PY39) -m venv $(VENV39) && \
	  $(VENV39)/bin/pip install -q --disable-pip-version-check "numpy<2.1" "opencv-python-headless==4.14.0.94" "packaging" && \
	  touch $@; \
	else echo "no python3.9 on this machine: the Python 3.9 runtime test will skip"; fi

$(SAMPLE):
	tools/fetch_sample_video.sh $@ $(BIN)/python

demo: $(STAMP) $(SAMPLE)
	$(BIN)/trt-export --model coseg --precision fp32 --window 16 --batch 1:8:64 --video $(SAMPLE) --out $(DEMO_OUT)

lint: $(STAMP)
	$(BIN)/ruff check .

pytest: $(STAMP) $(SAMPLE) $(VENV39)/.installed
	HMR_TRT_PY39=$(abspath $(VENV39))/bin/python $(BIN)/python -m pytest

test: lint pytest

clean:
	rm -rf $(VENV) $(VENV39) out .pytest_cache .ruff_cache
