# Two commands on a fresh machine (Python 3.11, Java 17, make): `make demo` and `make test`.
# Both create or reuse .venv and install exactly what requirements.lock pins.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# PyTorch: the CPU wheel sits in pip's configured find-links on these machines; a GPU node
# installs the regular (CUDA) wheel of the same version after the sync.
FIND_LINKS ?= $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null || echo /opt/wheels)
UV_FIND_LINKS := $(foreach d,$(FIND_LINKS),$(if $(wildcard $(d)),--find-links $(d)))
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)

.PHONY: demo test lint lock clean-state install production-check

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install -q --disable-pip-version-check uv==0.13.8
	$(BIN)/uv pip sync -q --python $(BIN)/python $(UV_FIND_LINKS) requirements.lock
	$(if $(HAS_GPU),$(BIN)/uv pip install -q --python $(BIN)/python --reinstall-package torch torch==2.13.0)
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tidemark demo

test: $(STAMP)
	@# the UI tests' headless browser: installed when missing and apt-get runs as root, else they skip
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get install -y -q chromium >/dev/null; } || true
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check tidemark features pipelines monitoring serving tests benchmarks examples deploy
	$(BIN)/mypy

# Re-resolve the pins after changing pyproject.toml.
lock:
	test -x $(BIN)/uv || { $(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install -q uv==0.13.8; }
	$(BIN)/uv pip compile pyproject.toml --extra all --extra dev --python-version 3.11 $(UV_FIND_LINKS) \
		--generate-hashes --no-header -q -o requirements.lock

# The README's production set-up on this machine (Spark standalone, Redis, MLflow server and
# Airflow on PostgreSQL) and the driver example's loop through it; minutes, not part of `test`.
# docs/production.md says what it proves. POSTGRES=postgresql://user@host:5432 to pick the server.
production-check: $(STAMP)
	$(BIN)/python deploy/production_check.py $(if $(POSTGRES),--postgres $(POSTGRES))

clean-state:
	rm -rf .tidemark
