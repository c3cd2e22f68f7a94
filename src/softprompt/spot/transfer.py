"""Soft prompt transfer (SPoT §3): start a target task's prompt from a source task's prompt.

`transfer` trains the target from every source prompt and, as the baseline, from the
default initialisation (sampled vocabulary), with the same steps, data and seeds, and
reports the mean ± std of the target's dev score per initialisation. `retrieve` ranks
library sources by the similarity of their task embeddings to the target's (SPoT §4);
the target's own embedding is the baseline run of the first seed at --embed-step, which
costs nothing extra. Output folder:

    OUT/baseline/seed<s>/        a target run from the default init (train.py layout)
    OUT/from-<source>/seed<s>/   a target run from a source prompt
    OUT/transfer.json            every score, the chosen source, the gain
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from softprompt.config import embed_step_for
from softprompt.errors import ConfigError
from softprompt.io import load_prompt, read_json, resolve_prompt_dir, write_report_json
from softprompt.models.loading import LoadedModel
from softprompt.spot import library, similarity
from softprompt.spot.stats import Paired, holm, paired
from softprompt.stats import mean, std
from softprompt.tasks.mixture import Mixture
from softprompt.tasks.base import Task
from softprompt.train import TrainConfig, initial_prompt, prompt_digest, train

BASELINE = "baseline"


@dataclass
class TransferReport:
    """Target dev scores (primary metric, best on dev) per initialisation and seed."""

    task: str
    metric: str
    seeds: list[int]
    steps: int
    baseline_init: str
    baseline: list[float]
    sources: dict[str, list[float]] = field(default_factory=dict)
    retrieved: list[tuple[str, dict[str, float]]] = field(default_factory=list)
    learned_first: bool | None = None  # how `retrieved` was ordered (None: sources were given, not retrieved)

    @property
    def best_source(self) -> str | None:
        """The source whose transfer scores best on dev (mean over seeds)."""
        return max(self.sources, key=lambda s: mean(self.sources[s])) if self.sources else None

    @property
    def gain(self) -> float | None:
        """Mean dev score of the best source minus the baseline's (metric units, 0-1)."""
        best = self.best_source
        return None if best is None else mean(self.sources[best]) - mean(self.baseline)

    def significance(self) -> dict[str, Paired]:
        """Per source: its gain over the baseline, paired by seed, with interval and p-values."""
        return {name: paired(scores, self.baseline) for name, scores in self.sources.items()}

    def holm(self, tests: dict[str, Paired] | None = None) -> dict[str, float]:
        """Per source: its sign-flip p adjusted by Holm over every source tried (the best of
        several sources is more often lucky than one source fixed in advance). `tests`: the
        `significance()` already computed, if the caller has it."""
        tests = self.significance() if tests is None else tests
        return dict(zip(tests, holm([t.p_sign_flip for t in tests.values()])))

    def to_dict(self) -> dict:
        significance = self.significance()
        adjusted = self.holm(significance)
        tests = {name: {**t.to_dict(), "p_holm": adjusted[name]} for name, t in significance.items()}
        return {**asdict(self), "best_source": self.best_source, "gain": self.gain, "significance": tests}

    def table(self) -> str:
        """A plain-text table: one row per initialisation, mean ± std over seeds, gain."""
        seeds = ",".join(map(str, self.seeds))
        lines = [
            f"target {self.task}: dev {self.metric} (%), {self.steps} steps, seeds {seeds}",
            f"{'init':28s} {'mean ± std':>14s} {'gain':>7s}   per seed",
        ]
        base = mean(self.baseline)
        rows = [(f"{self.baseline_init} ({BASELINE})", self.baseline, None)]
        rows += [(f"from {name}", scores, mean(scores) - base) for name, scores in self.sources.items()]
        for label, scores, gain in rows:
            shown = f"{100 * mean(scores):6.2f} ± {100 * std(scores):5.2f}"
            lines.append(
                f"{label:28s} {shown:>14s} {'' if gain is None else f'{100 * gain:+7.2f}':>7s}   "
                + " ".join(f"{100 * s:.2f}" for s in scores)
            )
        if self.best_source is not None:
            lines.append(f"best source on dev: {self.best_source} ({100 * self.gain:+.2f} points over {BASELINE})")
            tests = self.significance()
            adjusted = self.holm(tests)
            for name, test in tests.items():
                line = f"gain of {name} over {BASELINE}: {test.statement()}"
                if len(tests) > 1:
                    verdict = test.word if adjusted[name] < test.level else "not significant"
                    line += f"; after Holm over the {len(tests)} sources tried: p = {adjusted[name]:.3g}, {verdict}"
                lines.append(line)
        return "\n".join(lines)


