# streamhost: `make run` runs the main job, `make test` runs the tests. Each sets itself up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
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

.PHONY: run test check lint format bench clean chromium

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
	$(VENV)/bin/streamhost up --port $(PORT) --ui-port $(UI_PORT)

# Browser tests drive Debian's Chromium; install it when missing (as root, as CI runs).
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium not installed: browser tests will be skipped"; }

test: $(STAMP) chromium
	$(PYTEST)

check: $(STAMP)
	$(PYTEST) -m "$(QUICK)"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks

bench: $(STAMP)
	$(VENV)/bin/streamhost bench

clean:
	rm -rf $(VENV) build *.egg-info
