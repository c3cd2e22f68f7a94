"""Prompt tuning vs LoRA vs model tuning on one task, side by side: dev accuracy against
training examples seen and against training seconds, over seeds.

Each method trains with `softprompt.train` under its own default recipe (the prompt: lr 0.3,
Adafactor, `--ema 0.99`; LoRA: rank 8 on every projection at 1e-3; model tuning: every weight
at 3e-5), on the same task, template, batches (per seed) and dev sample, evaluated every
--eval-every steps; the curve is read from each run's log.jsonl (training seconds are the
loop's own, evaluation excluded). A finished run (its result.json) is reused, so an
interrupted benchmark picks up where it stopped. Writes OUT/curve.json, OUT/curve.md (mean ±
std over seeds at every evaluation, and the mean of each seed's best evaluation so far: what
`train` keeps) and OUT/curve.png (two panels).

    python benchmarks/methods_curve.py                                  # SmolLM2-135M, SST-2, 200 steps, seed 0
    python benchmarks/methods_curve.py --steps 300 --batch-size 16 --eval-every 50 --max-eval 872 --seeds 0,1,2
    python benchmarks/methods_curve.py --model qwen2.5-coder-0.5b --steps 300 --eval-every 50 --max-eval 200
    python benchmarks/methods_curve.py --methods prompt@builtin:imdb --steps 300 --batch-size 16 --max-eval 872

A method `prompt@SOURCE` is the prompt started from a trained prompt (SPoT: a folder, or
builtin:NAME, an entry of the built-in library) instead of its default init; the source's own
training examples are not counted on the examples axis (the table's note says so).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from softprompt import TrainConfig, get_task, load_model, train
from softprompt.cli.runtime import init_source
from softprompt.config import parse_seeds
from softprompt.io import atomic_write_text, write_json
from softprompt.plots import pyplot, read_log, save_figure
from softprompt.stats import mean, std
from softprompt.tasks import dev_sample


def curve(log_path: Path, batch_size: int, metric: str) -> list[dict]:
    """(step, examples, seconds, score) at every evaluation of a run's log."""
    seconds, points = {}, []
    for record in read_log(log_path):
        if "examples_per_s" in record:
            seconds[record["step"]] = record["step"] * batch_size / max(record["examples_per_s"], 1e-9)
        if "eval" in record and metric in record["eval"]:
            step = record["step"]
            points.append({"step": step, "examples": step * batch_size, "seconds": seconds.get(step, 0.0),
                           "score": record["eval"][metric]})
    return points


def run(lm, task, method: str, seed: int, args, train_set, dev) -> dict:
    """One method and seed: its curve and costs (reused from OUT/<method>/seed<k>/result.json)."""
    out = args.out / re.sub(r"[:/\\]+", "-", method) / f"seed{seed}"  # prompt@builtin:imdb -> prompt@builtin-imdb
    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    base, _, source = method.partition("@")  # prompt@SOURCE: the prompt trained from a source prompt
    init = {"init": "file", "init_from": init_source(source, lm)} if source else {}
    cfg = TrainConfig(method=base, steps=args.steps, batch_size=args.batch_size, eval_every=args.eval_every,
                      seed=seed, embed_step=0, **init)
    result = train(lm, task, cfg, out, train_examples=train_set, dev_examples=dev, overwrite=True)
    record = {"method": method, "seed": seed, "curve": curve(out / "log.jsonl", args.batch_size, task.metrics[0]),
              "costs": {"trainable_params": result.trainable_params, "bytes_per_task": result.bytes_per_task,
                        "train_examples_per_s": result.train_examples_per_s, "peak_memory": result.peak_memory}}
    write_json(done, record)
    return record


