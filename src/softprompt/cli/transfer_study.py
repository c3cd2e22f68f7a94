"""SPoT studies: `transfer-study` (targets x inits x seeds with paired tests), `transfer-report`
(several finished studies as one) and `embedding-study` (which task embedding predicts the gain)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from softprompt import distributed as dp
from softprompt.cli import runtime
from softprompt.cli.options import (
    MODEL,
    SPOT,
    TRAIN,
    BatchSizeOpt,
    EmaOpt,
    EmbedStepOpt,
    EmbeddingOpt,
    EvalEveryOpt,
    LearnedFirstOpt,
    LrOpt,
    MaxEvalOpt,
    MaxInputTokensOpt,
    MaxTrainOpt,
    MeasureOpt,
    MixtureCapOpt,
    ModelOpt,
    NprocOpt,
    OptimizerOpt,
    OptLibraryOpt,
    PatienceOpt,
    PrecisionOpt,
    PromptLengthOpt,
    SeedsOpt,
    TargetStepsOpt,
    TruncationOpt,
    config_from,
)
from softprompt.cli.spot import library_or_builtin, names
from softprompt.config import (
    LIBRARY_BATCH_SIZE,
    LIBRARY_MIXTURE_CAP,
    SIMILAR_MAX_EVAL,
    STUDY_BATCH_SIZE,
    STUDY_EVAL_EVERY,
    STUDY_MAX_EVAL,
    STUDY_PATIENCE,
    STUDY_SEEDS,
    STUDY_STEPS,
    STUDY_TARGETS,
    STUDY_TOP_K,
    SpotConfig,
    TrainConfig,
    parse_seeds,
)
from softprompt.errors import ConfigError
from softprompt.io import read_json
from softprompt.spot import library as lib
from softprompt.spot.embedding_study import baseline_runs
from softprompt.spot.embedding_study import embedding_study as run_embedding_study
from softprompt.spot.study import StudyReport, write_report
from softprompt.spot.study import transfer_study as run_study
from softprompt.tasks import get_task


def counts(text: str, flag: str) -> list[int]:
    """A comma list of positive integers given to `flag`."""
    try:
        found = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        found = []
    if not found or min(found) < 1:
        raise ConfigError(f"{flag}: expected a comma list of positive integers like 10,100, got {text!r}")
    return found


def transfer_study(
    targets: Annotated[str, typer.Option(help="Comma list of target tasks.")] = STUDY_TARGETS,
    library: OptLibraryOpt = None,
    sources: Annotated[
        Optional[str], typer.Option(help="Comma list of library sources to try (default: every entry).")
    ] = None,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Output folder: study.md, study.json, heatmap.png, <target>/<init>/seed<s>/."),
    ] = Path("runs/study"),
    seeds: SeedsOpt = STUDY_SEEDS,
    steps: TargetStepsOpt = STUDY_STEPS,
    patience: PatienceOpt = STUDY_PATIENCE,
    eval_every: EvalEveryOpt = STUDY_EVAL_EVERY,
    max_eval: MaxEvalOpt = STUDY_MAX_EVAL,
    top_k: Annotated[int, typer.Option(help="Retrieval keeps the best on dev of the K most similar sources.")] = STUDY_TOP_K,
    label_init: Annotated[
        bool,
        typer.Option(
            "--label-init/--no-label-init",
            help="Also train classification targets from their class-label words. --no-label-init runs only "
            "vocab and the sources: a check fixed in advance as a source against vocab, at two thirds the cost.",
        ),
    ] = True,
    measure: MeasureOpt = SPOT.measure,
    embedding: EmbeddingOpt = SPOT.embedding,
    learned_first: LearnedFirstOpt = SPOT.learned_first,
    model: ModelOpt = MODEL.model,
    precision: PrecisionOpt = MODEL.precision,
    batch_size: BatchSizeOpt = STUDY_BATCH_SIZE,
    prompt_length: PromptLengthOpt = TRAIN.prompt_length,
    lr: LrOpt = TRAIN.lr,
    optimizer: OptimizerOpt = TRAIN.optimizer,
    max_train: MaxTrainOpt = TRAIN.max_train,
    max_input_tokens: MaxInputTokensOpt = TRAIN.max_input_tokens,
    truncation: TruncationOpt = TRAIN.truncation,
    embed_step: EmbedStepOpt = TRAIN.embed_step,
    ema: EmaOpt = TRAIN.ema,
    nproc: NprocOpt = 1,
):
    """Train every target to convergence from vocab, labels, each library source (never one
    trained on the target's data) and the retrieved best of top-k, over several seeds; report
    each gain over vocab with a bootstrap interval and exact paired p-values, the heatmap, the
    similarity-vs-gain Spearman and the retrieval table (SPoT Table 3). Resumable per run."""
    spot = SpotConfig(measure, embedding, learned_first)
    cfg = config_from(TrainConfig, locals())
    seed_list = list(parse_seeds(seeds))
    target_tasks = [get_task(t) for t in names(targets, "--targets")]
    source_list = names(sources, "--sources") if sources else None
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    if library is not None:
        lib.entries(library)  # a missing library fails before the model loads
    code = runtime.relaunch(nproc)
    if code is not None:
        raise typer.Exit(code)
    lm = runtime.load_model(model, precision)
    library = library_or_builtin(library, lm)
    report = run_study(
        lm, target_tasks, library, cfg, seed_list, out, source_names=source_list, top_k=top_k, spot=spot,
        label_init=label_init, progress=True,
    )
    if not dp.context().main:
        return
    typer.echo(report.markdown())
    typer.echo(f"-> {out}/study.md, {out}/study.json, {out}/heatmap.png")


def transfer_report(
    studies: Annotated[
        list[Path],
        typer.Argument(help="Finished `transfer-study` output folders (their study.json), each target in one."),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder: study.md, study.json, heatmap.png.")
    ] = Path("runs/transfer-report"),
):
    """Tabulate several finished transfer studies as one (targets run separately, each with its
    own seeds and sources): the gains with intervals and p-values, the heatmap, the
    similarity-vs-gain Spearman pooled over every (target, source) pair, and the retrieval
    table over all targets. Trains nothing and loads no model."""
    reports = []
    for folder in studies:
        path = folder / "study.json"
        if not path.is_file():
            raise ConfigError(f"{folder}: no study.json (run `softprompt transfer-study --out {folder}` first)")
        one = StudyReport.from_dict(read_json(path))
        one.runs = {**{t: str(folder.resolve()) for t in one.targets}, **one.runs}  # where embedding-study finds them
        reports.append(one)
    report = StudyReport.merge(reports)
    write_report(report, out)
    typer.echo(report.markdown())
    typer.echo(f"-> {out}/study.md, {out}/study.json, {out}/heatmap.png")


def embedding_study(
    study: Annotated[Path, typer.Option(help="A finished `transfer-study` output folder (its study.json).")],
    library: OptLibraryOpt = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder: embeddings.md, embeddings.json, runs/.")
    ] = Path("runs/embedding-study"),
    lengths: Annotated[str, typer.Option(help="Prompt lengths of the fresh embedding runs.")] = "5,20",
    steps: Annotated[str, typer.Option(help="Embedding steps of the fresh runs (early vs later).")] = "10,100",
    model: ModelOpt = MODEL.model,
    precision: PrecisionOpt = MODEL.precision,
    batch_size: BatchSizeOpt = LIBRARY_BATCH_SIZE,
    lr: LrOpt = TRAIN.lr,
    optimizer: OptimizerOpt = TRAIN.optimizer,
    max_train: MaxTrainOpt = TRAIN.max_train,
    max_eval: MaxEvalOpt = SIMILAR_MAX_EVAL,
    ema: EmaOpt = TRAIN.ema,
    mixture_cap: MixtureCapOpt = LIBRARY_MIXTURE_CAP,
):
    """Rank the sources of a transfer study by similarity under each task embedding (library
    early/late, fresh runs of each prompt length and step) and cosine; report the Spearman
    correlation with the measured gain, so the default embedding can be chosen by it."""
    if not (study / "study.json").is_file():
        raise ConfigError(f"--study {study}: no study.json (run `softprompt transfer-study --out {study}` first)")
    length_list, step_list = counts(lengths, "--lengths"), counts(steps, "--steps")
    cfg = config_from(TrainConfig, locals(), steps=max(step_list))
    baseline_runs(study)  # a moved or missing run fails here, before the model loads
    if library is not None:
        lib.entries(library)
    lm = runtime.load_model(model, precision)
    library = library_or_builtin(library, lm)
    rows = run_embedding_study(
        lm, study, library, cfg, out, lengths=length_list, steps=step_list, cap=mixture_cap, progress=True
    )
    typer.echo((out / "embeddings.md").read_text(), nl=False)
    typer.echo(f"-> {out}/embeddings.md, {out}/embeddings.json ({len(rows)} rows)")
