"""Which task embedding predicts transfer gain? (SPoT §4, measured here.)

Takes a finished transfer study, or a `transfer-report` of several (its per-target gains of
every source; a report's `runs` names each target's study folder), and recomputes the
similarity of each target to each source under several embeddings:

    library early    the library's embedding/ (its --embed-step) vs the target's study run at that step
    library late     the library's best/ (the converged source) vs the target's best vocab run
    P<L> step <S>    a fresh run of S steps with an L-token prompt, the same init (sampled
                     vocabulary, seed 0) for every task, the raw prompt at step S

and the two library ones again centred (the library's mean token subtracted from both sides, a
remedy for one source looking nearest to every target), each under both cosines (average-token,
per-token), and reports how well each ranks the sources: the Spearman correlation of similarity
with gain per target, its mean and its value pooled over all (target, source) pairs, and the dev
score of the best of the top-k sources.
The best row names the default to choose (`SpotConfig.measure`/`embedding`, --embed-step,
--prompt-length). Output:

    OUT/runs/P<L>-S<S>/<task>/     the embedding runs (reused when finished)
    OUT/embeddings.json, embeddings.md
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from softprompt.config import TrainConfig
from softprompt.errors import ConfigError
from softprompt.io import atomic_write_text, load_prompt, read_json, write_report_json
from softprompt.models.loading import LoadedModel
from softprompt.spot import library, similarity
from softprompt.spot.matrix import source_task
from softprompt.spot.study import BASE, StudyReport
from softprompt.spot.transfer import train_once
from softprompt.stats import mean


def _similarities(targets: dict[str, torch.Tensor], sources: dict[str, torch.Tensor], allowed) -> dict:
    return {
        t: {s: {m: f(targets[t], sources[s]) for m, f in similarity.MEASURES.items()} for s in allowed[t]}
        for t in targets
    }


def _fresh(lm, names: list[str], cfg: TrainConfig, length: int, step: int, out: Path, cap, bar) -> dict:
    """name -> the raw prompt after `step` steps of a `length`-token prompt (vocab init, seed 0)."""
    run_cfg = replace(
        cfg, prompt_length=length, steps=step, embed_step=step, eval_every=step, init="vocab", init_from=None, seed=0
    )
    found = {}
    for name in names:
        folder = out / f"P{length}-S{step}" / name
        train_once(lm, source_task(name, cap), run_cfg, folder)
        found[name] = load_prompt(folder / "embedding").weight
        bar.update(1)
    return found


def embedding_study(
    lm: LoadedModel,
    study_dir: Path,
    library_dir: Path,
    cfg: TrainConfig,
    out_dir: Path,
    *,
    lengths: list[int],
    steps: list[int],
    cap: int | None = None,
    progress: bool = False,
) -> list[dict]:
    """Rows (variant, measure, Spearman per target / mean / pooled, best-of-top-k score), best first."""
    study, run = baseline_runs(study_dir)
    entries = {e.name: e for e in library.entries(library_dir)}
    names = sorted({s for t in study.targets for s in study.sources[t]})
    tasks = names + [t for t in study.targets if t not in names]
    variants: dict[str, dict] = {}
    for label, source_dir, target_dir in (("library early", "embedding_dir", "embedding"), ("library late", "prompt_dir", "best")):
        every = {n: load_prompt(getattr(e, source_dir)).weight.float() for n, e in entries.items()}
        srcs = {n: every[n] for n in names}
        tgts = {t: load_prompt(run[t] / target_dir).weight.float() for t in study.targets}
        variants[label] = _similarities(tgts, srcs, study.sources)
        centre = torch.cat(list(every.values())).mean(0)  # the library's mean token: what every task shares
        variants[f"{label}, centred"] = _similarities(
            {t: w - centre for t, w in tgts.items()}, {n: w - centre for n, w in srcs.items()}, study.sources
        )
    bar = tqdm(total=len(lengths) * len(steps) * len(tasks), desc="embedding runs", unit="run", disable=not progress)
    for length in lengths:
        for step in steps:
            fresh = _fresh(lm, tasks, cfg, length, step, Path(out_dir) / "runs", cap, bar)
            variants[f"P{length} step {step}"] = _similarities(
                {t: fresh[t] for t in study.targets}, fresh, study.sources
            )
    bar.close()
    rows = []
    k = top_k(study)
    for label, sims in variants.items():
        scored = replace(study, similarities=sims)
        corr = scored.correlations()
        table = {r["method"]: r for r in scored.retrieval()}
        for m in similarity.MEASURES:
            top = table[f"{m} best of top-{k}"]
            rows.append(
                {
                    "embedding": label,
                    "measure": m,
                    "spearman": {t: corr[m][t] for t in study.targets},
                    "mean": corr[m]["mean"],
                    "pooled": corr[m]["pooled"],
                    "top1_score": table[f"{m} best of top-1"]["score"],
                    "topk_score": top["score"],
                    "spread": _spread(sims),
                }
            )
    rows.sort(key=lambda r: (-_finite(r["mean"]), -_finite(r["pooled"])))  # ties (2 sources: every r is ±1): pooled
    write_report_json(Path(out_dir) / "embeddings.json", {"study": str(study_dir), "top_k": k, "rows": rows})
    atomic_write_text(Path(out_dir) / "embeddings.md", markdown(rows, study))
    return rows


def baseline_runs(study_dir: Path) -> tuple[StudyReport, dict[str, Path]]:
    """The study and each target's first-seed vocab run (its task embedding); one line if a run is gone.
    Cheap: the CLI calls it before loading the model."""
    study = StudyReport.from_dict(read_json(Path(study_dir) / "study.json"))
    run = {t: Path(study.runs.get(t, study_dir)) / t / BASE / f"seed{study.seeds[0]}" for t in study.targets}
    for t, folder in run.items():
        if not (folder / "best").is_dir():
            raise ConfigError(f"{study_dir}: target {t}'s baseline run {folder} is missing (was its study moved?)")
    return study, run


def top_k(study: StudyReport) -> int:
    """The k of the best-of-top-k column: the study's, or every source where a target has fewer."""
    return min(study.top_k, study.most_sources())


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


