"""2 workers × 1 thread (torchrun, gloo) against 1 process × 2 threads (and × 1 thread), on this CPU.

Trains a prompt and evaluates it on a small random Llama (no download) both ways and prints
a side-by-side table: training examples/s (optimizer steps only) and evaluation examples/s.

    PYTHONPATH=src python benchmarks/distributed_cpu.py [--steps 30] [--hidden 256] [--layers 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]


def model(hidden: int, layers: int):
    from helpers import tiny_llama

    return tiny_llama(hidden_size=hidden, layers=layers, heads=8, mlp_ratio=4, tie_word_embeddings=False)


def work(args) -> None:
    """One side of the comparison: in a torchrun worker, or alone with 2 threads."""
    import torch
    from helpers import toy_task

    from softprompt import distributed as dp
    from softprompt.evaluate import evaluate
    from softprompt.scoring import PromptedLM
    from softprompt.train import TrainConfig, train

    torch.set_num_threads(args.threads)
    ctx = dp.init_from_env()
    lm, task = model(args.hidden, args.layers), toy_task(n_train=512, n_dev=args.eval_examples)
    with tempfile.TemporaryDirectory() as tmp:
        out = dp.broadcast_object(tmp, ctx)  # rank 0's folder
        cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, prompt_length=20, eval_every=10**6, max_eval=8)
        result = train(lm, task, cfg, Path(out) / "run", progress=False)
        dev = task.load("dev")
        prompt = result.best.weight
        evaluate(PromptedLM(lm), prompt, task, dev[:8], batch_size=32, ctx=dp.context())  # warm-up
        dp.barrier(ctx)
        tick = time.perf_counter()
        evaluate(PromptedLM(lm), prompt, task, dev, batch_size=32, ctx=dp.context())
        dp.barrier(ctx)
        eval_rate = len(dev) / (time.perf_counter() - tick)
    if ctx.main:
        Path(args.report).write_text(json.dumps({"train": result.train_examples_per_s, "eval": eval_rate}))
    dp.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--eval-examples", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report")
    parser.add_argument("--worker", action="store_true")
    args = parser.parse_args()
    if args.worker:
        return work(args)

    from softprompt.distributed import launch

    common = [
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--hidden",
        str(args.hidden),
        "--layers",
        str(args.layers),
        "--eval-examples",
        str(args.eval_examples),
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": os.pathsep.join(sys.path[:2])}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for threads in (2, 1):  # 1 x 1: what one worker alone does, for reference
            one = Path(tmp) / f"one{threads}.json"
            subprocess.run(
                [sys.executable, __file__, "--worker", "--threads", str(threads), "--report", str(one), *common],
                check=True,
                env={**env, "OMP_NUM_THREADS": str(threads)},
            )
            rows[f"1 process x {threads} thread{'s' if threads > 1 else ''}"] = json.loads(one.read_text())
        two = Path(tmp) / "two.json"
        os.environ.update(PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
        code = launch(2, [__file__, "--worker", "--threads", "1", "--report", str(two), *common], module=None)
        if code:
            sys.exit(code)
        rows["2 workers x 1 thread"] = json.loads(two.read_text())
    flags = subprocess.run(
        "grep -o 'amx_bf16\\|avx512_bf16' /proc/cpuinfo | sort -u", shell=True, capture_output=True, text=True
    ).stdout.split()
    print(
        f"CPU: {os.cpu_count()} cores, flags: {', '.join(flags) or 'none of amx_bf16/avx512_bf16'}; "
        f"random Llama H={args.hidden}, {args.layers} layers, fp32; prompt 20; batch {args.batch_size}; "
        f"{args.steps} steps; eval {args.eval_examples} examples (2 labels)"
    )
    base = rows["1 process x 2 threads"]
    print(
        f"| {'setup':24s} | {'train ex/s':>10s} | {'eval ex/s':>9s} | {'train speed-up':>14s} | {'eval speed-up':>13s} |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(
            f"| {name:24s} | {r['train']:10.1f} | {r['eval']:9.1f} | {r['train'] / base['train']:13.2f}x | "
            f"{r['eval'] / base['eval']:12.2f}x |"
        )


if __name__ == "__main__":
    main()
