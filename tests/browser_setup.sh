#!/usr/bin/env bash
# Installs what tests/test_browser.py needs, so that it runs instead of being skipped:
#   - Debian's Chromium (apt, ~480 MB), used through executable_path=/usr/bin/chromium;
#   - the Python packages playwright and jupyterlab, into the project's virtual environment.
# It never runs `playwright install` (that downloads browser builds, which this project does not use).
# Usage: bash tests/browser_setup.sh   (PYTHON=/path/to/python to install into another environment)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
fi
"${PYTHON:-.venv/bin/python}" -m pip install -q "playwright>=1.40" "jupyterlab>=4,<5"
