"""softprompt against Hugging Face PEFT prompt tuning, side by side, in one script run.

Both tools train a prompt on the same frozen model, the same SST-2 sample, the same
steps, batch size, prompt length, seed and optimizer, then rank-classify the same dev
sample. Each configuration runs in its own child process (so peak memory is its own);
the configurations alternate, `--repeats` times, and the table gives the median and the
spread (min-max) of train and eval examples/s, peak memory (RSS), dev accuracy, ratios
against PEFT, and the share of the bf16/fp32 matmul peak measured in the same run.

    python benchmarks/peft_vs_softprompt.py                 # SmolLM2-135M, ~10 min on 2 cores
    python benchmarks/peft_vs_softprompt.py --steps 100 --eval-examples 872 --repeats 5
    python benchmarks/peft_vs_softprompt.py --model gemma3-270m

Rows:
  * PEFT "documented": plain usage: batches in data order, padding to the longest row of
    each batch, full logits at evaluation, fp32.
  * PEFT "best": the same length-bucketed training batches and length-sorted evaluation
    batches softprompt uses (the identical index lists, computed once in the parent with
    softprompt.batching), `logits_to_keep` at evaluation (only the positions that are
    scored go through the head), and the precision the matmul probe picks on this machine
    (softprompt.models.precision; bf16 means bf16 autocast over fp32 weights).
    It also gets the attention kernel softprompt's loader measures as fastest
    (softprompt.models.attention: fused sdpa or matmul "eager" attention).
  * softprompt: `train` + `evaluate` at that same precision (bf16 frozen weights).

Fairness: both sides time the same passes (every training step, then one evaluation pass);
both get the same untimed warm-up (softprompt's `train` evaluates a few dev examples after
its last step, PEFT evaluates the same few before its timed pass); the model cache is
warmed in the parent (one `load_model`) before any child starts.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

INIT_TEXT = "Classify the sentiment of the movie review as positive or negative."
EVAL_BATCH = 32
WARM_EVAL = 8  # dev examples both sides evaluate untimed before the timed evaluation pass


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def matmul_peak(dtype: torch.dtype, size: int = 1024, reps: int = 10, rounds: int = 3) -> float:
    """GFLOP/s of a square matmul, the practical peak of this machine for `dtype` (best of `rounds`)."""
    a = torch.randn(size, size, dtype=dtype, device=device())
    b = torch.randn(size, size, dtype=dtype, device=device())
    for _ in range(3):
        a @ b
    _sync()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * reps / best / 1e9


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sample_data(args):
    from softprompt.tasks import dev_sample, get_task

    task = get_task("sst2")
    rng = random.Random(args.seed)
    train = rng.sample(task.load("train"), args.steps * args.batch_size)
    dev = dev_sample(task.load("dev"), args.eval_examples)
    return task, train, dev


def make_plan(args, tokenizer) -> dict:
    """The batches, as index lists into the sampled train/dev examples, for every row.

    "best" batches are exactly what softprompt's `train` (bucketed, seeded) and `evaluate`
    (sorted by input length) draw; "documented" batches take the data in order.
    """
    from softprompt.batching import Encoder, bucketed_batches, sorted_batches

    task, train_ex, dev_ex = sample_data(args)
    enc = Encoder(tokenizer, False)
    encoded = [enc.encode(task, e) for e in train_ex]
    lengths = [len(e.input_ids) + len(e.target_ids) for e in encoded]
    stream = bucketed_batches(lengths, args.batch_size, random.Random(args.seed))
    eval_lengths = [len(enc.input_ids(task.format(e))) for e in dev_ex]
    n_train, n_dev = len(train_ex), len(dev_ex)
    return {
        "best": {
            "train": [next(stream) for _ in range(args.steps)],
            "eval": sorted_batches(eval_lengths, EVAL_BATCH),
        },
        "documented": {
            "train": [list(range(i, min(i + args.batch_size, n_train))) for i in range(0, n_train, args.batch_size)][
                : args.steps
            ],
            "eval": [list(range(i, min(i + EVAL_BATCH, n_dev))) for i in range(0, n_dev, EVAL_BATCH)],
        },
    }


def body_params(model) -> int:
    """Parameters every token passes through (embedding lookups and the LM head excluded)."""
    emb = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight
    tied = head.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    return sum(p.numel() for p in model.parameters()) - emb - (0 if tied else head.numel())


def gflop(body: int, head: int, body_tokens: int, head_rows: int, backward: bool) -> float:
    """Matmul GFLOP: 2 per weight per token; an input-gradient backward costs about a forward again."""
    return (2 if backward else 1) * 2 * (body * body_tokens + head * head_rows) / 1e9


# -- children ------------------------------------------------------------------------


def run_softprompt(args, plan) -> dict:
    import importlib

    from softprompt import PromptedLM, TrainConfig, evaluate, load_model, train
    from softprompt.batching import Encoder

    lm = load_model(args.model, precision=args.precision)
    task, train_ex, dev_ex = sample_data(args)

    # Record the index lists softprompt really draws (train: the bucketed stream; evaluate:
    # its sorted batches), so the parent can check they are PEFT's.
    # (`softprompt.train` is also the name of a function, so fetch the modules by name.)
    sp_train, sp_evaluate = importlib.import_module("softprompt.train"), importlib.import_module("softprompt.evaluate")
    used_train: list[list[int]] = []
    used_eval: list[list[int]] = []
    mixture_batches, sorted_batches = sp_train.mixture_batches, sp_evaluate.sorted_batches

    def recording_stream(*a, **k):
        for b in mixture_batches(*a, **k):
            used_train.append(list(b))
            yield b

    def recording_sorted(*a, **k):
        batches = sorted_batches(*a, **k)
        used_eval.append([list(b) for b in batches])
        return batches

    sp_train.mixture_batches, sp_evaluate.sorted_batches = recording_stream, recording_sorted
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        prompt_length=args.prompt_length,
        init="text",
        init_text=INIT_TEXT,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=0.0 if args.optimizer == "adamw" else 1e-5,
        seed=args.seed,
        eval_every=10**9,
        eval_batch_size=EVAL_BATCH,
        ema=0.0,
        loss="lm",  # PEFT's objective and its raw last prompt: the same training path on both sides
    )
    warm = dev_ex[:WARM_EVAL]  # train() evaluates these after its last step (untimed)
    with tempfile.TemporaryDirectory() as out:
        result = train(lm, task, cfg, out, train_examples=train_ex, dev_examples=warm, progress=False)
    plm = PromptedLM(lm)
    used_eval.clear()
    start = time.perf_counter()
    ev = evaluate(plm, result.best.weight, task, dev_ex, batch_size=EVAL_BATCH)
    _sync()
    eval_s = time.perf_counter() - start
    # Only the steps' batches count (a generator may have been asked for one more).
    used_train = used_train[: args.steps]

    enc = Encoder(lm.tokenizer, False)
    rows = [enc.encode(task, e) for e in train_ex]
    inputs = [enc.input_ids(task.format(e)) for e in dev_ex]
    P = args.prompt_length
    # The fast path runs the prompt once per batch and the head only where a target is scored.
    train_tokens = sum(
        len(b) * max(len(rows[i].input_ids) + len(rows[i].target_ids) for i in b) + P for b in used_train
    )
    train_heads = sum(len(rows[i].target_ids) for b in used_train for i in b)
    eval_tokens = P + sum(len(b) * max(len(inputs[i]) for i in b) for b in used_eval[0])
    eval_heads = sum(max(len(c) for c in rows[0].choices) for b in used_eval[0] for _ in b)
    body, head = body_params(lm.model), lm.model.get_output_embeddings().weight.numel()
    return {
        "train_examples": result.examples_seen,
        "train_s": result.examples_seen / result.train_examples_per_s,
        "eval_examples": ev.examples,
        "eval_s": eval_s,
        "accuracy": ev.metrics["accuracy"],
        "peak_mb": peak_memory_mb(),
        "train_gflop": gflop(body, head, train_tokens, train_heads, True),
        "eval_gflop": gflop(body, head, eval_tokens, eval_heads, False),
        "train_batches": used_train,
        "eval_batches": used_eval[0],
        "dtype": "bf16" if lm.dtype == torch.bfloat16 else "fp32",
        "attention": lm.model.config._attn_implementation,
    }


def run_peft(args, plan) -> dict:
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from softprompt.models.loading import resolve_source

    best = args.setup == "best"
    torch.manual_seed(args.seed)
    _, source = resolve_source(args.model)
    tok = AutoTokenizer.from_pretrained(source)
    tok.pad_token = tok.pad_token or tok.eos_token
    dev = device()
    autocast = args.precision == "bf16"
    attn = {}
    if best:  # the attention kernel softprompt's loader measures as fastest, at the dtype the matmuls run in
        from transformers import AutoConfig

        from softprompt.models import attention

        cfg = AutoConfig.from_pretrained(source)
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        dtype = torch.bfloat16 if autocast else torch.float32
        attn = {"attn_implementation": attention.choose("auto", dev, dtype, cfg.num_attention_heads, head_dim).implementation}
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **attn)
    config = PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=args.prompt_length,
        prompt_tuning_init=PromptTuningInit.TEXT,
        prompt_tuning_init_text=INIT_TEXT,
        tokenizer_name_or_path=source,
    )
    model = get_peft_model(model, config).to(dev)
    task, train_ex, dev_ex = sample_data(args)
    batches = plan[args.setup]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (
        torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
        if args.optimizer == "adamw"
        else _adafactor(params, args.lr)
    )
    P = args.prompt_length

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
        return ids.to(dev), mask.to(dev), labels.to(dev)

    words = [tok(" " + w, add_special_tokens=False)["input_ids"][0] for w in task.verbalizer.values()]
    labels_order = list(task.verbalizer)
    eval_rows = [encode(e, False) for e in dev_ex]

    def evaluate_batches(index_lists):
        """(correct, scored, body tokens, head rows) over `index_lists` of dev examples."""
        correct = scored = tokens = heads = 0
        with torch.no_grad(), torch.autocast(dev, dtype=torch.bfloat16, enabled=autocast):
            for idx in index_lists:
                ids, mask, _ = collate([eval_rows[i] for i in idx])
                last = P + mask.sum(1) - 1  # the position predicting the label word, per row
                if best:  # only the scored positions go through the head
                    keep = torch.unique(last)
                    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
                    scores = logits[torch.arange(len(idx)), torch.searchsorted(keep, last)][:, words]
                    heads += len(idx) * len(keep)
                else:
                    logits = model(input_ids=ids, attention_mask=mask).logits  # (B, P+T, V)
                    scores = logits[torch.arange(len(idx)), last][:, words]
                    heads += ids.shape[0] * (P + ids.shape[1])
                tokens += ids.shape[0] * (P + ids.shape[1])
                picked = scores.argmax(-1).tolist()
                correct += sum(labels_order[k] == dev_ex[i].target for k, i in zip(picked, idx))
                scored += len(idx)
        return correct, scored, tokens, heads

    rows = [encode(e, True) for e in train_ex]
    model.train()
    tokens, seen = 0, 0
    start = time.perf_counter()
    for idx in batches["train"]:
        seen += len(idx)
        ids, mask, labels = collate([rows[i] for i in idx])
        tokens += ids.shape[0] * (P + ids.shape[1])
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        loss.item()  # softprompt's loop reads the loss every step too
    _sync()
    train_s = time.perf_counter() - start

    model.eval()
    evaluate_batches([list(range(min(WARM_EVAL, len(dev_ex))))])  # the warm-up softprompt's train() also gets
    start = time.perf_counter()
    correct, scored, eval_tokens, eval_heads = evaluate_batches(batches["eval"])
    _sync()
    eval_s = time.perf_counter() - start
    base = model.get_base_model()
    body, head = body_params(base), base.get_output_embeddings().weight.numel()
    return {
        "train_examples": seen,
        "train_s": train_s,
        "eval_examples": scored,
        "eval_s": eval_s,
        "accuracy": correct / scored,
        "peak_mb": peak_memory_mb(),
        # the LM head over every position in training (labels -> full logits)
        "train_gflop": gflop(body, head, tokens, tokens, True),
        "eval_gflop": gflop(body, head, eval_tokens, eval_heads, False),
        "train_batches": batches["train"],
        "eval_batches": batches["eval"],
        "dtype": "bf16-autocast" if autocast else "fp32",
        "attention": model.get_base_model().config._attn_implementation,
    }


def _adafactor(params, lr):
    from transformers.optimization import Adafactor

    return Adafactor(params, lr=lr, weight_decay=1e-5, decay_rate=-0.8, scale_parameter=False, relative_step=False)


# -- parent ------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="softprompt model name (default: embedded SmolLM2-135M)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--prompt-length", type=int, default=20)
    parser.add_argument("--eval-examples", type=int, default=256)
    parser.add_argument("--optimizer", default="adamw", choices=["adamw", "adafactor"])
    parser.add_argument("--lr", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each configuration, alternating (median and min-max reported)"
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="precision of the 'best' rows (auto: the matmul probe decides)",
    )
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    parser.add_argument("--child", choices=["peft", "softprompt"], help=argparse.SUPPRESS)
    parser.add_argument("--setup", choices=["best", "documented"], default="best", help=argparse.SUPPRESS)
    parser.add_argument("--plan", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def child_argv(args, tool, setup, precision, plan_path) -> list[str]:
    argv = [
        sys.executable,
        __file__,
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--prompt-length",
        str(args.prompt_length),
        "--eval-examples",
        str(args.eval_examples),
        "--optimizer",
        args.optimizer,
        "--lr",
        str(args.lr),
        "--seed",
        str(args.seed),
        "--child",
        tool,
        "--setup",
        setup,
        "--precision",
        precision,
        "--plan",
        plan_path,
    ]
    return argv + (["--model", args.model] if args.model else [])


def aggregate(runs: list[dict]) -> dict:
    """One table row from the repeated runs of one configuration."""
    row = {
        k: runs[0][k]
        for k in (
            "tool",
            "setup",
            "precision",
            "attention",
            "train_examples",
            "eval_examples",
            "accuracy",
            "train_gflop",
            "eval_gflop",
            "train_batches",
            "eval_batches",
        )
    }
    for kind in ("train", "eval"):
        rates = [r[f"{kind}_ex_s"] for r in runs]
        row[f"{kind}_ex_s"] = statistics.median(rates)
        row[f"{kind}_ex_s_min"], row[f"{kind}_ex_s_max"] = min(rates), max(rates)
        row[f"{kind}_gflop_s"] = statistics.median(r[f"{kind}_gflop"] / r[f"{kind}_s"] for r in runs)
    row["peak_mb"] = max(r["peak_mb"] for r in runs)
    row["repeats"] = len(runs)
    row["accuracies"] = sorted({r["accuracy"] for r in runs})
    return row


def check_bookkeeping(rows: list[dict], plan: dict, args) -> list[str]:
    """Problems (empty when none): the 'best' rows processed the identical batches, and every
    row processed every sampled example the expected number of times."""
    problems = []
    for r in rows:
        expected = plan[r["setup"]]
        if r["train_batches"] != expected["train"] or r["eval_batches"] != expected["eval"]:
            problems.append(f"{r['tool']} {r['setup']}: batches differ from the plan")
        if (
            r["train_examples"] != sum(len(b) for b in r["train_batches"])
            or r["train_examples"] != args.steps * args.batch_size
        ):
            problems.append(f"{r['tool']} {r['setup']}: {r['train_examples']} training examples")
        if (
            sorted(i for b in r["eval_batches"] for i in b) != list(range(args.eval_examples))
            or r["eval_examples"] != args.eval_examples
        ):
            problems.append(f"{r['tool']} {r['setup']}: evaluated {r['eval_examples']} of {args.eval_examples}")
    return problems


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        torch.set_num_threads(torch.get_num_threads())
        plan = json.loads(Path(args.plan).read_text())
        started = time.perf_counter()
        result = run_peft(args, plan) if args.child == "peft" else run_softprompt(args, plan)
        result.update(
            tool=args.child,
            setup=args.setup,
            precision=result.pop("dtype"),
            train_ex_s=result["train_examples"] / result["train_s"],
            eval_ex_s=result["eval_examples"] / result["eval_s"],
            wall_s=time.perf_counter() - started,
        )
        print("RESULT " + json.dumps(result), flush=True)
        return

    from softprompt import load_model
    from softprompt.models import precision

    dev = torch.device(device())
    flags = precision.cpu_flags()
    print(
        "cpu flags: "
        + (
            " ".join(f for f in flags if f in ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f"))
            or "none of amx_bf16/avx512_bf16"
        )
        if flags is not None
        else "cpu flags: unknown (no /proc/cpuinfo)",
        f"| torch {torch.__version__} | {torch.get_num_threads()} threads | {dev}",
        flush=True,
    )
    choice = precision.choose(args.precision, dev)
    print(precision.describe(choice), flush=True)
    # Warm the model cache (GGUF dequantisation) here, once, not inside the first child.
    lm = load_model(args.model, precision="fp32", device=str(dev))
    plan = make_plan(args, lm.tokenizer)
    del lm
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}

    configs = [("peft", "documented", "fp32"), ("peft", "best", choice.name), ("softprompt", "best", choice.name)]
    runs: dict[tuple, list[dict]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory() as tmp:
        plan_path = str(Path(tmp) / "plan.json")
        Path(plan_path).write_text(json.dumps(plan))
        for repeat in range(args.repeats):
            for config in configs:  # alternate: A B C, A B C, ...
                tool, setup, prec = config
                print(f"run {repeat + 1}/{args.repeats}: {tool} {setup} ({prec}) ...", file=sys.stderr, flush=True)
                out = subprocess.run(child_argv(args, tool, setup, prec, plan_path), capture_output=True, text=True)
                lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
                if out.returncode != 0 or not lines:
                    sys.exit(f"{tool} {setup} ({prec}) failed:\n{out.stderr[-3000:]}")
                runs[config].append(json.loads(lines[-1][7:]))
    rows = [aggregate(runs[c]) for c in configs]
    problems = check_bookkeeping(rows, plan, args)
    print_table(rows, peaks, args)
    for p in problems:
        print("BOOKKEEPING: " + p, file=sys.stderr)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "peaks_gflop_s": peaks,
                    "cpu_flags": list(flags or ()),
                    "precision": precision.describe(choice),
                    "rows": rows,
                    "runs": [r for c in configs for r in runs[c]],
                    "plan": plan,
                    "bookkeeping_problems": problems,
                    "settings": vars(args),
                },
                handle,
                indent=2,
            )
    if problems:
        sys.exit(1)


def peak_share(gflop_s: float, precision: str, peaks: dict) -> float:
    return gflop_s / peaks["bf16" if precision.startswith("bf16") else "fp32"]


def print_table(rows, peaks, args) -> None:
    """Markdown table: one row per configuration, medians (min-max), ratios against the PEFT rows."""
    best = next(r for r in rows if r["tool"] == "peft" and r["setup"] == "best")
    doc = next(r for r in rows if r["tool"] == "peft" and r["setup"] == "documented")
    print(
        f"\nSST-2, {args.steps} steps x batch {args.batch_size}, prompt {args.prompt_length}, {args.optimizer} lr {args.lr}, "
        f"{args.eval_examples} dev examples, {torch.get_num_threads()} threads, median of {args.repeats} alternating runs; "
        f"matmul peak fp32 {peaks['fp32']:.0f} / bf16 {peaks['bf16']:.0f} GFLOP/s\n"
    )
    cols = [
        "tool",
        "setup",
        "precision, attention",
        "train ex/s",
        "(min-max)",
        "x PEFT best",
        "x PEFT doc",
        "eval ex/s",
        "(min-max)",
        "x PEFT best",
        "x PEFT doc",
        "peak MB",
        "dev acc",
        "train % peak",
        "eval % peak",
    ]
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---:" if i > 2 else "---" for i in range(len(cols))) + "|")
    for r in rows:
        cells = [
            r["tool"],
            r["setup"],
            f"{r['precision']}, {r['attention']}",
            f"{r['train_ex_s']:.1f}",
            f"{r['train_ex_s_min']:.1f}-{r['train_ex_s_max']:.1f}",
            f"{r['train_ex_s'] / best['train_ex_s']:.2f}",
            f"{r['train_ex_s'] / doc['train_ex_s']:.2f}",
            f"{r['eval_ex_s']:.1f}",
            f"{r['eval_ex_s_min']:.1f}-{r['eval_ex_s_max']:.1f}",
            f"{r['eval_ex_s'] / best['eval_ex_s']:.2f}",
            f"{r['eval_ex_s'] / doc['eval_ex_s']:.2f}",
            f"{r['peak_mb']:.0f}",
            f"{100 * r['accuracy']:.1f}%",
            f"{100 * peak_share(r['train_gflop_s'], r['precision'], peaks):.1f}%",
            f"{100 * peak_share(r['eval_gflop_s'], r['precision'], peaks):.1f}%",
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
