"""Prompt tuning vs LoRA vs model tuning on one task, side by side: dev accuracy against
training examples seen and against training seconds.

Each method trains with `softprompt.train` (same task, template, batches, seed, dev sample),
evaluated every --eval-every steps; the curve is read from each run's log.jsonl (training
seconds are the loop's own, evaluation excluded). Writes OUT/curve.json, OUT/curve.md and
OUT/curve.png (two panels).

    python benchmarks/methods_curve.py                                  # SmolLM2-135M, SST-2, 200 steps
    python benchmarks/methods_curve.py --model qwen2.5-coder-0.5b --steps 300 --eval-every 50 --max-eval 200
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from softprompt import TrainConfig, get_task, load_model, train
from softprompt.tasks import dev_sample
from softprompt.io import atomic_write_text, write_json
from softprompt.plots import pyplot, read_log, save_figure


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model (default: the embedded SmolLM2-135M)")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--methods", default="prompt,lora,model")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-eval", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/methods-curve"))
    args = parser.parse_args()

    lm = load_model(args.model, args.precision)
    task = get_task(args.task)
    train_set, dev = task.load("train"), dev_sample(task.load("dev"), args.max_eval)
    metric = task.metrics[0]
    curves, costs = {}, {}
    for method in args.methods.split(","):
        cfg = TrainConfig(method=method, steps=args.steps, batch_size=args.batch_size, eval_every=args.eval_every,
                          seed=args.seed, ema=0.0, embed_step=0)
        out = args.out / method
        result = train(lm, task, cfg, out, train_examples=train_set, dev_examples=dev, overwrite=True)
        curves[method] = curve(out / "log.jsonl", args.batch_size, metric)
        costs[method] = {"trainable_params": result.trainable_params, "bytes_per_task": result.bytes_per_task,
                         "train_examples_per_s": result.train_examples_per_s, "peak_memory": result.peak_memory}
    report = {"model": lm.identity.name, "precision": str(lm.dtype), "task": task.name, "metric": metric,
              "dev_examples": len(dev), "settings": vars(args) | {"out": str(args.out)},
              "curves": curves, "costs": costs}
    write_json(args.out / "curve.json", report)
    lines = [f"# {task.name} on {lm.identity.name}: {metric} by method", "",
             "| method | step | examples | train seconds | score |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {m} | {p['step']} | {p['examples']} | {p['seconds']:.0f} | {100 * p['score']:.1f} |"
              for m, pts in curves.items() for p in pts]
    lines += ["", "| method | trainable | bytes/task | train ex/s | peak memory |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {m} | {c['trainable_params']:,} | {c['bytes_per_task']:,} | {c['train_examples_per_s']:.1f} | "
              f"{c['peak_memory'] / 2**30:.1f} GiB |" for m, c in costs.items()]
    atomic_write_text(args.out / "curve.md", "\n".join(lines) + "\n")
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for m, pts in curves.items():
        for ax, key in zip(axes, ("examples", "seconds")):
            ax.plot([p[key] for p in pts], [100 * p["score"] for p in pts], "o-", label=m)
    for ax, label in zip(axes, ("training examples", "training seconds")):
        ax.set_xlabel(label)
        ax.set_ylabel(f"dev {metric} (%)")
        ax.legend()
    fig.suptitle(f"{task.name} on {lm.identity.name} ({len(dev)} dev examples)")
    fig.tight_layout()
    save_figure(fig, args.out / "curve.png")
    print(json.dumps(costs, indent=1))
    print(f"wrote {args.out}/curve.json, curve.md, curve.png")


if __name__ == "__main__":
    main()
