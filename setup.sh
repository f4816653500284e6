#!/usr/bin/env bash
# Create .venv/ at the repo root with kexa (editable) and its test dependencies.
# torch==2.13.0 is installed explicitly first: it is the CPU wheel on this machine's disk,
# whereas an unpinned torch with nothing installed would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
echo "kexa is installed in .venv/ (CLI: .venv/bin/kexa)"
