# Heimdex — the front door.
#
#   make install   sync the locked environment (.venv) with uv, development tools included
#   make run       serve the API on the embedded default (SQLite, local storage, in-process jobs);
#                  installs only what the service runs (no test or lint tools)
#   make test      run the test suite (installs the development group first)
#   make help      list every target
#
# Only Python 3.11+ and make are needed: when uv is missing, the `uv` target installs it from PyPI
# with `python3 -m pip install --user uv` (never an installer script). Every target that uses uv
# depends on that bootstrap.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
HOST ?=
PORT ?=
PYTEST_ARGS ?=
IMAGE ?= heimdex:latest

# ---------------------------------------------------------------------------------------------
# uv: found on PATH, in ~/.local/bin or ~/.cargo/bin, or where `pip install --user uv` put it.
# A candidate counts only when `uv --version` runs (a pyenv shim without uv behind it does not).
# ---------------------------------------------------------------------------------------------
FIND_UV := for c in "$$(command -v uv 2>/dev/null)" "$(HOME)/.local/bin/uv" "$(HOME)/.cargo/bin/uv" "$$($(PYTHON) -c 'import uv; print(uv.find_uv_bin())' 2>/dev/null)"; do if [ -n "$$c" ] && "$$c" --version >/dev/null 2>&1; then echo "$$c"; break; fi; done

UV_GIVEN := $(if $(filter undefined,$(origin UV)),,yes)
ifeq ($(UV_GIVEN),)
# Resolved lazily, once, at first use: after the `uv` target has run, never at parse time.
UV = $(eval UV := $(or $(shell $(FIND_UV)),uv))$(UV)
endif

UV_RUN = $(UV) run --locked
# The service alone: `uv run` would otherwise add the development group it syncs by default.
UV_RUN_SERVICE = $(UV) run --locked --no-dev

.PHONY: help uv install install-runtime run test lint format typecheck migrate bench image clean

help: ## list the targets
	@echo "Heimdex — make targets:"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "} {printf "  %-10s %s\n", $$1, $$2}'
	@echo
	@echo "Variables: HOST=… PORT=… (make run), PYTEST_ARGS=… (make test), PYTHON=… (bootstrap),"
	@echo "           UV=/path/to/uv (skip the lookup), IMAGE=… (make image)"

uv: ## make sure uv is available (pip install --user uv from PyPI when it is not)
ifeq ($(UV_GIVEN),yes)
	@"$(UV)" --version >/dev/null 2>&1 || { echo "error: UV=$(UV) does not run" >&2; exit 1; }
	@echo "uv: $(UV) ($$("$(UV)" --version))"
else
	@found="$$($(FIND_UV))"; \
	if [ -z "$$found" ]; then \
		echo "uv not found: installing it from PyPI with '$(PYTHON) -m pip install --user uv'"; \
		command -v $(PYTHON) >/dev/null 2>&1 \
			|| { echo "error: $(PYTHON) is not on PATH; install Python 3.11+ first" >&2; exit 1; }; \
		$(PYTHON) -m pip install --user --quiet --disable-pip-version-check uv \
		|| { echo "pip refused a --user install (PEP 668?): retrying with --break-system-packages"; \
		     $(PYTHON) -m pip install --user --quiet --disable-pip-version-check \
		       --break-system-packages uv; } \
		|| { echo "still refused (a virtualenv has no user site): installing uv into it"; \
		     $(PYTHON) -m pip install --quiet --disable-pip-version-check uv; } \
		|| { echo "error: could not install uv with pip; install it and re-run make" >&2; exit 1; }; \
		found="$$($(FIND_UV))"; \
		if [ -z "$$found" ]; then echo "error: uv was installed but cannot be found" >&2; exit 1; fi; \
	fi; \
	echo "uv: $$found ($$("$$found" --version))"
endif

install: uv ## sync the locked environment with the development tools: uv sync --locked
	$(UV) sync --locked

install-runtime: uv ## install only what the service runs: uv sync --locked --no-dev --inexact
	$(UV) sync --locked --no-dev --inexact

run: install-runtime ## serve the API on the embedded default (HOST=… PORT=… to override)
	$(UV_RUN_SERVICE) heimdex serve $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

test: install ## run the test suite (PYTEST_ARGS=… to pass options)
	$(UV_RUN) pytest $(PYTEST_ARGS)

lint: install ## ruff lint + format check, mypy (src, tests, benchmarks), import contracts
	$(UV_RUN) ruff check .
	$(UV_RUN) ruff format --check .
	$(UV_RUN) mypy
	$(UV_RUN) lint-imports

format: install ## format the code and apply safe lint fixes
	$(UV_RUN) ruff format .
	$(UV_RUN) ruff check --fix .

typecheck: install ## mypy --strict over src, tests and benchmarks
	$(UV_RUN) mypy

migrate: install-runtime ## apply the database migrations: heimdex db upgrade
	$(UV_RUN_SERVICE) heimdex db upgrade

bench: install ## run every benchmarks/*.py (files starting with _ are helpers)
	@shopt -s nullglob; ran=0; \
	for f in benchmarks/*.py; do \
		case "$$(basename "$$f")" in _*) continue ;; esac; \
		echo "==> $$f"; \
		$(UV_RUN) python "$$f"; \
		ran=$$((ran + 1)); \
	done; \
	if [ "$$ran" -eq 0 ]; then echo "no benchmarks in benchmarks/"; fi

image: ## build the container image (docker or podman) from the Containerfile
	@engine="$$(command -v docker || command -v podman || true)"; \
	if [ -z "$$engine" ]; then echo "error: neither docker nor podman is on PATH" >&2; exit 1; fi; \
	echo "$$engine build -f Containerfile -t $(IMAGE) ."; \
	"$$engine" build -f Containerfile -t $(IMAGE) .

clean: ## remove caches and build output (keeps .venv and data/)
	rm -rf .mypy_cache .ruff_cache .pytest_cache .cache build dist
	find . -path ./.venv -prune -o -type d \( -name __pycache__ -o -name '*.egg-info' \) \
		-prune -exec rm -rf {} +
