"""softprompt against Hugging Face PEFT prompt tuning, side by side, in one script run.

Both tools train a prompt on the same frozen model, the same SST-2 sample, the same
steps, batch size, prompt length, seed and optimizer, then rank-classify the same dev
sample. Each configuration runs in its own child process (so peak memory is its own),
alternating PEFT and softprompt; the table gives train and eval examples/s, peak memory
(RSS), dev accuracy, ratios against PEFT, and achieved GFLOP/s against a bf16/fp32
matmul peak measured in the same run.

    python benchmarks/peft_vs_softprompt.py                 # SmolLM2-135M, ~5 min on 2 cores
    python benchmarks/peft_vs_softprompt.py --steps 100 --eval-examples 872
    python benchmarks/peft_vs_softprompt.py --model gemma3-270m

PEFT gets its best configuration: dynamic padding per batch, one forward per example at
evaluation (labels here are single tokens, so the last position's logits rank them), and
both fp32 and bf16 autocast are measured.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time

import torch

INIT_TEXT = "Classify the sentiment of the movie review as positive or negative."


def matmul_peak(dtype: torch.dtype, size: int = 1024, reps: int = 20) -> float:
    """GFLOP/s of a square matmul, the practical peak of this machine for `dtype`."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    _sync()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync()
    return 2 * size**3 * reps / (time.perf_counter() - start) / 1e9


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sample_data(args):
    from softprompt.tasks import get_task

    task = get_task("sst2")
    rng = random.Random(args.seed)
    train = rng.sample(task.load("train"), args.steps * args.batch_size)
    dev = random.Random(1234).sample(task.load("dev"), args.eval_examples)
    return task, train, dev


def body_params(model) -> int:
    """Parameters every token passes through (embedding lookups excluded)."""
    emb = model.get_input_embeddings().weight.numel()
    return sum(p.numel() for p in model.parameters()) - emb


# -- children ------------------------------------------------------------------------


def run_softprompt(args) -> dict:
    import tempfile

    from softprompt import PromptedLM, TrainConfig, evaluate, load_model, train
    from softprompt.batching import Encoder

    lm = load_model(args.model, precision=args.precision)
    task, train_ex, dev_ex = sample_data(args)
    cfg = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, prompt_length=args.prompt_length, init="text",
        init_text=INIT_TEXT, optimizer=args.optimizer, lr=args.lr, weight_decay=0.0 if args.optimizer == "adamw" else 1e-5,
        seed=args.seed, eval_every=10**9, max_eval=len(dev_ex),
        ema=0.0, loss="lm",  # PEFT's objective and its raw last prompt: the same training path on both sides
    )
    with tempfile.TemporaryDirectory() as out:
        result = train(lm, task, cfg, out, train_examples=train_ex, dev_examples=dev_ex, progress=False)
    plm = PromptedLM(lm)
    start = time.perf_counter()
    ev = evaluate(plm, result.best.weight, task, dev_ex, batch_size=32)
    eval_s = time.perf_counter() - start
    enc = Encoder(lm.tokenizer, False)
    # Tokens the body processes: every row's input (+target in training); the prompt once per batch.
    train_tokens = sum(len(enc.input_ids(task.format(e))) + 1 for e in train_ex) + args.steps * args.prompt_length
    eval_tokens = sum(len(enc.input_ids(task.format(e))) for e in dev_ex) + args.prompt_length
    n = body_params(lm.model)
    return {
        "tool": "softprompt", "precision": str(lm.dtype).replace("torch.", ""),
        "train_ex_s": result.train_examples_per_s, "train_examples": result.examples_seen,
        "eval_ex_s": ev.examples / eval_s, "eval_examples": ev.examples,
        "accuracy": ev.metrics["accuracy"], "train_in_loop_accuracy": result.best.metrics["accuracy"],
        "peak_mb": peak_memory_mb(),
        # forward + input-gradient backward ~ 2x forward FLOPs; 1 logit row per target.
        "train_gflop": (2 * 2 * n * train_tokens) / 1e9,
        "train_s": result.examples_seen / result.train_examples_per_s,
        "eval_gflop": 2 * n * eval_tokens / 1e9, "eval_s": eval_s,
    }


