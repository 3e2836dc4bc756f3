# Two commands set everything up on a fresh machine: `make run` and `make test`.
# Every install takes its versions from constraints.txt (the lock); `make upgrade` refreshes it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config.yaml
LOCK   := constraints.txt
# pip's config files are skipped so that no machine's extra indexes, find-links or constraint
# files change what gets installed: every machine resolves from the same index (PyPI, or the
# PIP_INDEX_URL a developer sets for a mirror) with the lock as the only constraint.
PIP    := PIP_CONFIG_FILE=/dev/null $(BIN)/python -m pip

.PHONY: run test bench lint typecheck upgrade clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# A changed lock (or pyproject) makes these stale, so the venv is brought to the new pins.
$(VENV)/.installed: pyproject.toml $(LOCK) | $(BIN)/python
	$(PIP) install --quiet --upgrade -c $(LOCK) pip
	$(PIP) install --quiet -c $(LOCK) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(LOCK) | $(BIN)/python
	$(PIP) install --quiet --upgrade -c $(LOCK) pip
	$(PIP) install --quiet -c $(LOCK) -e '.[dev]'
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/connector run -c $(CONFIG)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check connector sources sinks policies tests bench
	$(BIN)/mypy

# `make bench` runs them all; `make bench webhook` (or csv, send, memory, latency, sheets, instances, policies, reload, page) just those.
BENCHES := csv send memory latency sheets webhook instances policies reload page
BENCH_GOALS := $(filter $(BENCHES),$(MAKECMDGOALS))

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench $(BENCH_GOALS)

ifneq ($(filter bench,$(MAKECMDGOALS)),)
.PHONY: $(BENCHES)
$(BENCHES):
	@:
endif

# The newest versions pyproject allows, resolved without the lock in a throw-away venv, written to
# the lock, then the whole suite against exactly that venv: a broken upgrade fails here, and
# `git diff constraints.txt` shows what moved (`git checkout constraints.txt` takes it back).
upgrade:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	pip="env PIP_CONFIG_FILE=/dev/null $$tmp/venv/bin/python -m pip"; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	$$pip install --quiet --upgrade pip; \
	$$pip install --quiet -e '.[dev]'; \
	{ echo "# The lock: every package at the version the test suite last passed with."; \
	  echo "# Used as \`pip install -c $(LOCK)\` by make and the Dockerfile. Written by \`make upgrade\`;"; \
	  echo "# do not edit by hand. Resolved on $$($$tmp/venv/bin/python -V)."; \
	  $$pip freeze --all --exclude-editable | grep '^pip=='; \
	  $$pip freeze --exclude-editable; } > "$$tmp/$(LOCK)"; \
	mv "$$tmp/$(LOCK)" $(LOCK); \
	echo "wrote $(LOCK); running the suite against it"; \
	"$$tmp/venv/bin/python" -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