def summarise(runs: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Per method, per evaluation step: examples, mean seconds, score mean and std over seeds."""
    summary = {}
    for method, records in runs.items():
        steps = sorted({p["step"] for r in records for p in r["curve"]})
        rows = []
        for step in steps:
            points = [p for r in records for p in r["curve"] if p["step"] == step]
            scores = [100 * p["score"] for p in points]
            # What `train` keeps: each seed's best evaluation so far.
            kept = [100 * max(p["score"] for p in r["curve"] if p["step"] <= step)
                    for r in records if any(p["step"] == step for p in r["curve"])]
            rows.append({"step": step, "examples": points[0]["examples"], "seeds": len(points),
                         "seconds": mean([p["seconds"] for p in points]), "score": mean(scores), "std": std(scores),
                         "best": mean(kept), "best_std": std(kept)})
        summary[method] = rows
    return summary


def table(summary: dict[str, list[dict]], runs: dict[str, list[dict]]) -> list[str]:
    methods = list(summary)
    steps = sorted({row["step"] for rows in summary.values() for row in rows})
    # Each cell: the score at that evaluation, mean ± std over seeds, and in brackets the mean of each
    # seed's best evaluation so far (what `train` keeps as best/).
    lines = ["| examples (steps × batch) | " + " | ".join(methods) + " |", "|---:|" + "---:|" * len(methods)]
    for step in steps:
        cells = []
        for m in methods:
            row = next((r for r in summary[m] if r["step"] == step), None)
            cells.append(f"{row['score']:.1f} ± {row['std']:.1f} ({row['best']:.1f})" if row else "")
        examples = next(r["examples"] for rows in summary.values() for r in rows if r["step"] == step)
        lines.append(f"| {examples} ({step}) | " + " | ".join(cells) + " |")
    lines.append("| train seconds at the last step | " + " | ".join(f"{summary[m][-1]['seconds']:.0f}" for m in methods)
                 + " |")
    lines += ["", "| method | trainable | bytes/task | train ex/s (mean over seeds) | peak memory |",
              "|---|---:|---:|---:|---:|"]
    for m in methods:
        c = runs[m][0]["costs"]
        speed = mean([r["costs"]["train_examples_per_s"] for r in runs[m]])
        lines.append(f"| {m} | {c['trainable_params']:,} | {c['bytes_per_task']:,} | {speed:.1f} | "
                     f"{max(r['costs']['peak_memory'] for r in runs[m]) / 2**30:.1f} GiB |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model (default: the embedded SmolLM2-135M)")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--methods", default="prompt,lora,model",
                        help="comma list of prompt, lora, model, prompt@SOURCE (a prompt folder or builtin:NAME)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-eval", type=int, default=200, help="seeded dev sample (the same for every run)")
    parser.add_argument("--seeds", default="0", help="comma list; each seed sets the prompt init and data order")
    parser.add_argument("--out", type=Path, default=Path("runs/methods-curve"))
    args = parser.parse_args()

    methods = args.methods.split(",")
    for m in methods:
        if m.partition("@")[0] not in ("prompt", "lora", "model") or (m.startswith(("lora@", "model@"))):
            parser.error(f"--methods: {m!r} is not prompt, lora, model or prompt@SOURCE")
    lm = load_model(args.model, args.precision)
    task = get_task(args.task)
    train_set, dev = task.load("train"), dev_sample(task.load("dev"), args.max_eval)
    metric = task.metrics[0]
    runs = {m: [run(lm, task, m, seed, args, train_set, dev) for seed in parse_seeds(args.seeds)]
            for m in methods}
    summary = summarise(runs)
    report = {"model": lm.identity.name, "precision": str(lm.dtype), "task": task.name, "metric": metric,
              "dev_examples": len(dev), "settings": {k: str(v) for k, v in vars(args).items()},
              "summary": summary, "runs": runs}
    write_json(args.out / "curve.json", report)
    lines = table(summary, runs)
    head = [f"# {task.name} on {lm.identity.name} ({lm.dtype}): dev {metric} (%), mean ± std over seeds "
            f"{args.seeds}, {len(dev)} dev examples", ""]
    atomic_write_text(args.out / "curve.md", "\n".join(head + lines) + "\n")
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for m, rows in summary.items():
        for ax, key in zip(axes, ("examples", "seconds")):
            x = [r[key] for r in rows]
            y = [r["score"] for r in rows]
            ax.plot(x, y, "o-", label=m)
            ax.fill_between(x, [a - r["std"] for a, r in zip(y, rows)], [a + r["std"] for a, r in zip(y, rows)],
                            alpha=0.2)
    for ax, label in zip(axes, ("training examples", "training seconds")):
        ax.set_xlabel(label)
        ax.set_ylabel(f"dev {metric} (%)")
        ax.legend()
    fig.suptitle(f"{task.name} on {lm.identity.name}: mean ± std over seeds {args.seeds} ({len(dev)} dev examples)")
    fig.tight_layout()
    save_figure(fig, args.out / "curve.png")
    print("\n".join(lines))
    print(f"wrote {args.out}/curve.json, curve.md, curve.png")


if __name__ == "__main__":
    main()