def run_state(out_dir: Path, cfg: TrainConfig, init_digest: str | None = None) -> str:
    """What `out_dir` holds for a run with settings `cfg`: "done" (finished: every step, or
    stopped early by --patience), "partial" (a checkpoint to resume), "other" (a run with other
    settings) or "none". `init_digest`: the `prompt_digest` of the --init-from prompt as it is
    now; a run that started from other numbers (a library entry rebuilt in place) is "other"."""
    trainer = out_dir / "checkpoint" / "trainer.json"
    if not trainer.is_file():
        return "none"
    counters = read_json(trainer)
    best = out_dir / "best" / "prompt.json"
    settings = read_json(best).get("training", {}) if best.is_file() else None
    if settings is None:  # no dev evaluation yet: compare with the checkpoint's prompt
        settings = read_json(out_dir / "checkpoint" / "prompt" / "prompt.json").get("training", {})
    if any(settings.get(k) != v for k, v in asdict(cfg).items() if k != "init" and k in settings):
        return "other"
    if settings.get("requested_init", cfg.init) != cfg.init:
        return "other"
    if init_digest is not None and settings.get("init_from_digest") != init_digest:
        return "other"
    stopped = bool(cfg.patience) and counters.get("evals_since_best", 0) >= cfg.patience
    return "done" if best.is_file() and (counters["step"] == cfg.steps or stopped) else "partial"


def train_once(
    lm: LoadedModel,
    task: Task | Mixture,
    cfg: TrainConfig,
    out_dir: Path,
    progress: bool = False,
    *,
    refuse_other: bool = False,
) -> float:
    """Train one run and return its best dev score. A finished run with the same settings in
    `out_dir` is reused and an interrupted one resumed, so a grid picks up where it stopped;
    a run with other settings is replaced (or refused, with `refuse_other`)."""
    digest = prompt_digest(initial_prompt(lm, task, cfg)[0]) if cfg.init_from else None
    state = run_state(out_dir, cfg, digest)
    if state == "done":
        return float(load_prompt(out_dir / "best").metrics[task.metrics[0]])
    if state == "other" and refuse_other:
        raise ConfigError(
            f"{out_dir}: holds a run with other settings (use the settings it was made with, or another --out)"
        )
    if progress:
        tqdm.write(f"-> {out_dir}" + (" (resumed)" if state == "partial" else ""))
    result = train(lm, task, cfg, out_dir, resume=state == "partial", overwrite=state != "partial", progress=progress)
    return float(result.best.metrics[task.metrics[0]])


def run_baseline(
    lm: LoadedModel,
    task: Task,
    cfg: TrainConfig,
    seeds: list[int],
    out_dir: Path,
    init: str = "vocab",
    progress: bool = False,
) -> list[float]:
    """Target runs from the default initialisation, one per seed."""
    if init == "file":
        raise ConfigError("--baseline-init file: the baseline starts from no source prompt")
    base = replace(cfg, init=init, init_from=None)
    return [train_once(lm, task, replace(base, seed=s), out_dir / BASELINE / f"seed{s}", progress) for s in seeds]


