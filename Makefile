# Everything installs into a project virtualenv, from nothing: `make test`, `make demo`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, on its own: the one big download. Override for a specific build, e.g.
#   make test TORCH="torch torchvision --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch torchvision
DEMO_OUT ?= demo_output

.PHONY: help test test-shuffled lint docs demo bench clean

help:
	@echo "make demo  - create $(VENV), install, run the shortcut-learning example (CPU, ~1 min)"
	@echo "make test  - create $(VENV), install with dev extras, run lint, mypy, the strict docs build and the suite"
	@echo "make docs  - build the documentation site into site/ (MkDocs, strict: any warning fails)"
	@echo "make test-shuffled - the same suite in a random order (SEED=<n> to repeat one)"
	@echo "make bench - run the benchmarks in benchmarks/ (a few minutes, CPU)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.torch-installed: | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch-installed
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/mypy

# Two workers on two cores: the suite is full of subprocess starts and small models. The
# tests run in file order; `make test-shuffled` runs them in a random order (pytest-randomly)
# to show that no test depends on another (every test starts from the same random state).
PYTEST_ARGS ?= -n 2 --dist loadgroup
SEED ?= $(shell date +%s)

# The site, strict: a broken link, a page missing from the nav or an unresolved API
# reference fails the build (and so `make test`).
docs: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test: lint docs
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-shuffled: lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup -p randomly --randomly-seed=$(SEED)

demo: $(VENV)/.installed
	$(BIN)/python examples/shortcut_learning.py --out $(DEMO_OUT)

clean:
	rm -rf $(VENV) $(DEMO_OUT) site .pytest_cache .ruff_cache .hypothesis

bench: $(VENV)/.installed-dev
	cd benchmarks && for b in cam_speed render_cost callback_overhead memory scaling statistics_cost faithfulness_cost; do \
		echo "== $$b"; ../$(BIN)/python $$b.py || exit 1; echo; done
