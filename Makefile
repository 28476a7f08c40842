# streamhost: `make run` runs the main job, `make test` runs the tests. Each sets itself up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Where this kind of machine keeps a CPU build of torch (pip's find-links); using it avoids
# a multi-GB CUDA download. Elsewhere a normal `pip install` picks the right torch.
LOCAL_TORCH := $(firstword $(wildcard /opt/wheels/torch-*+cpu-*.whl))
PORT ?= 8080

.PHONY: run test lint format bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
ifneq ($(LOCAL_TORCH),)
	$(PY) -m pip install -q "$(LOCAL_TORCH)"
endif
	$(PY) -m pip install -q -e '.[dev,ui,bench]'
	# The text-generation client pins huggingface-hub<1.0; install it without its
	# dependencies so that pin does not bend ours (it works with the current hub).
	$(PY) -m pip install -q --no-deps text-generation
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/streamhost serve-model --model tiny --port $(PORT)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/engine.py

clean:
	rm -rf $(VENV) build *.egg-info
