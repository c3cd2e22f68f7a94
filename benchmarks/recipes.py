"""Compare training recipes over seeds and tasks: dev accuracy mean ± std per recipe, and how
many runs collapsed to chance. Resumable: a finished cell (its result.json) is reused, an
interrupted one resumes from its checkpoint.

    python benchmarks/make_long_reviews.py                          # once: runs/long-reviews/
    python benchmarks/recipes.py --tasks sst2 --seeds 0,1,2         # every recipe below
    python benchmarks/recipes.py --tasks sst2,long-reviews,rte --recipes paper,residual --seeds 0,1,2
    python benchmarks/recipes.py --tasks sst2 --recipes default --seeds 0 --steps 10 --max-eval 32   # smoke

A recipe is a set of `TrainConfig` settings over the base (--steps, --batch-size, --max-eval
given here apply to every recipe unless the recipe sets them). Results: OUT/<task>/<recipe>/
seed<k>/ (the training folder plus result.json) and OUT/recipes.md, the table (also printed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from softprompt.cli import runtime
from softprompt.config import TrainConfig, parse_seeds
from softprompt.io import atomic_write_text
from softprompt.spot.library import builtin_root
from softprompt.stats import mean_std
from softprompt.tasks import get_task
from softprompt.tasks.user import user_task
from softprompt.train import train

# Start from the shipped SST-2 prompt of the embedded model (SPoT: a sentiment source for a sentiment target).
SST2_INIT = {"init": "file", "init_from": str(builtin_root() / "smollm2-135m" / "sst2")}
# The shipped SNLI prompt: the source that gives CB its significant transfer gain (docs/benchmarks/transfer.md).
SNLI_INIT = {"init": "file", "init_from": str(builtin_root() / "smollm2-135m" / "snli")}

RECIPES: dict[str, dict] = {
    "default": {},  # TrainConfig's defaults
    "paper": {"loss": "lm", "ema": 0.0},  # Lester et al.: text-to-text loss, constant lr 0.3, no average
    "rank": {"loss": "rank"},
    "lm": {"loss": "lm"},
    "residual": {"reparam": "residual"},
    "residual-cosine": {"reparam": "residual", "decay": "cosine", "warmup_steps": 20},
    "cosine": {"decay": "cosine", "warmup_steps": 20},
    "linear": {"decay": "linear", "warmup_steps": 20},
    "lr1": {"lr": 1.0},
    "lr0.1": {"lr": 0.1},
    "lr0.03": {"lr": 0.03},  # SmolLM2's token embeddings have RMS 0.13; Adafactor moves each number by about lr
    "lr0.01": {"lr": 0.01},
    "p50-lr0.03": {"prompt_length": 50, "lr": 0.03},  # more prompt, each vector kept nearer the token scale
    "rank-lr0.03": {"loss": "rank", "lr": 0.03},  # the label-set loss alone collapsed at lr 0.3
    "p5": {"prompt_length": 5},
    "p50": {"prompt_length": 50},
    "p100": {"prompt_length": 100},
    "p100-residual": {"prompt_length": 100, "reparam": "residual"},
    "p50-scaled": {"prompt_length": 50, "length_scaled_lr": True},  # lr 0.3 * sqrt(20/50) = 0.19
    "p100-scaled": {"prompt_length": 100, "length_scaled_lr": True},  # lr 0.13
    "words8": {"min_train_words": 8},  # SST-2 train: median 7 words (phrases), dev: median 19 (sentences)
    "words12": {"min_train_words": 12},
    "batch32": {"batch_size": 32},
    "batch64": {"batch_size": 64},  # per-op overhead bounds the step: 64 examples cost ~1.7x 16 (amx_bf16 Xeon)
    "no-ema": {"ema": 0.0},
    "adamw": {"optimizer": "adamw", "lr": 0.01},
    "tail": {"truncation": "tail"},
    "head": {"truncation": "head"},
    "ht128": {"max_input_tokens": 128},  # head+tail at half the length: twice the steps in a time budget
    "sst2-init": SST2_INIT,
    "sst2-init-ht128": {**SST2_INIT, "max_input_tokens": 128},
    "sst2-init-ht64": {**SST2_INIT, "max_input_tokens": 64},  # 16 tokens from the start, 48 from the end
    "sst2-init-tail128": {**SST2_INIT, "max_input_tokens": 128, "truncation": "tail"},
    "sst2-init-tail256": {**SST2_INIT, "max_input_tokens": 256, "truncation": "tail"},  # the review's last 256 tokens
    "snli-init": SNLI_INIT,  # an NLI source for an NLI target (CB)
}


def load_task(name: str, data: Path):
    """A built-in task, or the long-review task built by make_long_reviews.py in `data`."""
    if name != "long-reviews":
        return get_task(name), None, None
    phrases = {"thumbs up": "thumbs up", "thumbs down": "thumbs down"}
    files = {"train": str(data / "train.csv"), "dev": str(data / "dev.jsonl")}
    task = user_task(name, files, ["review"], "verdict", phrases, "Review: {review} Verdict:")
    return task, task.load("train"), task.load("dev")


def chance(task, dev) -> float:
    """Accuracy of always predicting the most common dev label."""
    labels = [e.target for e in dev]
    return max(labels.count(label) for label in set(labels)) / len(labels)


def run_cell(lm, task_name: str, recipe: str, seed: int, base: dict, out: Path, data: Path) -> dict:
    folder = out / task_name / recipe / f"seed{seed}"
    if (folder / "result.json").is_file():
        return json.loads((folder / "result.json").read_text())
    task, train_rows, dev_rows = load_task(task_name, data)
    cfg = TrainConfig(**{**base, **RECIPES[recipe], "seed": seed})
    started = time.perf_counter()
    resume = (folder / "checkpoint").is_dir()
    result = train(
        lm, task, cfg, folder, train_examples=train_rows, dev_examples=dev_rows, resume=resume, overwrite=not resume
    )
    dev = dev_rows if dev_rows is not None else task.load("dev")
    record = {
        "task": task_name,
        "recipe": recipe,
        "seed": seed,
        "accuracy": result.best.metrics.get("accuracy", result.best.metrics.get(task.metrics[0])),
        "best_step": result.best_step,
        "steps": result.steps_done,
        "chance": chance(task, dev) if task.is_classification else None,
        "seconds": time.perf_counter() - started,
        "settings": asdict(cfg),
    }
    atomic_write_text(folder / "result.json", json.dumps(record, indent=2) + "\n")
    return record


def table(records: list[dict]) -> str:
    lines = [
        "| task | recipe | dev accuracy (mean ± std) | seeds | collapsed | min / max |",
        "|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["task"], r["recipe"]), []).append(r)
    for (task, recipe), rows in groups.items():
        accs = [100 * r["accuracy"] for r in rows]
        mean_acc, std_acc = mean_std(accs)
        collapsed = sum(r["chance"] is not None and r["accuracy"] <= r["chance"] + 0.02 for r in rows)
        lines.append(
            f"| {task} | {recipe} | {mean_acc:.2f} ± {std_acc:.2f} | {len(rows)} | {collapsed} | "
            f"{min(accs):.1f} / {max(accs):.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="sst2")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-eval", type=int, default=None)
    parser.add_argument("--time-budget", default=None, help="per run, e.g. 10m (replaces --steps)")
    parser.add_argument("--eval-every", type=int, default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--data", type=Path, default=Path("runs/long-reviews"), help="make_long_reviews.py output")
    parser.add_argument("--out", type=Path, default=Path("runs/recipes"))
    args = parser.parse_args()
    unknown = [r for r in args.recipes.split(",") if r not in RECIPES]
    if unknown:
        sys.exit(f"error: --recipes: unknown {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    base = {
        k: v
        for k, v in {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "max_eval": args.max_eval,
            "time_budget": args.time_budget,
            "eval_every": args.eval_every,
        }.items()
        if v is not None
    }
    lm = runtime.load_model(args.model, args.precision)
    records = []
    for task_name in args.tasks.split(","):
        for recipe in args.recipes.split(","):
            for seed in parse_seeds(args.seeds):
                record = run_cell(lm, task_name, recipe, seed, base, args.out, args.data)
                print(f"{task_name} {recipe} seed {seed}: {100 * record['accuracy']:.2f}", flush=True)
                records.append(record)
    text = table(records)
    atomic_write_text(args.out / "recipes.md", text)
    print(text)


if __name__ == "__main__":
    main()
