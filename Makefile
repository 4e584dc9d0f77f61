# The two set-up commands of the README: `make demo` (main job) and `make test`.
# Each creates .venv and installs what it needs on a fresh machine.
# `make docs` builds the documentation site into docs/_build/html (warnings are errors).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Which torch to install when .venv has none: where an NVIDIA driver answers, the default
# build of torch>=2.4 (CUDA); elsewhere the pinned torch==2.13.0 (a CPU wheel where the
# package index offers one, as on our build machines; plain PyPI's build runs on CPUs too). Override with TORCH_SPEC=... (e.g. a CUDA version
# of your choice), or install torch into .venv first: an existing torch is left alone.
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH_SPEC ?= $(if $(HAS_GPU),torch>=2.4,torch==2.13.0)

.PHONY: demo test test-slow lint format docs wheel-check clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

$(VENV)/.docs-installed: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/scld-aug demo --overwrite

test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

test-slow: $(VENV)/.installed
	$(BIN)/python -m pytest -m slow

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Sphinx + MyST + numpydoc: every page re-read (-E), nitpicky (-n), warnings are errors
# (-W). It imports scld_aug but trains nothing.
docs: $(VENV)/.docs-installed
	$(BIN)/python -m sphinx -E -W --keep-going -n -b html docs docs/_build/html

# The package as users install it: build the wheel and sdist, check them with twine, install
# the wheel (with its extras) into a fresh virtual environment outside the checkout, import
# every module from it and run the quick demo there.
WHEEL_DIR := build/wheel-check
wheel-check: $(VENV)/.installed
	rm -rf $(WHEEL_DIR)
	$(BIN)/python -m pip install --quiet build twine
	$(BIN)/python -m build --outdir $(WHEEL_DIR)/dist .
	$(BIN)/python -m twine check --strict $(WHEEL_DIR)/dist/*
	$(PYTHON) -m venv $(WHEEL_DIR)/venv
	$(WHEEL_DIR)/venv/bin/python -m pip install --quiet "$(TORCH_SPEC)"
	$(WHEEL_DIR)/venv/bin/python -m pip install --quiet "$$(ls $(WHEEL_DIR)/dist/*.whl)[all]"
	cd $(WHEEL_DIR) && venv/bin/python $(CURDIR)/.ci/import_all.py
	cd $(WHEEL_DIR) && venv/bin/scld-aug demo --quick --output-dir demo

clean:
	rm -rf $(VENV) scld_demo_output .pytest_cache .ruff_cache docs/_build build
