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
PORT ?= 8080
UI_PORT ?= 8501
# The tests run on pytest-xdist workers, each test module on one worker (tests/conftest.py).
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup
# The quick tier for the edit loop: no browser, no `up`, no load or fault runs, no benchmarks.
QUICK := not browser and not slow and not reliability
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
	$(PY) -m pip install -q -e '.[dev,ui,bench]'
	# The text-generation client pins huggingface-hub<1.0; install it without its
	# dependencies so that pin does not bend ours (it works with the current hub).
	$(PY) -m pip install -q --no-deps text-generation
	touch $@

run: $(RUN_STAMP)
	@$(BYTECODE)
	$(VENV)/bin/streamhost up --port $(PORT) --ui-port $(UI_PORT)

# Browser tests drive Debian's Chromium; install it when missing (as root, as CI runs).
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium not installed: browser tests will be skipped"; }

test: $(TEST_STAMP) chromium
	@$(BYTECODE)
	$(PYTEST)

check: $(TEST_STAMP)
	@$(BYTECODE)
	$(PYTEST) -m "$(QUICK)"

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(TEST_STAMP)
	$(VENV)/bin/ruff format src tests benchmarks

bench: $(TEST_STAMP)
	$(VENV)/bin/streamhost bench

clean:
	rm -rf $(VENV) build *.egg-info
