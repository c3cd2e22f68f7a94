#!/usr/bin/env bash
# One prepared GPU check, run from the repository root on a single-GPU machine whose Python
# has torch but no network:
#
#   bash benchmarks/gpu_check.sh            # about 9 minutes on one GPU (the benchmark is cut at 8)
#   GPU_CHECK_SMOKE=1 bash benchmarks/gpu_check.sh   # CPU smoke test of the script itself (~2 min)
#
# 1. installs the other Python dependencies from .whl/*.whl when that folder exists
#    (pip --no-index --no-deps --target /tmp/site), PYTHONPATH=/tmp/site:src;
# 2. nvidia-smi;
# 3. the precision report (what --precision auto picks on this device and why);
# 4. an inline CUDA check on a tiny random Llama: the fast and plain scoring paths agree,
#    bf16 agrees with fp32, CUDA agrees with CPU (the scoring tests run on CPU only);
#    plus the CPU precision/scoring tests when pytest is importable;
# 5. benchmarks/peft_vs_softprompt.py at a size that finishes in about 8 minutes (BENCH_TIMEOUT 480 s).
#
# Logs go to $OUT (when set, else /tmp/gpu_check); every step runs even if an earlier one
# failed, and the script exits non-zero if any did. Knobs: PYTHON, BENCH_ARGS, BENCH_TIMEOUT.
set -u -o pipefail

cd "$(dirname "$0")/.." || exit 2
LOGS="${OUT:-/tmp/gpu_check}"
mkdir -p "$LOGS"
. benchmarks/gpu_env.sh  # PY, install_wheels, offline_env
FAILED=()

step() {  # step NAME COMMAND...: run, tee to $LOGS/NAME.log, remember failures
    local name="$1"
    shift
    echo
    echo "=== $name ==="
    "$@" 2>&1 | tee "$LOGS/$name.log"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        echo "--- $name failed (exit $rc)"
        FAILED+=("$name")
    fi
    return 0
}

step install install_wheels
offline_env

gpu_info() {
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    else
        echo "nvidia-smi not found"
    fi
    "$PY" -c "import torch, sys; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| available', torch.cuda.is_available())"
}
step nvidia-smi gpu_info

step precision "$PY" -c "from softprompt.models.precision import report; print(report())"

step cuda-equivalence "$PY" - <<'PYEOF'
"""Fast vs plain scoring paths, bf16 vs fp32, CUDA vs CPU, on a tiny random Llama."""
import sys
import types

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from softprompt import PromptedLM
from softprompt.batching import Encoded, Encoder
from softprompt.models.identity import ModelIdentity, fingerprint_embeddings
from softprompt.models.loading import LoadedModel

dev = "cuda" if torch.cuda.is_available() else "cpu"
if dev == "cpu":
    print("no CUDA device: running the check on the CPU (smoke test only)")
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
VOCAB = 64


class IdsOnly(types.SimpleNamespace):
    """A stand-in tokenizer: the ids below are given, and it adds no special tokens (no <bos>)."""

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [5]}


def tiny(dtype, device):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=0, eos_token_id=1, bos_token_id=1, initializer_range=0.2, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).to(device=device, dtype=dtype).eval().requires_grad_(False)
    emb = model.get_input_embeddings().weight
    ident = ModelIdentity("tiny", fingerprint_embeddings(emb.float().cpu()), emb.shape[1], type(model).__name__)
    return LoadedModel(model=model, tokenizer=IdsOnly(pad_token_id=0, eos_token_id=1), identity=ident, dtype=dtype)


INPUTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14], [20, 21, 22, 23]]
CANDS = [[[45], [46, 47, 48]], [[46], [45], [49, 50, 51, 52]], [[49, 50], [5]], [[30], [31]]]
prompt = torch.randn(4, 64, generator=torch.Generator().manual_seed(1)) * 0.3
rows = [Encoded(i, c[0], tuple(c), 0) for i, c in zip(INPUTS, CANDS)]
batch = Encoder(types.SimpleNamespace(pad_token_id=0), False).collate(rows)