def run_peft(args) -> dict:
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from softprompt.models.loading import resolve_source

    torch.manual_seed(args.seed)
    _, source = resolve_source(args.model)
    tok = AutoTokenizer.from_pretrained(source)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM, num_virtual_tokens=args.prompt_length,
        prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=INIT_TEXT, tokenizer_name_or_path=source,
    )
    model = get_peft_model(model, config).to(device)
    task, train_ex, dev_ex = sample_data(args)
    autocast = args.precision == "bf16"
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0) if args.optimizer == "adamw" else _adafactor(params, args.lr)

    def encode(e, with_label):
        ids = tok(task.format(e), add_special_tokens=False)["input_ids"]
        label = tok(" " + task.target_text(e), add_special_tokens=False)["input_ids"] if with_label else []
        return ids, label

    def collate(rows):
        width = max(len(i) + len(l) for i, l in rows)
        ids = torch.full((len(rows), width), tok.pad_token_id)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for r, (i, l) in enumerate(rows):
            ids[r, : len(i) + len(l)] = torch.tensor(i + l)
            mask[r, : len(i) + len(l)] = 1
            labels[r, len(i) : len(i) + len(l)] = torch.tensor(l)
        return ids.to(device), mask.to(device), labels.to(device)

    rows = [encode(e, True) for e in train_ex]
    model.train()
    tokens, seen = 0, 0
    start = time.perf_counter()
    for step in range(args.steps):
        batch = rows[step * args.batch_size : (step + 1) * args.batch_size]
        seen += len(batch)
        ids, mask, labels = collate(batch)
        tokens += ids.numel() + len(batch) * args.prompt_length
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    _sync()
    train_s = time.perf_counter() - start

    model.eval()
    words = [tok(" " + w, add_special_tokens=False)["input_ids"][0] for w in task.verbalizer.values()]
    correct, eval_tokens, scored = 0, 0, 0
    start = time.perf_counter()
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
        for b in range(0, len(dev_ex), 32):
            chunk = dev_ex[b : b + 32]
            ids, mask, _ = collate([encode(e, False) for e in chunk])
            eval_tokens += ids.numel() + len(chunk) * args.prompt_length
            logits = model(input_ids=ids, attention_mask=mask).logits  # (B, P+T, V)
            last = args.prompt_length + mask.sum(1) - 1
            scores = logits[torch.arange(len(chunk)), last][:, words]
            labels = list(task.verbalizer)
            correct += sum(labels[i] == e.target for i, e in zip(scores.argmax(-1).tolist(), chunk))
            scored += len(chunk)
    _sync()
    eval_s = time.perf_counter() - start
    n = body_params(model.get_base_model())
    vh = model.get_base_model().get_output_embeddings().weight.numel()
    return {
        "tool": "peft", "precision": "bf16-autocast" if autocast else "fp32",
        "train_ex_s": seen / train_s, "train_examples": seen,
        "eval_ex_s": scored / eval_s, "eval_examples": scored, "accuracy": correct / scored,
        "peak_mb": peak_memory_mb(),
        # lm_head over every position, forward + input-gradient backward.
        "train_gflop": 2 * 2 * (n + vh) * tokens / 1e9, "train_s": train_s,
        "eval_gflop": 2 * (n + vh) * eval_tokens / 1e9, "eval_s": eval_s,
    }


def _adafactor(params, lr):
    from transformers.optimization import Adafactor

    return Adafactor(params, lr=lr, weight_decay=1e-5, decay_rate=-0.8, scale_parameter=False, relative_step=False)


# -- parent ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="softprompt model name (default: embedded SmolLM2-135M)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--prompt-length", type=int, default=20)
    parser.add_argument("--eval-examples", type=int, default=256)
    parser.add_argument("--optimizer", default="adamw", choices=["adamw", "adafactor"])
    parser.add_argument("--lr", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    parser.add_argument("--child", choices=["peft", "softprompt"], help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        torch.set_num_threads(torch.get_num_threads())
        row = run_peft(args) if args.child == "peft" else run_softprompt(args)
        print("RESULT " + json.dumps(row), flush=True)
        return

    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    runs = [("peft", "fp32"), ("softprompt", "auto"), ("peft", "bf16")]
    rows = []
    base = [a for a in sys.argv[1:] if a != "--json" and not a.endswith(".json")]
    for tool, precision in runs:
        cmd = [sys.executable, __file__, *base, "--child", tool, "--precision", precision]
        print(f"running {tool} ({precision}) ...", file=sys.stderr, flush=True)
        out = subprocess.run(cmd, capture_output=True, text=True)
        lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            sys.exit(f"{tool} ({precision}) failed:\n{out.stderr[-2000:]}")
        rows.append(json.loads(lines[-1][7:]))
    print_table(rows, peaks, args)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"peaks_gflop_s": peaks, "rows": rows, "settings": vars(args)}, handle, indent=2)


def print_table(rows, peaks, args) -> None:
    """Markdown table: one row per run, ratios against PEFT fp32 and PEFT bf16 autocast."""
    base = {r["precision"]: r for r in rows if r["tool"] == "peft"}
    fp32, bf16 = base["fp32"], base.get("bf16-autocast", base["fp32"])
    print(f"\nSST-2, {args.steps} steps x batch {args.batch_size}, prompt {args.prompt_length}, {args.optimizer} lr {args.lr}, "
          f"{args.eval_examples} dev examples, {torch.get_num_threads()} threads; "
          f"matmul peak fp32 {peaks['fp32']:.0f} / bf16 {peaks['bf16']:.0f} GFLOP/s\n")
    cols = ["tool", "precision", "train ex/s", "x PEFT fp32", "x PEFT bf16", "eval ex/s", "x PEFT fp32", "x PEFT bf16",
            "peak MB", "dev acc", "train GFLOP/s", "eval GFLOP/s"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---:" if i > 1 else "---" for i in range(len(cols))) + "|")
    for r in rows:
        cells = [
            r["tool"], r["precision"],
            f"{r['train_ex_s']:.1f}", f"{r['train_ex_s'] / fp32['train_ex_s']:.2f}", f"{r['train_ex_s'] / bf16['train_ex_s']:.2f}",
            f"{r['eval_ex_s']:.1f}", f"{r['eval_ex_s'] / fp32['eval_ex_s']:.2f}", f"{r['eval_ex_s'] / bf16['eval_ex_s']:.2f}",
            f"{r['peak_mb']:.0f}", f"{100 * r['accuracy']:.1f}%",
            f"{r['train_gflop'] / r['train_s']:.0f}", f"{r['eval_gflop'] / r['eval_s']:.0f}",
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
