# The two set-up commands of README.md. Each creates .venv if missing and installs the project.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.modan-pacs-installed
PYTEST_ARGS ?=

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

## make demo: index -> cache -> pretrain -> benchmark -> report on the embedded default (CPU, minutes)
demo: $(STAMP)
	$(VENV)/bin/modan-pacs demo --out demo_out

## make test: ruff (pyflakes, import order, complexity <= 15, lines <= 120, ruff format), then the whole test suite (every tier that can run on this machine)
test: $(STAMP)
	$(VENV)/bin/ruff check modan_pacs cli benchmarks scripts tests
	$(VENV)/bin/ruff format --check modan_pacs cli benchmarks scripts tests
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadgroup --timeout 900 $(PYTEST_ARGS)

clean:
	rm -rf demo_out .pytest_cache
