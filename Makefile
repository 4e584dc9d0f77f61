# The two set-up commands of the README: `make demo` (main job) and `make test`.
# Each creates .venv and installs what it needs on a fresh machine.
# `make docs` builds the documentation site into docs/_build/html (warnings are errors).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of this torch version is available on our build machines; on a machine
# with a GPU, set TORCH_SPEC="torch>=2.4" (or install torch first) to keep its CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test test-slow lint format docs clean

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

clean:
	rm -rf $(VENV) scld_demo_output .pytest_cache .ruff_cache docs/_build
