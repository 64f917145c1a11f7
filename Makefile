# The two commands of the README: `make demo` (the main job) and `make test` (the whole suite).
# Both create the virtual environment at .venv and install t2v_nb into it first. `make lab` opens the
# tutorials in JupyterLab (installing the `lab` extra into .venv first).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is not a pinned dependency of the package. Here we take the CPU build that lies on this
# machine's disk when it is there (Python 3.11), else whatever pip resolves.
TORCH ?= torch==2.13.0

.PHONY: demo test test-slow lab test-colab test-lowest bench venv clean

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

# The suite on two workers (pytest-xdist; the modules whose tests share a costly fixture run whole on one worker:
# tests/conftest.py, ONE_WORKER), one thread each. `make test`: everything but the tests marked `slow`; `make test-slow`: those (the lessons'
# claims on the toys, the real browser, the toy's accuracy, the training recipe end to end). CI runs both;
# tests/README.md says what each takes. PYTEST_ARGS adds options (e.g. PYTEST_ARGS="--durations=40").
PYTEST = HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 $(PYTEST_ARGS)

test: venv
	$(PYTEST) -m "not slow"

test-slow: venv
	$(PYTEST) -m slow

# Colab's runtime (.ci/colab/README.md): .venv-colab gets Colab's package versions (COLAB_CONSTRAINTS, from Colab's
# published pip freeze; torch excepted: $(TORCH)), then t2v_nb installed over them as the notebooks' first cell does;
# .ci/colab_env.sh fails if pip changed anything outside an allowed list (Colab's kernel pins IPython 7.34,
# traitlets, ipykernel, ...) or printed an ERROR. Then the widget and notebook tests run there (ipywidgets 7.7.1).
VENVCOLAB := .venv-colab
COLAB_CONSTRAINTS := .ci/colab/constraints-2026-06.txt
$(VENVCOLAB)/.installed: pyproject.toml .ci/colab_env.sh .ci/colab/check_install.py .ci/colab/runtime-packages.txt \
		$(COLAB_CONSTRAINTS)
	PYTHON=$(PYTHON) TORCH="$(TORCH)" COLAB_VENV=$(VENVCOLAB) COLAB_CONSTRAINTS=$(COLAB_CONSTRAINTS) bash .ci/colab_env.sh

test-colab: $(VENVCOLAB)/.installed
	# The lessons' claims on the toys are checked once, by `make test-slow`; here the notebooks run on the tiny model.
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(VENVCOLAB)/bin/python -m pytest -q tests/test_widgets.py tests/test_notebooks.py \
		-k "not claims_hold and not flow_toy and not two_toys"

# JupyterLab on notebooks/, from this folder's .venv (its kernel sees t2v_nb). Stop it with Ctrl-C.
lab: venv
	$(BIN)/python -c "import jupyterlab" 2>/dev/null || $(BIN)/pip install -q -e ".[dev,lab]"
	HF_HUB_OFFLINE=1 $(BIN)/jupyter lab --notebook-dir=notebooks $(LAB_ARGS)

# The lowest versions the package allows: every dependency of pyproject.toml pinned to its floor (.ci/floors.py;
# torch excepted: it is not pinned, the job takes $(TORCH)), then the tests that load the toy model, run the
# pipeline and compare it with diffusers' own pipelines, and the video and figure tests. The toy's accuracy test and
# the guidance-interval comparison on the same sample are left out (they took ~290 s of the ~400 s here; the toy
# loading and matching diffusers' pipeline stay in).
VENVLOW := .venv-lowest
LOWEST_TESTS ?= tests/test_models.py tests/test_toy_model.py tests/test_pipeline.py tests/test_reference.py \
	tests/test_inputs.py tests/test_video.py tests/test_viz.py tests/test_families.py tests/test_toy_flow_model.py \
	--deselect tests/test_toy_model.py::test_meets_the_accuracy_targets_on_a_fixed_sample \
	--deselect tests/test_toy_model.py::test_guiding_every_step_names_more_shapes_than_only_the_early_steps
$(VENVLOW)/.installed: pyproject.toml .ci/floors.py
	$(PYTHON) -m venv $(VENVLOW)
	$(VENVLOW)/bin/python -m pip install -q --upgrade pip
	$(VENVLOW)/bin/pip install -q "$(TORCH)" || $(VENVLOW)/bin/pip install -q torch
	$(PYTHON) .ci/floors.py pyproject.toml > $(VENVLOW)/floors.txt
	$(VENVLOW)/bin/pip install -q -c $(VENVLOW)/floors.txt -e ".[dev]"
	touch $@

test-lowest: $(VENVLOW)/.installed
	$(VENVLOW)/bin/pip list 2>/dev/null | grep -i -E "^(torch|diffusers|transformers|accelerate|huggingface.hub|numpy|tokenizers) "
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(VENVLOW)/bin/python -m pytest -q -n 2 $(LOWEST_TESTS)

bench: venv
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench.py

clean:
	rm -rf $(VENV) $(VENVCOLAB) $(VENVLOW) outputs .pytest_cache
