"""Plots people would rather look at than read: training curves, benchmark bars."""

from __future__ import annotations

import json
from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_path: Path, dpi: int = 100) -> Path:
    """Write `fig` as PNG atomically (a crash never leaves a half-written file) and close it."""
    out_path = Path(out_path)
    tmp = out_path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=dpi)
    pyplot().close(fig)
    tmp.replace(out_path)
    return out_path


def read_log(log_path: Path) -> list[dict]:
    """The records of a JSONL training log. A line that is not a JSON object (the torn last
    line of a killed run) is skipped."""
    records = []
    for line in Path(log_path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def plot_curve(log_path: Path, out_path: Path, metric: str) -> Path:
    """Training loss (left axis) and dev `metric` (right axis) against step, as PNG."""
    records = read_log(log_path)
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], 100 * r["eval"][metric]) for r in records if "eval" in r and metric in r["eval"]]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    if losses:
        ax.plot(*zip(*losses), color="tab:blue", alpha=0.6, label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss", color="tab:blue")
    if evals:
        ax2 = ax.twinx()
        ax2.plot(*zip(*evals), "o-", color="tab:red", label=f"dev {metric}")
        ax2.set_ylabel(f"dev {metric} (%)", color="tab:red")
    ax.set_title("soft prompt training")
    fig.tight_layout()
    return save_figure(fig, out_path)
