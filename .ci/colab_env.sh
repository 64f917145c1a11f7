#!/usr/bin/env bash
# Colab's runtime as a venv, and t2v_nb installed over it the way the notebooks' first cell does it.
#
#   bash .ci/colab_env.sh            (what `make test-colab` runs before its tests)
#
# 1. .venv-colab gets Colab's pip, then the packages of .ci/colab/runtime-packages.txt at Colab's versions
#    ($COLAB_CONSTRAINTS, a pip freeze of Colab's GPU runtime), torch excepted ($TORCH: the CPU build), and a
#    stand-in for Colab's google-colab package, which pins Colab's kernel (ipython, ipykernel, notebook, tornado,
#    ...) as the real one does: with it, pip's resolver complains here when an install moves them, as on Colab.
# 2. `pip install -q "git+<repository>"`, as the set-up cell's `%pip install -q "git+{REPO}"` (this clone's
#    committed HEAD; the working tree itself when pyproject.toml has uncommitted changes).
# 3. .ci/colab/check_install.py: fails unless pip changed only the allowed packages and printed no ERROR.
# The tests then run in it from this checkout (`python -m pytest` imports the checkout's t2v_nb); Colab has
# everything they need (pytest, nbclient, nbformat, ipykernel, PyYAML).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${COLAB_VENV:-.venv-colab}
CONSTRAINTS=${COLAB_CONSTRAINTS:-.ci/colab/constraints-2026-06.txt}
TORCH=${TORCH:-torch==2.13.0}
LOG=$VENV/colab-install
PIP=("$VENV/bin/python" -m pip)

rm -rf "$VENV"
$PYTHON -m venv "$VENV"
mkdir -p "$LOG"
echo "== $VENV: Colab's packages from $CONSTRAINTS ($($VENV/bin/python --version))"
"${PIP[@]}" install -q -c "$CONSTRAINTS" pip setuptools wheel
"${PIP[@]}" install -q -c "$CONSTRAINTS" "$TORCH" || "${PIP[@]}" install -q torch
mapfile -t PACKAGES < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' .ci/colab/runtime-packages.txt)
"${PIP[@]}" install -q -c "$CONSTRAINTS" "${PACKAGES[@]}"

# google-colab is not on PyPI: a stand-in with its requirements (the names of colabtools' setup.py, each at the
# version the constraints give), so that pip knows what Colab's kernel pins.
STANDIN=$VENV/google-colab-standin
mkdir -p "$STANDIN"
PINS=$(for name in google-auth ipykernel ipyparallel ipython notebook pandas portpicker requests tornado; do
    printf '"%s", ' "$(grep -i -m1 "^$name==" "$CONSTRAINTS" | cut -d' ' -f1)"; done)
cat > "$STANDIN/pyproject.toml" <<EOF
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"
[project]
name = "google-colab"
version = "1.0.0"
description = "Stand-in for Colab's google-colab: its pins only"
dependencies = [${PINS%, }]
[tool.setuptools]
py-modules = []
EOF
"${PIP[@]}" install -q --no-build-isolation "$STANDIN"
"${PIP[@]}" check > "$LOG/pip-check-before.txt" 2>&1 || {
    echo "note: pip check finds conflicts among Colab's own versions (not caused by t2v_nb):"; cat "$LOG/pip-check-before.txt"; }

echo "== t2v_nb installed as the notebooks' first cell does it"
if [ -z "$(git status --porcelain -- pyproject.toml 2>/dev/null)" ] && git rev-parse --git-dir > /dev/null 2>&1; then
    SOURCE="git+file://$PWD"
else
    SOURCE="$PWD"
fi
"${PIP[@]}" freeze > "$LOG/before.txt"
echo "pip install -q \"$SOURCE\""
set +e
"${PIP[@]}" install -q "$SOURCE" > "$LOG/install.txt" 2>&1
status=$?
set -e
cat "$LOG/install.txt"
"${PIP[@]}" freeze > "$LOG/after.txt"
[ $status -eq 0 ] || { echo "FAIL: pip install exited with $status"; exit 1; }
"$VENV/bin/python" .ci/colab/check_install.py "$LOG/before.txt" "$LOG/after.txt" "$LOG/install.txt"
"${PIP[@]}" check > "$LOG/pip-check-after.txt" 2>&1 || true
if grep -v -x -F -f "$LOG/pip-check-before.txt" "$LOG/pip-check-after.txt" | grep -v "^No broken requirements found"; then
    echo "FAIL: after the install, pip check finds the broken requirements above (not there before)"; exit 1
fi
"$VENV/bin/python" -c "import IPython, traitlets, ipykernel, ipywidgets, t2v_nb; \
print('kernel after the install: IPython', IPython.__version__, '| traitlets', traitlets.__version__, \
'| ipykernel', ipykernel.__version__, '| ipywidgets', ipywidgets.__version__, '| t2v_nb', t2v_nb.__version__)"

touch "$VENV/.installed"
