# The two commands of the README: `make demo` (the main job) and `make test` (the whole suite).
# Both create the virtual environment at .venv and install t2v_nb into it first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is not a pinned dependency of the package. Here we take the CPU build that lies on this
# machine's disk when it is there (Python 3.11), else whatever pip resolves.
TORCH ?= torch==2.13.0

.PHONY: demo test bench venv clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q "$(TORCH)" || $(BIN)/pip install -q torch
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m t2v_nb.demo --out outputs

test: venv
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

bench: venv
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
