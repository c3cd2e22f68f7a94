"""A study's table (JSON, Markdown) and figure (PNG) from its cells' results.

One row per model x series x task: mean and spread over seeds of the primary metric, with the
cost columns (train examples/s, peak memory, trainable parameters, bytes per task). The
figure is Lester et al.'s Fig. 1 (or Fig. 3 for length/init): the score averaged over tasks
against model parameters on a log axis, one line per series, error bars over seeds; the
scale study adds a second panel, each method's gap to model tuning per size.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from softprompt.io import atomic_write_text, write_report_json
from softprompt.plots import pyplot, save_figure
from softprompt.stats import mean, mean_std

OUTPUTS = ("table.json", "table.md", "figure.png")
BASELINE = "model"  # the series the scale study measures gaps to


def build_table(
    kind: str,
    cfg,
    results: Sequence[dict],
    machine: dict,
    refused: dict | None = None,
    not_run: Sequence[str] = (),
) -> dict:
    """Rows per (model, series, task), which are also the figure's points (one panel row per
    task); `refused` cells the machine cannot hold and `not_run` cell folders a time limit left."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["cell"]["model"], r["series"], r["cell"]["task"]), []).append(r)
    rows = []
    for (model, series, task), rs in groups.items():
        score, score_std = mean_std([r["score"] for r in rs])
        rows.append(
            {
                "model": model,
                "series": series,
                "task": task,
                "score": score,
                "std": score_std,
                "seeds": sorted(r["cell"]["seed"] for r in rs),
                "model_params": rs[0]["model_params"],
                "train_examples_per_s": mean([r["train_examples_per_s"] for r in rs]),
                "peak_memory": max(r["peak_memory"] for r in rs),
                "trainable_params": rs[0]["trainable_params"],
                "bytes_per_task": rs[0]["bytes_per_task"],
                "precision": rs[0]["precision"],
            }
        )
    rows.sort(key=lambda r: (r["model_params"], _series_order(r["series"]), r["task"]))
    # The figure's points: one per (model, series, task), mean and std over seeds. Not averaged
    # over tasks: a grown table may hold another task for some seeds only.
    points = [{k: r[k] for k in ("model", "series", "task", "score", "std")} | {"params": r["model_params"]}
              for r in rows]
    points.sort(key=lambda p: (p["task"], p["series"], p["params"]))
    return {
        "study": kind,
        "settings": {**cfg.settings(), **_coordinates(cfg, results)},
        "machine": machine,
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows": rows,
        "points": points,
        "refused": [{"model": m, "method": meth, "reason": why} for (m, meth), why in (refused or {}).items()],
        "not_run": list(not_run),
    }


def _series_order(series: str) -> tuple:
    """Prompt lengths in numeric order (5 before 20 before 100), names alphabetically."""
    return (0, int(series), "") if series.isdigit() else (1, 0, series)


def _coordinates(cfg, results: Sequence[dict]) -> dict:
    """The seeds, tasks and models the table holds: this run's and those of cells grown into it
    from earlier runs (run.grown), which may go beyond this run's flags."""
    if not results:
        return {"seeds": cfg.seeds, "tasks": cfg.tasks, "models": cfg.models}

    def union(key: str) -> str:
        return ",".join(str(v) for v in dict.fromkeys(sorted(r["cell"][key] for r in results)))

    models = dict.fromkeys(r["cell"]["model"] for r in sorted(results, key=lambda r: r["model_params"]))
    return {"seeds": union("seed"), "tasks": union("task"), "models": ",".join(models)}


