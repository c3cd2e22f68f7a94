"""The transfer grid (SPoT §3-4): every source prompt transferred to every target task.

For each source (a task, or a mixture written "mnli+snli"): reuse its library entry, or
train it from the sampled-vocabulary init (seed 0, embedding at --embed-step) and add it
to the library. For each target: `transfer.transfer` from all sources plus the baseline.
Then relate the gain to task similarity. Output folder:

    OUT/sources/<source>/         source runs (train.py layout, with embedding/)
    OUT/targets/<target>/         transfer.transfer output per target
    OUT/heatmap.png               relative gain over the baseline (%), targets x sources
    OUT/matrix.json, matrix.md    scores, gains, similarities, correlations, retrieval table

The retrieval table follows SPoT Table 3: per similarity measure, the best-on-dev of the
top-k most similar sources (k = 1, 3, ...), against the baseline and the oracle (the best
source of each target). Selection and reporting both use the target dev set, as there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from softprompt import distributed as dp
from softprompt.errors import ConfigError
from softprompt.io import atomic_write_text, load_prompt, resolve_prompt_dir, write_report_json
from softprompt.models.loading import LoadedModel
from softprompt.plots import pyplot, save_figure
from softprompt.config import embed_step_for
from softprompt.spot import library, similarity
from softprompt.tasks.mixture import Mixture
from softprompt.stats import mean, std
from softprompt.spot.transfer import (
    BASELINE,
    TransferReport,
    target_embedding_dir,
    train_once,
    transfer,
)
from softprompt.tasks import get_task
from softprompt.tasks.metrics import pearson_r, spearman_r
from softprompt.train import TrainConfig


@dataclass
class MatrixReport:
    sources: list[str]
    targets: list[str]
    reports: dict[str, TransferReport]  # per target
    similarities: dict[str, dict[str, dict[str, float]]]  # target -> source -> measure -> value

    def relative_gain(self, target: str, source: str) -> float:
        """Transfer over baseline, in percent of the baseline's mean dev score."""
        r = self.reports[target]
        base = mean(r.baseline)
        return 100 * (mean(r.sources[source]) - base) / base if base else math.nan

    def correlations(self) -> dict[str, dict[str, dict[str, float]]]:
        """target -> measure -> {"spearman", "pearson"} of similarity vs relative gain over sources."""
        out = {}
        for t in self.targets:
            gains = [self.relative_gain(t, s) for s in self.sources]
            out[t] = {}
            for m in similarity.MEASURES:
                sims = [self.similarities[t][s][m] for s in self.sources]
                out[t][m] = {"spearman": spearman_r(sims, gains, math.nan), "pearson": pearson_r(sims, gains, math.nan)}
        return out

    def retrieval(self) -> list[dict]:
        """SPoT Table 3 rows: method, mean target score (%) and mean relative change vs baseline (%)."""
        ks = sorted({k for k in (1, 3, 5, len(self.sources)) if k <= len(self.sources)})

        def row(method: str, pick) -> dict:
            scores = [pick(t) for t in self.targets]
            bases = [mean(self.reports[t].baseline) for t in self.targets]
            change = [100 * (s - b) / b if b else math.nan for s, b in zip(scores, bases)]
            return {
                "method": method,
                "score": 100 * mean(scores),
                "change": mean(change),
                "per_target": {t: 100 * s for t, s in zip(self.targets, scores)},
            }

        def best_of(t: str, names: list[str]) -> float:
            return max(mean(self.reports[t].sources[s]) for s in names)

        rows = [
            row("baseline", lambda t: mean(self.reports[t].baseline)),
            row("oracle", lambda t: best_of(t, self.sources)),
        ]
        for m in similarity.MEASURES:
            for k in ks:
                ranked = {t: sorted(self.sources, key=lambda s: -self.similarities[t][s][m]) for t in self.targets}
                rows.append(row(f"{m} best of top-{k}", lambda t: best_of(t, ranked[t][:k])))
        return rows

    def to_dict(self) -> dict:
        return {
            "sources": self.sources,
            "targets": self.targets,
            "scores": {t: r.to_dict() for t, r in self.reports.items()},
            "relative_gain": {t: {s: self.relative_gain(t, s) for s in self.sources} for t in self.targets},
            "similarity": self.similarities,
            "correlation": self.correlations(),
            "retrieval": self.retrieval(),
        }

    def markdown(self) -> str:
        head = "| target | baseline | " + " | ".join(self.sources) + " |"
        title = "### Target dev score (%, mean ± std over seeds when several) and relative gain over baseline (%)"
        lines = [title, "", head, "|" + "---|" * (len(self.sources) + 2)]
        for t in self.targets:
            r = self.reports[t]
            cells = [f"{100 * mean(r.sources[s]):.1f} ({self.relative_gain(t, s):+.1f}%)" for s in self.sources]
            base = f"{100 * mean(r.baseline):.1f}" + (f" ± {100 * std(r.baseline):.1f}" if len(r.baseline) > 1 else "")
            lines.append(f"| {t} ({r.metric}) | {base} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "### Similarity vs relative gain, per target (over the sources)",
            "",
            "| target | measure | Spearman | Pearson | most similar |",
            "|---|---|---|---|---|",
        ]
        for t, per in self.correlations().items():
            for m, c in per.items():
                top = max(self.sources, key=lambda s: self.similarities[t][s][m])
                lines.append(f"| {t} | {m} | {c['spearman']:+.2f} | {c['pearson']:+.2f} | {top} |")
        lines += [
            "",
            "### Retrieval (SPoT Table 3): mean over targets",
            "",
            "| method | score (%) | change vs baseline (%) | " + " | ".join(self.targets) + " |",
            "|" + "---|" * (len(self.targets) + 3),
        ]
        for r in self.retrieval():
            lines.append(
                f"| {r['method']} | {r['score']:.1f} | {r['change']:+.1f} | "
                + " | ".join(f"{r['per_target'][t]:.1f}" for t in self.targets)
                + " |"
            )
        return "\n".join(lines) + "\n"


