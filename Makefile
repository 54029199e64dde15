# Two commands on a fresh machine (see README):  make demo   |   make test
# Both create the virtual environment when missing and install the project (one pip command).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

# Project-local state: Prefect's home/DB, compiled-op caches (DeepSpeed, ial.native), no analytics.
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export DS_ACCELERATOR ?= cpu
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.torch_extensions
export IAL_NATIVE_DIR ?= $(CURDIR)/.ial_native
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/ial demo

test: setup
	$(PY) -m pytest tests

clean:
	rm -rf data reports .prefect .pytest_cache
