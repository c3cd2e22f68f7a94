"""The transfer study: does starting from a source prompt help, beyond seed noise?

Every target trains to convergence (early stopping on its dev sample, `cfg.patience`) from
each initialisation, with the same seeds:

    vocab        sampled vocabulary, the paper's default: the baseline every gain is over
    labels       the class label words (classification targets)
    <source>     every library source not trained on the target's own data (`Entry.trained_on`)
    retrieved    the best on dev of the top-k sources most similar to the target (SPoT §4):
                 no runs of its own, it is the chosen source's runs

Per (target, init): mean, std, and the gain over vocab paired by seed (`stats.paired`:
bootstrap interval, exact sign-flip and Wilcoxon p-values, and a plain verdict), with the
sign-flip p adjusted by Holm over the target's inits (with a dozen sources, one p < 0.05 in
the family is likely by chance alone). Then the similarity-vs-gain Spearman correlation per
target (with its permutation p) and pooled, and the SPoT Table 3 analogue (baseline, oracle,
best of top-k). Output folder:

    OUT/<target>/<init>/seed<s>/   one run (train.py layout): finished runs are reused and
                                   cut-short ones resumed, so the study continues where it stopped
    OUT/study.json, study.md       every score, test, similarity, correlation and the retrieval table
    OUT/heatmap.png                gain over vocab (points), targets x inits; * = significant

`transfer-report` merges studies run apart into one report; its study.json names each
target's study folder (`runs`), where its runs stay.

The target's task embedding is its first seed's vocab run (at the embedding step, or its best
prompt: `embedding` late). Under torchrun the runs are spread over the workers and rank 0
writes the report.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from softprompt import distributed as dp
from softprompt.config import SIGNIFICANCE, SpotConfig, TrainConfig, embed_step_for
from softprompt.errors import ConfigError
from softprompt.io import atomic_write_text, load_prompt, write_report_json
from softprompt.models.loading import LoadedModel
from softprompt.plots import pyplot, save_figure
from softprompt.spot import library, similarity
from softprompt.spot.stats import holm, paired, seeds_needed, smallest_p, spearman_p
from softprompt.stats import mean, std
from softprompt.spot.transfer import train_once
from softprompt.tasks.base import Task
from softprompt.tasks.metrics import spearman_r

BASE, LABELS, RETRIEVED = "vocab", "labels", "retrieved"


@dataclass
class StudyReport:
    targets: list[str]
    metrics: dict[str, str]  # target -> primary metric
    seeds: list[int]
    scores: dict[str, dict[str, list[float]]]  # target -> init -> per-seed dev score
    sources: dict[str, list[str]]  # target -> the sources it may use
    similarities: dict[str, dict[str, dict[str, float]]]  # target -> source -> measure -> value
    top_k: int
    spot: SpotConfig = field(default_factory=SpotConfig)
    runs: dict[str, str] = field(default_factory=dict)  # target -> the study folder holding its runs, if elsewhere
    at_chance: list[str] = field(default_factory=list)  # sources that did not beat their constant baseline

    def ranked(self, target: str, measure: str, learned_first: bool | None = None) -> list[str]:
        """`target`'s sources, most similar first; `learned_first` (default: the configured one)
        puts the sources at chance last, as `transfer.retrieve` does."""
        first = self.spot.learned_first if learned_first is None else learned_first
        return sorted(
            self.sources[target],
            key=lambda s: (first and s in self.at_chance, -self.similarities[target][s][measure]),
        )

    def best_of(self, target: str, names: list[str]) -> str | None:
        return max(names, key=lambda s: mean(self.scores[target][s])) if names else None

    def retrieved(self, target: str) -> str | None:
        """The source retrieval picks: best on dev among the top-k by the configured measure."""
        return self.best_of(target, self.ranked(target, self.spot.measure)[: self.top_k])

    def inits(self, target: str) -> dict[str, list[float]]:
        """init -> scores, the retrieved row included (as the chosen source's scores)."""
        rows = dict(self.scores[target])
        chosen = self.retrieved(target)
        if chosen is not None:
            rows[RETRIEVED] = self.scores[target][chosen]
        return rows

    def tests(self) -> dict[str, dict[str, dict]]:
        """target -> init -> `Paired.to_dict()` plus `p_holm`: the sign-flip p adjusted over the
        target's family of inits (labels and every source; the retrieved row is one of them and
        takes its source's adjusted p)."""
        out = {}
        for t in self.targets:
            base = self.scores[t][BASE]
            tests = {i: paired(s, base).to_dict() for i, s in self.inits(t).items() if i != BASE}
            family = [i for i in tests if i != RETRIEVED]
            for i, p in zip(family, holm([tests[i]["p_sign_flip"] for i in family])):
                tests[i]["p_holm"] = p
            if RETRIEVED in tests:
                tests[RETRIEVED]["p_holm"] = tests[self.retrieved(t)]["p_holm"]
            out[t] = tests
        return out

    def similarity_and_gain(self, target: str, measure: str) -> tuple[list[float], list[float]]:
        """`target`'s sources as two parallel lists: similarity under `measure`, mean gain over vocab."""
        base = mean(self.scores[target][BASE])
        sources = self.sources[target]
        return ([self.similarities[target][src][measure] for src in sources],
                [mean(self.scores[target][src]) - base for src in sources])

    def correlation_p(self) -> dict[str, dict[str, float]]:
        """measure -> target -> permutation p of its similarity-vs-gain Spearman (nan under 3 sources)."""
        out = {}
        for m in similarity.MEASURES:
            pairs = {t: self.similarity_and_gain(t, m) for t in self.targets}
            out[m] = {t: spearman_p(s, g) if len(s) > 2 else math.nan for t, (s, g) in pairs.items()}
        return out

    def correlations(self) -> dict[str, dict[str, float]]:
        """measure -> Spearman of similarity vs gain: per target, their mean, and pooled over pairs."""
        out = {}
        for m in similarity.MEASURES:
            per, sims, gains = {}, [], []
            for t in self.targets:
                s, g = self.similarity_and_gain(t, m)
                per[t] = spearman_r(s, g, math.nan) if len(s) > 1 else math.nan
                sims, gains = sims + s, gains + g
            finite = [v for v in per.values() if math.isfinite(v)]
            out[m] = {
                **per,
                "mean": mean(finite) if finite else math.nan,
                "pooled": spearman_r(sims, gains, math.nan) if len(sims) > 2 else math.nan,  # 2 points: always ±1
            }
        return out

    def most_sources(self) -> int:
        """The most sources any target has: the largest k a best-of-top-k row can have."""
        return max((len(v) for v in self.sources.values()), default=0)

    def retrieval(self) -> list[dict]:
        """SPoT Table 3: baseline, oracle, best of top-k per measure; mean score (%) and change (points)."""
        most = self.most_sources()
        ks = sorted({k for k in (1, self.top_k, most) if 1 <= k <= most})

        def row(method: str, pick) -> dict:
            per = {t: 100 * mean(self.scores[t][pick(t)]) for t in self.targets if pick(t) is not None}
            change = [per[t] - 100 * mean(self.scores[t][BASE]) for t in per]
            return {"method": method, "score": mean(list(per.values())), "change": mean(change), "per_target": per}

        rows = [row("baseline (vocab)", lambda t: BASE), row("oracle", lambda t: self.best_of(t, self.sources[t]))]
        # Both orders when some source is at chance (they differ only then), the configured one first.
        orders = [self.spot.learned_first] + ([not self.spot.learned_first] if self.at_chance else [])
        for first in orders:
            order = ", learned first," if first and self.at_chance else ""
            for m in similarity.MEASURES:
                for k in ks:
                    pick = lambda t, m=m, k=k, first=first: self.best_of(t, self.ranked(t, m, first)[:k])  # noqa: E731
                    rows.append(row(f"{m}{order} best of top-{k}", pick))
        return rows

    @classmethod
    def from_dict(cls, data: dict) -> "StudyReport":
        """A report read back from study.json."""
        keys = ("targets", "metrics", "seeds", "scores", "sources", "similarity", "top_k")
        # A report from before learned-first retrieval ranked by similarity alone and recorded no at_chance.
        spot = SpotConfig(data["measure"], data["embedding"], data.get("learned_first", False))
        return cls(*(data[k] for k in keys), spot=spot, runs=data.get("runs", {}), at_chance=data.get("at_chance", []))

    def to_dict(self) -> dict:
        return {
            "targets": self.targets,
            "metrics": self.metrics,
            "seeds": self.seeds,
            "top_k": self.top_k,
            "measure": self.spot.measure,
            "embedding": self.spot.embedding,
            "learned_first": self.spot.learned_first,
            "at_chance": self.at_chance,
            "scores": self.scores,
            "sources": self.sources,
            "retrieved": {t: self.retrieved(t) for t in self.targets},
            "tests": self.tests(),
            "similarity": self.similarities,
            "correlation": self.correlations(),
            "correlation_p": self.correlation_p(),
            "retrieval": self.retrieval(),
            "runs": self.runs,
        }

    def seed_counts(self) -> dict[str, int]:
        """target -> the seeds its runs have (targets of a merged report may differ)."""
        return {t: len(self.scores[t][BASE]) for t in self.targets}

    @classmethod
    def merge(cls, reports: list["StudyReport"]) -> "StudyReport":
        """One report over the targets of several studies (each run with its own seeds and
        sources), so the table, correlation and retrieval cover them all."""
        if len({(r.spot.measure, r.spot.embedding, r.spot.learned_first, r.top_k) for r in reports}) > 1:
            raise ConfigError("studies to merge differ in --measure, --embedding, --learned-first or --top-k")
        targets = [t for r in reports for t in r.targets]
        twice = sorted({t for t in targets if targets.count(t) > 1})
        if twice:
            raise ConfigError(f"target {', '.join(twice)} is in more than one study; merge each target once")

        def union(field: str) -> dict:
            return {k: v for r in reports for k, v in getattr(r, field).items()}

        seeds = sorted({s for r in reports for s in r.seeds})
        first = reports[0]
        at_chance = sorted({s for r in reports for s in r.at_chance})
        return cls(targets, union("metrics"), seeds, union("scores"), union("sources"), union("similarities"),
                   first.top_k, first.spot, union("runs"), at_chance)

    def markdown(self) -> str:
        tests = self.tests()
        counts = self.seed_counts()
        fewest = min(counts.values())
        seeds = (f"{fewest} seeds" if len(set(counts.values())) == 1
                 else "seeds " + ", ".join(f"{t} {n}" for t, n in counts.items()))
        lines = [
            f"### Transfer study: dev score (%), {seeds}, gain over vocab with 95% CI and paired p",
            "",
            "| target | init | mean ± std | gain (points) | 95% CI | p sign-flip | p Wilcoxon | p Holm | verdict |",
            "|---|---|---:|---:|---|---:|---:|---:|---|",
        ]
        significant, after_holm = set(), set()
        for t in self.targets:
            for init, scores in self.inits(t).items():
                shown = f"{100 * mean(scores):.1f} ± {100 * std(scores):.1f}"
                name = f"retrieved ({self.retrieved(t)})" if init == RETRIEVED else init
                if init == BASE:
                    lines.append(f"| {t} ({self.metrics[t]}) | {name} | {shown} | | | | | | baseline |")
                    continue
                r = tests[t][init]
                holm_ok = r["p_holm"] < SIGNIFICANCE
                verdict = (r["word"] + (", also after Holm" if holm_ok else " (not after Holm)")
                           if r["significant"] else "not significant")
                if r["significant"] and r["gain"] > 0 and init != LABELS:
                    significant.add(t)
                    if holm_ok:
                        after_holm.add(t)
                lines.append(
                    f"| {t} | {name} | {shown} | {100 * r['gain']:+.1f} | {100 * r['ci_low']:+.1f} to "
                    f"{100 * r['ci_high']:+.1f} | {r['p_sign_flip']:.3g} | {r['p_wilcoxon']:.3g} | "
                    f"{r['p_holm']:.3g} | {verdict} |"
                )
        smallest = smallest_p(fewest)
        lines += [
            "",
            f"Targets with a significant positive gain from a source prompt: {len(significant)} of "
            f"{len(self.targets)} ({', '.join(sorted(significant)) or 'none'}); significant means the exact "
            f"sign-flip p < {SIGNIFICANCE} (with {fewest} seeds no p goes below {smallest:.3g}). After Holm's "
            f"correction over each target's inits: {len(after_holm)} ({', '.join(sorted(after_holm)) or 'none'}).",
            "",
            f"### Similarity ({self.spot.embedding} embeddings) vs gain: Spearman over each target's sources",
            "",
            "| measure | " + " | ".join(self.targets) + " | mean | pooled |",
            "|---|" + "---:|" * (len(self.targets) + 2),
        ]
        ps = self.correlation_p()
        for m, c in self.correlations().items():
            cells = [c[t] for t in self.targets] + [c["mean"], c["pooled"]]
            lines.append(f"| {m} | " + " | ".join("n/a" if math.isnan(v) else f"{v:+.2f}" for v in cells) + " |")
            cells = [ps[m][t] for t in self.targets]
            if any(math.isfinite(v) for v in cells):
                lines.append(f"| {m}, permutation p | " + " | ".join(
                    "n/a" if math.isnan(v) else f"{v:.3g}" for v in cells) + " | | |")
        if min((len(v) for v in self.sources.values()), default=0) < 2:
            lines += ["", "n/a: a rank correlation needs at least two sources for the target."]
        lines += [
            "",
            "### Retrieval (SPoT Table 3): dev score (%), mean over targets",
            "",
            "| method | score | change (points) | " + " | ".join(self.targets) + " |",
            "|---|---:|---:|" + "---:|" * len(self.targets),
        ]
        for r in self.retrieval():
            cells = [f"{r['per_target'][t]:.1f}" if t in r["per_target"] else "–" for t in self.targets]
            lines.append(f"| {r['method']} | {r['score']:.1f} | {r['change']:+.1f} | " + " | ".join(cells) + " |")
        if self.at_chance:
            lines += ["", f"Sources that did not beat their dev sample's constant baseline (last under learned "
                          f"first): {', '.join(self.at_chance)}."]
        return "\n".join(lines) + "\n"


def seeds_note(n: int, family: int) -> str | None:
    """What `n` seeds cannot show with up to `family` inits tested on a target, said before any
    run: None when a gain can be significant even after Holm's correction."""
    lowest = smallest_p(n)
    if lowest >= SIGNIFICANCE:
        return (f"note: with {n} seeds no paired p goes below {lowest:.3g}, so no gain can be called "
                f"significant at {SIGNIFICANCE}; {seeds_needed()} or more seeds can")
    if family * lowest >= SIGNIFICANCE:
        return (f"note: with {n} seeds and {family} inits on a target, no gain can stay significant after "
                f"Holm's correction ({family} x {lowest:.3g} >= {SIGNIFICANCE}); {seeds_needed(family)} seeds can")
    return None


def eligible_sources(entries: list[library.Entry], target: str, names: list[str] | None = None) -> list[str]:
    """The library sources `target` may start from: never one trained on its own data."""
    return [e.name for e in entries if (names is None or e.name in names) and not e.trained_on(target)]


def _cells(
    targets: list[Task], cfg: TrainConfig, seeds: list[int], out: Path, entries, sources, label_init: bool = True
) -> list[tuple]:
    """(task, init, seed, cfg, folder) for every run, the baselines first (retrieval needs them)."""
    cells, rest = [], []
    for task in targets:
        inits = {BASE: replace(cfg, init="vocab", init_from=None)}
        if label_init and task.is_classification:
            inits[LABELS] = replace(cfg, init="labels", init_from=None)
        for entry in entries:
            if entry.name in sources[task.name]:
                inits[entry.name] = replace(cfg, init="file", init_from=str(entry.prompt_dir))
        for init, init_cfg in inits.items():
            for s in seeds:
                cell = (task, init, s, replace(init_cfg, seed=s), out / task.name / init / f"seed{s}")
                (cells if init == BASE else rest).append(cell)
    return cells + rest


def transfer_study(
    lm: LoadedModel,
    targets: list[Task],
    library_dir: Path,
    cfg: TrainConfig,
    seeds: list[int],
    out_dir: Path,
    *,
    source_names: list[str] | None = None,
    top_k: int = 3,
    spot: SpotConfig | None = None,
    label_init: bool = True,
    progress: bool = False,
    context: dp.Context | None = None,
) -> StudyReport:
    """Run (or reuse) every cell, then assemble, test and write the report (rank 0). `label_init`
    False leaves out the class-label runs (a check fixed in advance as sources against vocab)."""
    spot = spot or SpotConfig()
    if len(seeds) < 2:
        raise ConfigError("--seeds: a paired test needs at least two seeds (5 or more for a real study)")
    if len({t.name for t in targets}) != len(targets):
        raise ConfigError("--targets: a name is listed twice")
    ctx = dp.context() if context is None else context
    out_dir = Path(out_dir)
    cfg = replace(cfg, embed_step=embed_step_for(cfg.steps, cfg.embed_step, cfg.warmup_steps, cfg.decay))
    entries = [e for e in library.entries(library_dir) if e.model.fingerprint == lm.identity.fingerprint]
    unknown = sorted(set(source_names or []) - {e.name for e in entries})
    if unknown:
        raise ConfigError(f"--sources {','.join(unknown)}: not in --library {library_dir} for {lm.identity.name}")
    sources = {t.name: eligible_sources(entries, t.name, source_names) for t in targets}
    for t in targets:
        if not sources[t.name]:
            raise ConfigError(f"--targets {t.name}: no library source left once its own data's are excluded")
    cells = _cells(targets, cfg, seeds, out_dir, entries, sources, label_init)
    family = max(len({init for task, init, *_ in cells if task is t and init != BASE}) for t in targets)
    note = seeds_note(len(seeds), family)
    if progress and ctx.main and note:
        tqdm.write(note, file=sys.stderr)
    mine = dp.cells(cells, ctx)
    bar = tqdm(total=len(mine), desc="transfer study", unit="run", disable=not progress)
    with dp.local():
        for task, init, seed, run_cfg, folder in mine:
            bar.set_postfix(target=task.name, init=init, seed=seed)
            train_once(lm, task, run_cfg, folder)
            bar.update(1)
    bar.close()
    dp.barrier(ctx, "the study's runs")
    report = None
    if ctx.main:
        report = _assemble(lm, targets, cells, sources, seeds, out_dir, entries, top_k, spot)
    return dp.broadcast_object(report, ctx) if ctx.active else report


def _assemble(lm, targets, cells, sources, seeds, out_dir, entries, top_k, spot) -> StudyReport:
    scores: dict[str, dict[str, list[float]]] = {t.name: {} for t in targets}
    for task, init, _, _, folder in cells:
        scores[task.name].setdefault(init, []).append(float(load_prompt(folder / "best").metrics[task.metrics[0]]))
    by_name = {e.name: e for e in entries}
    sims = {}
    for task in targets:
        run = out_dir / task.name / BASE / f"seed{seeds[0]}"
        target = load_prompt(run / ("embedding" if spot.embedding == "early" else "best")).weight
        sims[task.name] = {}
        for name in sources[task.name]:
            entry = by_name[name]
            emb = load_prompt(entry.embedding_dir if spot.embedding == "early" else entry.prompt_dir).weight
            sims[task.name][name] = {m: f(target, emb) for m, f in similarity.MEASURES.items()}
    used = {name for names in sources.values() for name in names}
    at_chance = sorted(name for name in used if by_name[name].learned is False)
    report = StudyReport(
        [t.name for t in targets], {t.name: t.metrics[0] for t in targets}, list(seeds), scores, sources, sims, top_k,
        spot, at_chance=at_chance,
    )
    write_report(report, out_dir)
    return report


def write_report(report: StudyReport, out_dir: Path) -> None:
    """study.json, study.md and heatmap.png in `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_report_json(out_dir / "study.json", report.to_dict())
    atomic_write_text(out_dir / "study.md", report.markdown())
    plot_gains(report, out_dir / "heatmap.png")


def plot_gains(report: StudyReport, path: Path) -> Path:
    """Gain over vocab (points), targets (rows) x inits (columns); blank: not allowed; *: significant,
    **: also after Holm over the target's inits."""
    plt = pyplot()
    tests = report.tests()
    labels = [LABELS] if any(LABELS in tests[t] for t in report.targets) else []  # none under --no-label-init
    columns = labels + sorted({s for t in report.targets for s in report.sources[t]}) + [RETRIEVED]
    grid = [[100 * tests[t][c]["gain"] if c in tests[t] else math.nan for c in columns] for t in report.targets]
    finite = [abs(v) for row in grid for v in row if math.isfinite(v)]
    span = max(finite, default=1.0) or 1.0
    fig, ax = plt.subplots(figsize=(0.9 * len(columns) + 2.5, 0.7 * len(report.targets) + 1.8))
    image = ax.imshow(grid, cmap="RdBu", vmin=-span, vmax=span)
    ax.set_xticks(range(len(columns)), columns, rotation=35, ha="right")
    ax.set_yticks(range(len(report.targets)), report.targets)
    for i, t in enumerate(report.targets):
        for j, c in enumerate(columns):
            if c in tests[t]:
                test = tests[t][c]
                star = "" if not test["significant"] else "**" if test["p_holm"] < SIGNIFICANCE else "*"
                dark = abs(grid[i][j]) > 0.6 * span  # white on the deep ends of the colour scale
                ax.text(j, i, f"{grid[i][j]:+.1f}{star}", ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
    ax.set_xlabel("initialisation (source prompt)")
    ax.set_ylabel("target task")
    counts = sorted(set(report.seed_counts().values()))
    seeds = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    # Two lines: one line of title is wider than the figure when there are few columns.
    ax.set_title(
        f"gain over sampled vocabulary (points, {seeds} seeds)\n* p < {SIGNIFICANCE}, ** also after Holm", fontsize=10
    )
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