# Named mixtures a source may be called by (the built-in library's "glue": GLUE without WNLI).
MIXTURES = {"glue": "mnli+qnli+sst2+mrpc+cola+stsb+rte"}


def source_task(name: str, cap: int | None):
    """A source name: a task, a mixture written with "+" (mnli+snli), or a named mixture (glue)."""
    parts = MIXTURES.get(name, name).split("+")
    return get_task(name) if len(parts) == 1 else Mixture(tuple(get_task(p) for p in parts), cap)


def prepare_sources(
    lm: LoadedModel,
    sources: list[str],
    cfg: TrainConfig,
    out_dir: Path,
    library_dir: Path | None,
    cap: int | None = None,
    progress: bool = False,
    context: dp.Context | None = None,
) -> dict[str, tuple[Path, Path]]:
    """source -> (prompt folder, embedding folder): reused from the library, else trained (and added).
    Under torchrun the sources to train are spread over the workers (each trains and adds its own)."""
    ctx = dp.context() if context is None else context
    known = {e.name: e for e in library.entries(library_dir, must_exist=False)} if library_dir else {}
    found, todo = {}, []
    for name in sources:
        entry = known.get(name)
        if entry is not None and entry.meta.get("model", {}).get("fingerprint") == lm.identity.fingerprint:
            found[name] = (entry.prompt_dir, entry.embedding_dir)
        else:
            todo.append(name)
    dp.barrier(ctx, "start-up")  # every worker has read the library before any entry is replaced
    mine = {}
    with dp.local():
        for name in dp.cells(todo, ctx):
            run = out_dir / "sources" / name
            train_once(
                lm,
                source_task(name, cap),
                replace(cfg, init="vocab", init_from=None, seed=0),
                run,
                progress and ctx.main,
            )
            if library_dir:
                entry = library.add(library_dir, run, name, overwrite=True)
                mine[name] = (entry.prompt_dir, entry.embedding_dir)
            else:
                mine[name] = (run / "best", run / "embedding")
    found.update(dp.gather_dict(mine, ctx, "training the sources"))
    return {name: found[name] for name in sources}


def _target_cells(
    lm: LoadedModel,
    targets: list,
    cfg: TrainConfig,
    seeds: list[int],
    out_dir: Path,
    prompts: dict[str, Path],
    progress: bool,
    ctx: dp.Context,
) -> None:
    """Train every target run of the grid (baseline and from each source, per seed), spread
    over the workers; `transfer` then finds them finished and reuses them (`train_once`).
    The settings are the ones `transfer.run_baseline` and `transfer.run_transfers` use."""
    runs = []
    for task in targets:
        t_out = out_dir / "targets" / task.name
        base = replace(cfg, init="vocab", init_from=None)
        runs += [(task, replace(base, seed=s), t_out / BASELINE / f"seed{s}") for s in seeds]
        for name, source in prompts.items():
            start = replace(cfg, init="file", init_from=str(resolve_prompt_dir(Path(source))))
            runs += [(task, replace(start, seed=s), t_out / f"from-{name}" / f"seed{s}") for s in seeds]
    with dp.local():
        for task, run_cfg, folder in dp.cells(runs, ctx):
            train_once(lm, task, run_cfg, folder, progress)
    dp.barrier(ctx, "the target runs")


