# The two commands of the README: `make demo` (the main job) and `make test` (the whole suite).
# Both create the virtual environment at .venv and install t2v_nb into it first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is not a pinned dependency of the package. Here we take the CPU build that lies on this
# machine's disk when it is there (Python 3.11), else whatever pip resolves.
TORCH ?= torch==2.13.0

.PHONY: demo test test-ipywidgets7 bench venv clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q "$(TORCH)" || $(BIN)/pip install -q torch
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m t2v_nb.demo --out outputs --overwrite

test: venv
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

# Colab ships ipywidgets 7.x: the widget and notebook tests again in a second environment with 7.7.
VENV7 := .venv-ipywidgets7
$(VENV7)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV7)
	$(VENV7)/bin/python -m pip install -q --upgrade pip
	$(VENV7)/bin/pip install -q "$(TORCH)" || $(VENV7)/bin/pip install -q torch
	$(VENV7)/bin/pip install -q -e ".[dev]" "ipywidgets==7.7.*"
	touch $@

test-ipywidgets7: $(VENV7)/.installed
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(VENV7)/bin/python -m pytest -q tests/test_widgets.py tests/test_notebooks.py

bench: venv
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench.py

clean:
	rm -rf $(VENV) $(VENV7) outputs .pytest_cache