def run_transfers(
    lm: LoadedModel,
    task: Task,
    cfg: TrainConfig,
    seeds: list[int],
    sources: dict[str, Path],
    out_dir: Path,
    progress: bool = False,
) -> dict[str, list[float]]:
    """Target runs from each source prompt, one per seed."""
    scores = {}
    for name, source in sources.items():
        start = replace(cfg, init="file", init_from=str(resolve_prompt_dir(Path(source))))
        runs = out_dir / f"from-{name}"
        scores[name] = [train_once(lm, task, replace(start, seed=s), runs / f"seed{s}", progress) for s in seeds]
    return scores


def target_embedding_dir(out_dir: Path, seeds: list[int], at: str = "early") -> Path:
    """The target's task embedding: the first seed's baseline run at --embed-step (early) or its best prompt (late)."""
    path = out_dir / BASELINE / f"seed{seeds[0]}" / ("embedding" if at == "early" else "best")
    if not path.is_dir():
        raise ConfigError(f"{path}: no target embedding (the baseline runs need --embed-step)")
    return path


def retrieve(
    lm: LoadedModel,
    embedding_dir: Path,
    library_dir: Path,
    by: str = "avg_cosine",
    at: str = "early",
    exclude: str | None = None,
    learned_first: bool = True,
) -> list[tuple[str, dict[str, float]]]:
    """Library entries for this model, most similar task embedding first; `at` picks the
    library's embeddings (early/late, as the target's); `exclude`: a task whose own data must
    not have trained the source (the target); `learned_first`: entries known not to beat their
    constant baseline (`Entry.learned` False) come after all others, each group by similarity."""
    target = load_prompt(embedding_dir).weight
    found = [e for e in library.entries(library_dir) if exclude is None or not e.trained_on(exclude)]
    if not found:
        raise ConfigError(f"--library {library_dir}: every entry was trained on {exclude}'s own data")
    ranked = similarity.rank(target, library.embeddings(library_dir, lm.identity, [e.name for e in found], at), by)
    if learned_first:
        at_chance = {e.name for e in found if e.learned is False}
        ranked.sort(key=lambda item: item[0] in at_chance)  # stable: similarity order within each group
    return ranked


def transfer(
    lm: LoadedModel,
    task: Task,
    cfg: TrainConfig,
    seeds: list[int],
    out_dir: Path,
    *,
    sources: dict[str, Path] | None = None,
    library_dir: Path | None = None,
    top_k: int | None = None,
    by: str = "avg_cosine",
    at: str = "early",
    baseline_init: str = "vocab",
    learned_first: bool = True,
    progress: bool = False,
) -> TransferReport:
    """Baseline and transfer runs for `task`; sources given, or the top-k retrieved from a library.

    Returns:
        Every score; `best_source` is the source best on dev, as SPoT keeps the best of its top-k.
    """
    if not seeds:
        raise ConfigError("--seeds: give at least one seed")
    if bool(sources) == bool(top_k):
        raise ConfigError("give either --source or --top-k/--auto with --library")
    out_dir = Path(out_dir)
    cfg = replace(cfg, embed_step=embed_step_for(cfg.steps, cfg.embed_step, cfg.warmup_steps, cfg.decay))
    baseline = run_baseline(lm, task, cfg, seeds, out_dir, baseline_init, progress)
    retrieved: list[tuple[str, dict[str, float]]] = []
    if top_k:
        if library_dir is None:
            raise ConfigError("--top-k/--auto need --library")
        embedding = target_embedding_dir(out_dir, seeds, at)
        retrieved = retrieve(lm, embedding, library_dir, by, at, exclude=task.name, learned_first=learned_first)
        sources = {name: library.get(library_dir, name).prompt_dir for name, _ in retrieved[:top_k]}
    report = TransferReport(
        task.name, task.metrics[0], list(seeds), cfg.steps, baseline_init, baseline, retrieved=retrieved,
        learned_first=learned_first if top_k else None,
    )
    report.sources = run_transfers(lm, task, cfg, seeds, sources or {}, out_dir, progress)
    write_report_json(out_dir / "transfer.json", report.to_dict())
    return report