def _spread(sims: dict) -> dict[str, float]:
    """Per measure, the range of similarity values (near 0: every task looks alike)."""
    out = {}
    for m in similarity.MEASURES:
        values = [v[m] for per in sims.values() for v in per.values()]
        out[m] = max(values) - min(values) if values else math.nan
    return out


def markdown(rows: list[dict], study: StudyReport) -> str:
    base = mean([100 * mean(study.scores[t][BASE]) for t in study.targets])
    lines = [
        "### Task embedding choice: Spearman of similarity with transfer gain (sources ranked per target)",
        "",
        "| embedding | measure | " + " | ".join(study.targets)
        + f" | mean | pooled | top-1 score | top-{top_k(study)} score | similarity range |",
        "|---|---|" + "---:|" * (len(study.targets) + 5),
    ]
    for r in rows:
        cells = [r["spearman"][t] for t in study.targets] + [r["mean"], r["pooled"]]
        lines.append(
            f"| {r['embedding']} | {r['measure']} | "
            + " | ".join(f"{v:+.2f}" for v in cells)
            + f" | {r['top1_score']:.1f} | {r['topk_score']:.1f} | {r['spread'][r['measure']]:.3f} |"
        )
    best = rows[0] if rows else None
    lines += ["", f"Baseline (vocab) mean dev score: {base:.1f}."]
    if best is not None:
        lines.append(
            f"Best predictor of gain: {best['embedding']}, {best['measure']} (mean Spearman {best['mean']:+.2f}, "
            f"pooled {best['pooled']:+.2f}; ties on the mean go to the higher pooled)."
        )
    return "\n".join(lines) + "\n"