def transfer_matrix(
    lm: LoadedModel,
    sources: list[str],
    targets: list[str],
    cfg: TrainConfig,
    seeds: list[int],
    out_dir: Path,
    *,
    source_steps: int | None = None,
    library_dir: Path | None = None,
    mixture_cap: int | None = None,
    progress: bool = False,
    context: dp.Context | None = None,
) -> MatrixReport:
    """Train (or reuse) the sources, transfer each to each target, relate gains to similarity.
    Under torchrun the source and target runs are spread over the workers (round robin), and
    rank 0 assembles the grid from the finished runs and writes it."""
    if len(set(sources)) != len(sources) or len(set(targets)) != len(targets):
        raise ConfigError("--sources/--targets: a name is listed twice")
    out_dir = Path(out_dir)
    cfg = replace(cfg, embed_step=embed_step_for(cfg.steps, cfg.embed_step, cfg.warmup_steps, cfg.decay))
    target_tasks = [get_task(t) for t in targets]  # unknown names fail before any training
    source_cfg = replace(cfg, steps=source_steps or cfg.steps)
    ctx = dp.context() if context is None else context
    prepared = prepare_sources(lm, sources, source_cfg, out_dir, library_dir, mixture_cap, progress, ctx)
    if ctx.active:  # spread the target runs; rank 0 then assembles the grid from them and shares it
        prompts = {s: p for s, (p, _) in prepared.items()}
        _target_cells(lm, target_tasks, cfg, seeds, out_dir, prompts, progress and ctx.main, ctx)
        report = None
        if ctx.main:
            with dp.local():
                report = transfer_matrix(
                    lm,
                    sources,
                    targets,
                    cfg,
                    seeds,
                    out_dir,
                    source_steps=source_steps,
                    library_dir=library_dir,
                    mixture_cap=mixture_cap,
                    progress=progress,
                    context=dp.SINGLE,
                )
        return dp.broadcast_object(report, ctx)
    reports, sims = {}, {}
    for task in target_tasks:
        t_out = out_dir / "targets" / task.name
        prompts = {s: p for s, (p, _) in prepared.items()}
        reports[task.name] = transfer(lm, task, cfg, seeds, t_out, sources=prompts, progress=progress)
        target = load_prompt(target_embedding_dir(t_out, seeds)).weight
        sims[task.name] = {
            s: {m: f(target, load_prompt(e).weight) for m, f in similarity.MEASURES.items()}
            for s, (_, e) in prepared.items()
        }
    report = MatrixReport(list(sources), [t.name for t in target_tasks], reports, sims)
    write_report_json(out_dir / "matrix.json", report.to_dict())
    atomic_write_text(out_dir / "matrix.md", report.markdown())
    plot_heatmap(report, out_dir / "heatmap.png")
    return report


def plot_heatmap(report: MatrixReport, path: Path) -> Path:
    """Relative gain (%) over the baseline, targets (rows) x sources (columns), annotated."""
    plt = pyplot()
    grid = [[report.relative_gain(t, s) for s in report.sources] for t in report.targets]
    finite = [abs(v) for row in grid for v in row if math.isfinite(v)]
    span = max(finite, default=1.0) or 1.0
    fig, ax = plt.subplots(figsize=(1.3 * len(report.sources) + 2.5, 0.8 * len(report.targets) + 1.8))
    image = ax.imshow(grid, cmap="RdBu", vmin=-span, vmax=span)
    ax.set_xticks(range(len(report.sources)), report.sources, rotation=30, ha="right")
    ax.set_yticks(range(len(report.targets)), report.targets)
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:+.1f}", ha="center", va="center", fontsize=9)
    ax.set_xlabel("source prompt")
    ax.set_ylabel("target task")
    ax.set_title("transfer: relative gain over sampled-vocabulary init (%)")
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