def render_markdown(table: dict) -> str:
    s, m = table["settings"], table["machine"]
    head = "series" if table["study"] != "scale" else "method"
    lines = [
        f"# study {table['study']}",
        "",
        f"{s['steps']} steps of batch {s['batch_size']}, seeds {s['seeds']}, dev sample {s['max_eval']}; "
        f"{m['processor']} ({m['threads']} threads; flags {' '.join(m['cpu_flags']) or 'none'}), "
        f"{m['cuda'] or 'no GPU'}, torch {m['torch']}.",
        "",
        f"| model | params | {head} | task | score (± std) | seeds | train ex/s | peak memory | trainable "
        "| bytes/task | precision |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in table["rows"]:
        speed = f"{r['train_examples_per_s']:.1f}" if r["trainable_params"] else "-"  # zero-shot trains nothing
        lines.append(
            f"| {r['model']} | {r['model_params'] / 1e6:.0f}M | {r['series']} | {r['task']} | "
            f"{100 * r['score']:.1f} ± {100 * r['std']:.1f} | {len(r['seeds'])} | "
            f"{speed} | "
            f"{r['peak_memory'] / 2**30:.1f} GiB | {r['trainable_params']:,} | {_size(r['bytes_per_task'])} | "
            f"{r['precision']} |"
        )
    for r in table["refused"]:
        lines.append(f"\nRefused: {r['model']} {r['method']}: {r['reason']}")
    if table.get("not_run"):  # tables written before the time limit existed lack the key
        lines.append(f"\nNot run (time limit; the same command resumes): {', '.join(table['not_run'])}")
    return "\n".join(lines) + "\n"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _params(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def _size_axis(ax, sizes: Sequence[int]) -> None:
    """A log axis of model parameters ticked at the models' own sizes (135M ... 1.78B)."""
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sizes, [_params(n) for n in sizes])
    ax.set_xlabel("model parameters")


def plot(table: dict, out_path: Path) -> Path:
    """One row of panels per task: score against model parameters (log axis), one line per
    series, error bars over seeds; the scale study adds the gap to model tuning per size."""
    plt = pyplot()
    gap = table["study"] == "scale" and any(p["series"] == BASELINE for p in table["points"])
    tasks = sorted({p["task"] for p in table["points"]})
    fig, axes = plt.subplots(
        len(tasks), 2 if gap else 1, figsize=(12 if gap else 7, 4.5 * len(tasks)), squeeze=False
    )
    names = {p["series"] for p in table["points"]}
    series = sorted(names, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else s))  # lengths by number
    colour = {name: f"C{i % 10}" for i, name in enumerate(series)}  # one colour per series in every panel
    sizes = sorted({p["params"] for p in table["points"]})
    for row, task in zip(axes, tasks):
        points = [p for p in table["points"] if p["task"] == task]
        ax = row[0]
        for name in series:
            pts = sorted((p for p in points if p["series"] == name), key=lambda p: p["params"])
            if not pts:
                continue
            ax.errorbar(
                [p["params"] for p in pts], [100 * p["score"] for p in pts], yerr=[100 * p["std"] for p in pts],
                marker="o", capsize=3, label=name, color=colour[name],
            )
        _size_axis(ax, sizes)
        ax.set_ylabel(f"{task} dev score (%)")
        ax.set_title(f"study {table['study']}, {task}: {table['settings']['steps']} steps per cell")
        ax.legend(title={"scale": "method", "length": "prompt length", "init": "init"}[table["study"]])
        if gap:
            ax2 = row[1]
            base = {p["model"]: p["score"] for p in points if p["series"] == BASELINE}
            for name in series:
                pts = sorted((p for p in points if p["series"] == name and p["model"] in base),
                             key=lambda p: p["params"])
                if name == BASELINE or not pts:
                    continue
                gaps = [100 * (p["score"] - base[p["model"]]) for p in pts]
                ax2.plot([p["params"] for p in pts], gaps, "o-", label=name, color=colour[name])
            ax2.axhline(0, color="grey", lw=1)
            _size_axis(ax2, sizes)
            ax2.set_ylabel("score minus model tuning (points)")
            ax2.set_title(f"{task}: gap to model tuning")
            if len(series) > 1:
                ax2.legend()
    fig.tight_layout()
    return save_figure(fig, out_path)


def write_outputs(table: dict, out: Path) -> None:
    """table.json, table.md and figure.png in `out`, each written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_report_json(out / "table.json", table)
    atomic_write_text(out / "table.md", render_markdown(table))
    if table["points"]:
        plot(table, out / "figure.png")