def run(dtype, device, fast):
    lm = tiny(dtype, device)
    plm = PromptedLM(lm, fast=fast)
    scores = [s for row in plm.score(prompt.to(device), INPUTS, CANDS) for s, _ in row]
    out = {}
    for objective in ("lm", "rank"):
        param = torch.nn.Parameter(prompt.clone().to(device))
        loss = plm.loss(param, batch.to(lm.device), objective)
        loss.backward()
        out[objective] = (loss.item(), param.grad.float().cpu())
    return torch.tensor(scores), out


failures = []


def compare(label, a, b, tol):
    (sa, la), (sb, lb) = a, b
    worst = (sa - sb).abs().max().item()
    ok = worst <= tol
    for objective in la:
        dl = abs(la[objective][0] - lb[objective][0])
        dg = ((la[objective][1] - lb[objective][1]).norm() / lb[objective][1].norm().clamp_min(1e-12)).item()
        ok = ok and dl <= tol and dg <= max(tol, 0.05)
        print(f"  {objective} loss {la[objective][0]:.5f} vs {lb[objective][0]:.5f} (|d| {dl:.2e}), grad rel diff {dg:.2e}")
    print(f"{'ok  ' if ok else 'FAIL'} {label}: max |score diff| {worst:.2e} (tolerance {tol})")
    if not ok:
        failures.append(label)


ref = run(torch.float32, "cpu", False)
results = {(dt, fast): run(dt, dev, fast) for dt in (torch.float32, torch.bfloat16) for fast in (True, False)}
compare(f"fp32 fast vs plain on {dev}", results[(torch.float32, True)], results[(torch.float32, False)], 1e-3)
compare(f"bf16 fast vs plain on {dev}", results[(torch.bfloat16, True)], results[(torch.bfloat16, False)], 0.1)
compare(f"bf16 vs fp32 (fast) on {dev}", results[(torch.bfloat16, True)], results[(torch.float32, True)], 0.15)
compare(f"fp32 {dev} vs fp32 cpu (plain)", results[(torch.float32, False)], ref, 1e-3)
sys.exit(1 if failures else 0)
PYEOF

if "$PY" -c "import pytest" >/dev/null 2>&1; then
    step cpu-tests "$PY" -m pytest tests/test_precision.py tests/test_scoring.py -q -p no:cacheprovider
else
    echo "pytest not importable: skipping the CPU tests"
fi

if [ "${GPU_CHECK_SMOKE:-0}" = "1" ]; then
    # Exercise the benchmark plumbing on a tiny random model saved to disk.
    "$PY" -c "
import sys; sys.path.insert(0, 'tests')
from helpers import tiny_llama
lm = tiny_llama(); lm.model.save_pretrained('/tmp/gpu_check_tiny'); lm.tokenizer.save_pretrained('/tmp/gpu_check_tiny')
" >/dev/null 2>&1
    DEFAULT_BENCH="--model /tmp/gpu_check_tiny --steps 2 --batch-size 4 --prompt-length 4 --eval-examples 12 --repeats 1"
else
    DEFAULT_BENCH="--steps 100 --batch-size 16 --eval-examples 872 --repeats 3"
fi
# shellcheck disable=SC2086  # BENCH_ARGS is a word list on purpose
step benchmark timeout "${BENCH_TIMEOUT:-480}" "$PY" benchmarks/peft_vs_softprompt.py ${BENCH_ARGS:-$DEFAULT_BENCH} --json "$LOGS/benchmark.json"

echo
if [ "${#FAILED[@]}" -eq 0 ]; then
    echo "gpu_check: all steps passed; logs in $LOGS"
else
    echo "gpu_check: failed steps: ${FAILED[*]}; logs in $LOGS"
    exit 1
fi
