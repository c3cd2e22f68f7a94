"""The bench table: per-task scores, averages, and their JSON / Markdown / bar-chart forms.

Scoring follows the GLUE and SuperGLUE papers: a task with several metrics (CB accuracy
and macro F1, MultiRC F1a and EM, ...) is shown as "a/b" and scores the mean of them; the
overall average is the mean of the task scores of the tasks that trained their own
prompt (diagnostic and shift sets, evaluated with another task's prompt, are shown after
it and not averaged). With several seeds each number is the mean over seeds and "±" the
sample standard deviation over seeds of the task score (or of the average).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from softprompt.io import atomic_write_text, write_report_json
from softprompt.plots import pyplot, save_figure
from softprompt.stats import mean, std
from softprompt.tasks.base import Task

COLUMN = {
    "boolq": "BoolQ",
    "cb": "CB",
    "multirc": "MultiRC",
    "record": "ReCoRD",
    "rte": "RTE",
    "wsc": "WSC",
    "axb": "AX-b",
    "axg": "AX-g",
    "cola": "CoLA",
    "sst2": "SST-2",
    "mrpc": "MRPC",
    "stsb": "STS-B",
    "qnli": "QNLI",
    "mnli": "MNLI-m",
    "rte_glue": "RTE",
    "wnli": "WNLI",
    "glue_diagnostic": "AX",
    "snli": "SNLI",
    "imdb": "IMDB",
    "anli_r1": "ANLI-R1",
    "anli_r2": "ANLI-R2",
    "anli_r3": "ANLI-R3",
    "squad": "SQuAD",
    "mrqa_squad": "MRQA-SQuAD",
}
METRIC = {
    "accuracy": "acc",
    "f1": "F1",
    "macro_f1": "mF1",
    "matthews": "MCC",
    "pearson": "P",
    "spearman": "S",
    "squad_em": "EM",
    "squad_f1": "F1",
    "multirc_f1a": "F1a",
    "multirc_em": "EM",
    "record_em": "EM",
    "record_f1": "F1",
    "gender_parity": "GPS",
}
# A task's description names its split when it is not the official train/dev pair.
_SPLIT_NOTE = re.compile(r"carved|not available|subset|dev = ", re.IGNORECASE)


def split_note(task: Task) -> str | None:
    """The task's description when its train/dev split is not the official pair, else None."""
    return task.description if _SPLIT_NOTE.search(task.description) else None


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and std, the std None for one seed (the table prints no ± then)."""
    return mean(values), (std(values) if len(values) > 1 else None)


def build_table(
    suite: str, jobs: Sequence, results: Mapping[str, list[dict]], cfg, model: dict, seconds: float
) -> dict:
    """The table as a JSON-ready dict (metrics on their natural scale, as everywhere else).

    Args:
        suite: "superglue", "glue" or "tasks".
        jobs: `suite.Job`s in column order (trained tasks first).
        results: Task name -> one result per seed ({"seed", "metrics", "examples", ...}).
        cfg: The run's `BenchConfig`.
        model: The model identity (`ModelIdentity.to_dict()`).
        seconds: Wall time of this invocation.
    """
    rows, per_seed_avg = [], {}
    for job in jobs:
        task, runs = job.task, results[job.task.name]
        scores = [mean(r["metrics"][m] for m in task.metrics) for r in runs]
        score, score_std = _mean_std(scores)
        rows.append(
            {
                "task": task.name,
                "column": COLUMN.get(task.name, task.name),
                "metrics": list(task.metrics),
                "prompt_of": job.source or task.name,
                "in_average": job.source is None,
                "mean": {m: mean(r["metrics"][m] for r in runs) for m in task.metrics},
                "std": {m: _mean_std([r["metrics"][m] for r in runs])[1] for m in task.metrics},
                "score": score,
                "score_std": score_std,
                "seeds": [{"seed": r["seed"], "metrics": r["metrics"], "score": s} for r, s in zip(runs, scores)],
                "examples": runs[0]["examples"],
                "seconds": sum(r.get("seconds", 0.0) for r in runs),
                "split_note": split_note(task),
                "carved": "carved" in task.description.lower(),
            }
        )
        if job.source is None:
            for r, s in zip(runs, scores):
                per_seed_avg.setdefault(r["seed"], []).append(s)
    averaged = [r["task"] for r in rows if r["in_average"]]
    avg, avg_std = _mean_std([mean(v) for v in per_seed_avg.values()]) if per_seed_avg else (None, None)
    return {
        "suite": suite,
        "model": model,
        "settings": {**cfg.settings(), "seeds": list(cfg.seeds)},
        "scale": "natural (accuracy in [0, 1], correlations in [-1, 1]); the Markdown table shows x100",
        "tasks": rows,
        "average": {"score": avg, "std": avg_std, "tasks": averaged},
        "split_notes": {r["task"]: r["split_note"] for r in rows if r["split_note"]},
        "carved_splits": [r["task"] for r in rows if r["carved"]],
        "wall_seconds": round(seconds, 1),
    }


def _cell(values: Sequence[float], std: float | None) -> str:
    shown = "/".join(f"{100 * v:.1f}" for v in values)
    return shown + (f" ± {100 * std:.1f}" if std is not None else "")


def _header(row: dict) -> str:
    return row["column"] + ("†" if row["split_note"] else "")


def render_markdown(table: dict) -> str:
    """A one-row, paper-style Markdown table (one column per task, then Avg, then the
    sets evaluated with another task's prompt), with its footnotes."""
    own = [r for r in table["tasks"] if r["in_average"]]
    other = [r for r in table["tasks"] if not r["in_average"]]
    s, avg = table["settings"], table["average"]
    label = f"{table['model']['name']}, P={s['prompt_length']}, {s['steps']} step{'s' if s['steps'] != 1 else ''}"
    heads = ["", *(_header(r) for r in own), "Avg", *(_header(r) for r in other)]
    metrics = [
        "metric",
        *("/".join(METRIC.get(m, m) for m in r["metrics"]) for r in own),
        "",
        *("/".join(METRIC.get(m, m) for m in r["metrics"]) for r in other),
    ]
    avg_cell = _cell([avg["score"]], avg["std"]) if avg["score"] is not None else "–"
    scores = [
        label,
        *(_cell(list(r["mean"].values()), r["score_std"]) for r in own),
        avg_cell,
        *(_cell(list(r["mean"].values()), r["score_std"]) for r in other),
    ]
    lines = [
        "| " + " | ".join(heads) + " |",
        "|:--|" + "--:|" * (len(heads) - 1),
        "| " + " | ".join(metrics) + " |",
        "| " + " | ".join(scores) + " |",
        "",
        *(f"- {note}" for note in _footnotes(table, own, other)),
    ]
    return "\n".join(lines) + "\n"


def _footnotes(table: dict, own: list[dict], other: list[dict]) -> list[str]:
    s = table["settings"]
    sample = (
        f"a seeded sample of at most {s['max_eval']} examples per task (MultiRC questions and AX-g pairs kept whole)"
        if s["max_eval"]
        else "all examples"
    )
    notes = [
        f"Dev scores x100 on {sample}; one prompt per task, {s['steps']} steps, batch {s['batch_size']}, "
        f"init {s['init']}, evaluated once after the last step"
        + (f", at most {s['max_train']} training examples." if s["max_train"] else "."),
        "Multi-metric tasks show a/b in the order of the metric row and count as their mean; Avg is the mean over "
        + ", ".join(r["column"] for r in own)
        + " (tasks with their own prompt).",
    ]
    if len(s["seeds"]) > 1:
        notes.append(
            f"Mean over seeds {', '.join(map(str, s['seeds']))}; ± is the sample standard deviation over seeds "
            "of the task score (mean of its metrics)."
        )
    for r in other:
        notes.append(
            f"{r['column']}: evaluated with the {COLUMN.get(r['prompt_of'], r['prompt_of'])} prompt; not in Avg."
        )
    for r in table["tasks"]:
        if r["split_note"]:
            kind = "carved split" if r["carved"] else "non-standard split"
            notes.append(f"† {r['column']} ({kind}): {r['split_note']}.")
    return notes


def plot_bars(table: dict, out_path: Path) -> Path:
    """Bar chart of the task scores (x100), Avg and the transfer sets, with ± as error bars."""
    own = [r for r in table["tasks"] if r["in_average"]]
    other = [r for r in table["tasks"] if not r["in_average"]]
    avg = table["average"]
    bars = [(_header(r), r["score"], r["score_std"], "tab:blue") for r in own]
    if avg["score"] is not None:
        bars.append(("Avg", avg["score"], avg["std"], "tab:orange"))
    bars += [(_header(r), r["score"], r["score_std"], "tab:gray") for r in other]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(bars) + 2), 4))
    xs = range(len(bars))
    heights = [100 * b[1] for b in bars]
    errors = [100 * b[2] if b[2] is not None else 0.0 for b in bars]
    ax.bar(xs, heights, yerr=errors if any(errors) else None, color=[b[3] for b in bars], capsize=3)
    for x, h in zip(xs, heights):
        ax.annotate(f"{h:.1f}", (x, h), ha="center", va="bottom" if h >= 0 else "top", fontsize=8)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(list(xs), [b[0] for b in bars], rotation=30, ha="right")
    ax.set_ylabel("dev score (x100; multi-metric tasks: mean)")
    s = table["settings"]
    ax.set_title(
        f"{table['suite']}: {table['model']['name']}, P={s['prompt_length']}, {s['steps']} steps, "
        f"seeds {','.join(map(str, s['seeds']))}"
    )
    fig.tight_layout()
    return save_figure(fig, out_path)


def write_outputs(table: dict, out: Path) -> None:
    """table.json, table.md and table.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    write_report_json(out / "table.json", table)
    atomic_write_text(out / "table.md", render_markdown(table))
    plot_bars(table, out / "table.png")
