"""SPoT commands: `similar`, `transfer`, `transfer-matrix` (the library commands: cli/library.py).

Commands that read a library and are given no --library use the built-in one (the loaded
model's folder of softprompt/pretrained/) and say so."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from softprompt import distributed as dp
from softprompt.cli import runtime
from softprompt.cli.options import (
    MODEL,
    TRAIN,
    SPOT,
    BatchSizeOpt,
    DevFileOpt,
    EmaOpt,
    EmbedStepOpt,
    EmbeddingOpt,
    EvalEveryOpt,
    LabelFieldOpt,
    LabelsOpt,
    LearnedFirstOpt,
    LrOpt,
    MaxEvalOpt,
    MaxTrainOpt,
    MeasureOpt,
    MixtureCapOpt,
    ModelOpt,
    NprocOpt,
    OptLibraryOpt,
    OptimizerOpt,
    PrecisionOpt,
    PromptLengthOpt,
    SeedsOpt,
    TargetStepsOpt,
    TemplateOpt,
    TextFieldOpt,
    TrainFileOpt,
    config_from,
)
from softprompt.config import (
    AUTO_TOP_K,
    DEFAULT_EMBED_STEP,
    SIMILAR_MAX_EVAL,
    TRANSFER_EVAL_EVERY,
    TRANSFER_SEEDS,
    TRANSFER_STEPS,
    Init,
    SpotConfig,
    TrainConfig,
    embed_step_for,
    parse_seeds,
)
from softprompt.errors import ConfigError
from softprompt.spot import library as lib
from softprompt.spot.matrix import source_task
from softprompt.spot.matrix import transfer_matrix as run_matrix
from softprompt.spot.transfer import retrieve
from softprompt.spot.transfer import transfer as run_transfer
from softprompt.tasks import get_task
from softprompt.train import train


def names(text: str, flag: str) -> list[str]:
    """A comma list of task names given to `flag`."""
    found = [n.strip() for n in text.split(",") if n.strip()]
    if not found:
        raise ConfigError(f"{flag}: expected a comma list of task names")
    return found


# -- similarity, transfer, grid --------------------------------------------------------------


def similar(
    task: Annotated[str, typer.Option("--task", "-t", help="The new (target) task.")],
    library: OptLibraryOpt = None,
    model: ModelOpt = MODEL.model,
    precision: PrecisionOpt = MODEL.precision,
    embed_step: EmbedStepOpt = TRAIN.embed_step,
    measure: MeasureOpt = SPOT.measure,
    embedding: EmbeddingOpt = SPOT.embedding,
    learned_first: LearnedFirstOpt = SPOT.learned_first,
    batch_size: BatchSizeOpt = TRAIN.batch_size,
    prompt_length: PromptLengthOpt = TRAIN.prompt_length,
    lr: LrOpt = TRAIN.lr,
    max_train: MaxTrainOpt = TRAIN.max_train,
    max_eval: MaxEvalOpt = SIMILAR_MAX_EVAL,
    out: Annotated[
        Optional[Path],
        typer.Option(
            help="Keep the embedding run here (default: a temporary folder).",
        ),
    ] = None,
):
    """Embed TASK (prompt tuning up to --embed-step from the sampled-vocabulary init, seed 0)
    and rank the library's sources (default: the built-in library) as `transfer --auto` does:
    those that learned their own task first, then by similarity; entries trained on TASK's own
    data are left out."""
    the_task = get_task(task)
    spot = SpotConfig(measure, embedding, learned_first)
    if library is not None:
        lib.entries(library)  # a missing library fails before the model loads
    step = DEFAULT_EMBED_STEP if embed_step is None else embed_step
    cfg = config_from(
        TrainConfig, locals(), steps=step, eval_every=step, embed_step=step, init=Init.VOCAB.value, seed=0
    )
    lm = runtime.load_model(model, precision)
    library = library_or_builtin(library, lm)
    with tempfile.TemporaryDirectory(prefix="softprompt-embed-") as tmp:
        run = out or Path(tmp) / "run"
        with contextlib.redirect_stdout(sys.stderr):  # the run's dev line is not part of the ranking
            train(lm, the_task, cfg, run, overwrite=True, progress=False)
        where = run / ("embedding" if spot.embedding == "early" else "best")
        ranked = retrieve(
            lm, where, library, spot.measure, spot.embedding, exclude=the_task.name, learned_first=spot.learned_first
        )
    found = lib.entries(library)
    own = [e.name for e in found if e.trained_on(the_task.name)]
    order = "learned sources first, then " if spot.learned_first else ""
    typer.echo(
        f"sources most similar to {the_task.name} (embedding {spot.embedding}, step {step}), {order}by {spot.measure}"
    )
    typer.echo(f"{'rank':>4s}  {'source':20s} {'avg_cosine':>10s} {'per_token_cosine':>16s}  learned its task")
    learned = {e.name: e.learned for e in found}
    for i, (name, scores) in enumerate(ranked, 1):
        said = LEARNED_WORDS[learned.get(name)]
        typer.echo(f"{i:4d}  {name:20s} {scores['avg_cosine']:10.4f} {scores['per_token_cosine']:16.4f}  {said}")
    if own:
        typer.echo(f"left out, trained on {the_task.name}'s own data (transfer never starts from them): {', '.join(own)}")


# Entry.learned -> what `similar`, `transfer` and `library list` say of a source
NOT_LEARNED = "not above its constant baseline"
LEARNED_WORDS = {True: "yes", False: f"no ({NOT_LEARNED})", None: "not recorded"}


def library_or_builtin(library: Path | None, lm) -> Path:
    """--library, else the built-in library of the loaded model (said on stderr)."""
    if library is not None:
        return library
    found = lib.builtin_for(lm.identity)
    typer.echo(f"no --library given: using the built-in library {found}", err=True)
    return found


def transfer(
    task: Annotated[
        Optional[str],
        typer.Option("--task", "-t", help="Target task: built-in, or a name for your own --train-file/--dev-file task."),
    ] = None,
    source: Annotated[
        Optional[list[str]],
        typer.Option(
            "--source",
            "-s",
            help="Source prompt folder (or a --library entry name); repeat or comma-separate for several.",
        ),
    ] = None,
    library: OptLibraryOpt = None,
    top_k: Annotated[
        Optional[int],
        typer.Option(
            help="Retrieve the K library sources most similar to the target and keep the best on dev.",
        ),
    ] = None,
    auto: Annotated[
        bool,
        typer.Option(
            help=f"Retrieval + transfer in one command: --top-k {AUTO_TOP_K} unless given; from --library, "
            "else the built-in library.",
        ),
    ] = False,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Output folder: baseline/, from-<source>/, transfer.json.",
        ),
    ] = Path("runs/transfer"),
    seeds: SeedsOpt = TRANSFER_SEEDS,
    steps: TargetStepsOpt = TRANSFER_STEPS,
    model: ModelOpt = MODEL.model,
    precision: PrecisionOpt = MODEL.precision,
    batch_size: BatchSizeOpt = TRAIN.batch_size,
    prompt_length: PromptLengthOpt = TRAIN.prompt_length,
    lr: LrOpt = TRAIN.lr,
    optimizer: OptimizerOpt = TRAIN.optimizer,
    eval_every: EvalEveryOpt = TRANSFER_EVAL_EVERY,
    max_eval: MaxEvalOpt = TRAIN.max_eval,
    max_train: MaxTrainOpt = TRAIN.max_train,
    embed_step: EmbedStepOpt = TRAIN.embed_step,
    ema: EmaOpt = TRAIN.ema,
    measure: MeasureOpt = SPOT.measure,
    embedding: EmbeddingOpt = SPOT.embedding,
    learned_first: LearnedFirstOpt = SPOT.learned_first,
    baseline_init: Annotated[
        str,
        typer.Option(
            help="Baseline initialisation: vocab (sampled vocabulary), uniform, labels.",
        ),
    ] = Init.VOCAB.value,
    train_file: TrainFileOpt = None,
    dev_file: DevFileOpt = None,
    text_field: TextFieldOpt = None,
    label_field: LabelFieldOpt = "label",
    labels: LabelsOpt = None,
    template: TemplateOpt = None,
):
    """Train TASK from source prompt(s) and from the default init, same steps and seeds;
    print mean ± std of the target dev score for each, and each gain with its interval and
    paired p-value over seeds (saying plainly when it is not significant)."""
    the_task = runtime.resolve_task(task, train_file, dev_file, text_field, label_field, labels, template)
    seed_list = list(parse_seeds(seeds))
    spot = SpotConfig(measure, embedding, learned_first)
    if auto:
        top_k = top_k or AUTO_TOP_K
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    if source and top_k:
        raise ConfigError("--source and --top-k/--auto: give one (fixed sources, or retrieval from --library)")
    if not source and not top_k:
        raise ConfigError(
            "--source DIR, or --library DIR with --top-k K or --auto: name where the source prompts come from"
        )
    sources = lib.resolve_sources([s for item in source or [] for s in item.split(",") if s.strip()], library)
    cfg = config_from(TrainConfig, locals())
    cfg = replace(cfg, embed_step=embed_step_for(cfg.steps, cfg.embed_step, cfg.warmup_steps, cfg.decay))
    if top_k and library is not None:
        lib.entries(library)
    runtime.training_data(the_task)  # a bad data file fails before the model loads
    lm = runtime.load_model(model, precision)
    if top_k:
        library = library_or_builtin(library, lm)
    report = run_transfer(
        lm,
        the_task,
        cfg,
        seed_list,
        out,
        sources=sources or None,
        library_dir=library,
        top_k=top_k,
        by=spot.measure,
        at=spot.embedding,
        baseline_init=baseline_init,
        learned_first=spot.learned_first,
        progress=True,
    )
    if report.retrieved:
        at_chance = {e.name for e in lib.entries(library) if e.learned is False}
        found = ", ".join(
            f"{n} {s[spot.measure]:.3f}" + (f" ({NOT_LEARNED})" if n in at_chance else "")
            for n, s in report.retrieved[:top_k]
        )
        typer.echo(f"retrieved by {spot.measure} ({spot.embedding} embeddings of {library}): {found}")
    typer.echo(report.table())
    typer.echo(f"-> {out}/transfer.json")


def transfer_matrix(
    sources: Annotated[
        str,
        typer.Option(
            help="Comma list of source tasks; a+b is a mixture. Library entries of that name are reused.",
        ),
    ],
    targets: Annotated[str, typer.Option(help="Comma list of target tasks.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Output folder: heatmap.png, matrix.md, matrix.json, sources/, targets/.",
        ),
    ] = Path("runs/matrix"),
    library: OptLibraryOpt = None,
    steps: TargetStepsOpt = TRANSFER_STEPS,
    source_steps: Annotated[Optional[int], typer.Option(help="Source training steps (default: --steps).")] = None,
    seeds: SeedsOpt = "0",
    model: ModelOpt = MODEL.model,
    precision: PrecisionOpt = MODEL.precision,
    batch_size: BatchSizeOpt = TRAIN.batch_size,
    prompt_length: PromptLengthOpt = TRAIN.prompt_length,
    lr: LrOpt = TRAIN.lr,
    optimizer: OptimizerOpt = TRAIN.optimizer,
    eval_every: EvalEveryOpt = TRANSFER_EVAL_EVERY,
    max_eval: MaxEvalOpt = TRAIN.max_eval,
    max_train: MaxTrainOpt = TRAIN.max_train,
    embed_step: EmbedStepOpt = TRAIN.embed_step,
    ema: EmaOpt = TRAIN.ema,
    mixture_cap: MixtureCapOpt = None,
    nproc: NprocOpt = 1,
):
    """Transfer every source to every target; write a heatmap of relative gain, similarity vs
    gain correlations and the retrieval table (best of top-k vs oracle and baseline).
    Under torchrun (or --nproc N) the workers share out the source and target runs."""
    cfg = config_from(TrainConfig, locals())
    cfg = replace(cfg, embed_step=embed_step_for(cfg.steps, cfg.embed_step, cfg.warmup_steps, cfg.decay))
    if source_steps is not None and source_steps < max(1, cfg.embed_step or 0):
        raise ConfigError(f"--source-steps {source_steps}: must reach --embed-step {cfg.embed_step}")
    source_list, target_list = names(sources, "--sources"), names(targets, "--targets")
    seed_list = list(parse_seeds(seeds))
    for name in source_list:  # unknown names fail before the model loads
        source_task(name, mixture_cap)
    for name in target_list:
        get_task(name)
    code = runtime.relaunch(nproc)
    if code is not None:
        raise typer.Exit(code)
    lm = runtime.load_model(model, precision)
    report = run_matrix(
        lm,
        source_list,
        target_list,
        cfg,
        seed_list,
        out,
        source_steps=source_steps,
        library_dir=library,
        mixture_cap=mixture_cap,
        progress=True,
    )
    if not dp.context().main:
        return
    typer.echo(report.markdown())
    typer.echo(f"-> {out}/heatmap.png, {out}/matrix.md, {out}/matrix.json")
