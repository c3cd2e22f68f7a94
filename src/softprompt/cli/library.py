"""Prompt library commands: `library list|add|remove|build|baselines` (the built-in library included)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer

from softprompt import distributed as dp
from softprompt.cli import runtime
from softprompt.cli.options import (
    MODEL,
    TRAIN,
    BatchSizeOpt,
    BuiltinOpt,
    EmaOpt,
    EmbedStepOpt,
    EvalEveryOpt,
    LibraryOpt,
    LrOpt,
    MaxEvalOpt,
    MaxTrainOpt,
    MixtureCapOpt,
    ModelOpt,
    NprocOpt,
    OptimizerOpt,
    OptLibraryOpt,
    PatienceOpt,
    PrecisionOpt,
    PromptLengthOpt,
    WarmupStepsOpt,
    config_from,
)
from softprompt.cli.spot import LEARNED_WORDS, NOT_LEARNED, names
from softprompt.config import (
    LIBRARY_BATCH_SIZE,
    LIBRARY_EVAL_EVERY,
    LIBRARY_MAX_EVAL,
    LIBRARY_MIXTURE_CAP,
    LIBRARY_PATIENCE,
    LIBRARY_STEPS,
    LIBRARY_WARMUP_STEPS,
    Init,
    TrainConfig,
)
from softprompt.errors import ConfigError
from softprompt.spot import chance
from softprompt.spot import library as lib
from softprompt.spot.build import BUILTIN_SOURCES, build_library
from softprompt.spot.matrix import source_task


def library_list(library: OptLibraryOpt = None, builtin: BuiltinOpt = False):
    """List the entries: task, model, dev metrics, whether a task embedding is stored. With
    --builtin (or no --library): the built-in library, for every model it ships prompts for."""
    if library is not None and not builtin:
        _list_entries(lib.entries(library), library)
        return
    root = lib.builtin_root()
    models = lib.builtin_index(root).get("models", {})
    if not models:
        typer.echo(
            f"built-in library ({root}): empty, no prompts built yet "
            "(build it with `softprompt library build --builtin`; see README, Transfer)"
        )
    for key, model in models.items():
        typer.echo(f"built-in library {root / key}: {model['name']} (embeddings {model['fingerprint']})")
        _list_entries(lib.entries(root / key, must_exist=False), root / key)


def _list_entries(found: list[lib.Entry], where: Path) -> None:
    if not found:
        typer.echo(f"{where}: no entries")
    for e in found:
        metrics = ", ".join(f"{k} {100 * v:.2f}" for k, v in e.meta.get("metrics", {}).items() if isinstance(v, float))
        has = e.meta.get("has_embedding")
        embedding = f"embedding@{e.meta.get('embed_step')}" if has else "no embedding (best/ used)"
        model = e.meta["model"]["name"]
        learned = "" if e.learned is None else "  learned its task" if e.learned else f"  {NOT_LEARNED}"
        typer.echo(
            f"{e.name:20s} task {e.meta.get('task')!s:16s} {model:24s} {embedding:26s} {_steps(e.meta):34s} {metrics}"
            + learned
        )


def _steps(meta: dict) -> str:
    """How long an entry trained and why it stopped: converged (early stop) or cut at the cap."""
    if "steps_done" not in meta:
        return ""
    if "best_step" not in meta:
        return f"{meta['steps_done']} steps"
    why = "early stop" if meta.get("early_stopped") else "step cap"
    return f"{meta['steps_done']} steps, best@{meta['best_step']} ({why})"


def library_add(
    run: Annotated[
        Path,
        typer.Argument(
            help="A `softprompt train` output folder (best/ and embedding/) or a prompt folder.",
        ),
    ],
    library: LibraryOpt,
    name: Annotated[Optional[str], typer.Option(help="Entry name (default: the prompt's task).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an entry of the same name.")] = False,
):
    """Copy a trained prompt and its task embedding into the library."""
    entry = lib.add(library, run, name, overwrite)
    note = "" if entry.meta["has_embedding"] else " (no embedding/: best/ stands in)"
    typer.echo(f"added {entry.name} to {library}{note}")


def library_baselines(
    library: OptLibraryOpt = None,
    builtin: BuiltinOpt = False,
    overwrite: Annotated[bool, typer.Option(help="Recompute entries that already have one.")] = False,
):
    """Record in each entry its dev sample's constant baseline (the best score of one answer given to
    every example: the majority label, 0 for a correlation) and whether the prompt beat it beyond
    sampling noise (one-sided z test at 5%; see softprompt/spot/chance.py). `library build` records it
    for the entries it makes; this adds it to older ones. `transfer --auto` and `similar` rank the
    entries at their baseline last. Needs the tasks' dev data; entries of your own tasks are skipped."""
    if library is not None and not builtin:
        folders = [library]
    else:
        root = lib.builtin_root()
        folders = [root / key for key in lib.builtin_index(root).get("models", {})]
    for folder in folders:
        for entry, done in chance.fill_library(folder, overwrite):
            found = entry.meta.get("chance") or {}
            z = f"z {found['z']:+.2f}" if found.get("z") is not None else ""
            said = LEARNED_WORDS[found.get("learned")] if found else ""
            typer.echo(f"{folder.name}/{entry.name:20s} {done:30s} {z:10s} learned its task: {said}")


def library_remove(name: Annotated[str, typer.Argument(help="Entry to remove.")], library: LibraryOpt):
    """Remove an entry."""
    lib.remove(library, name)
    typer.echo(f"removed {name} from {library}")


def library_build(
    library: OptLibraryOpt = None,
    builtin: BuiltinOpt = False,
    sources: Annotated[
        str,
        typer.Option(help="Comma list of sources: tasks, a+b mixtures, or glue (GLUE without WNLI)."),
    ] = ",".join(BUILTIN_SOURCES),
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Work folder: one training run per source (resumed if cut short)."),
    ] = Path("runs/library"),
    steps: Annotated[int, typer.Option(help="Most steps a source trains (early stopping ends it sooner).")] = LIBRARY_STEPS,
    patience: PatienceOpt = LIBRARY_PATIENCE,
    eval_every: EvalEveryOpt = LIBRARY_EVAL_EVERY,
    max_eval: MaxEvalOpt = LIBRARY_MAX_EVAL,
    batch_size: BatchSizeOpt = LIBRARY_BATCH_SIZE,
    mixture_cap: MixtureCapOpt = LIBRARY_MIXTURE_CAP,
    model: ModelOpt = MODEL.model,
    precision: PrecisionOpt = MODEL.precision,
    prompt_length: PromptLengthOpt = TRAIN.prompt_length,
    lr: LrOpt = TRAIN.lr,
    warmup_steps: WarmupStepsOpt = LIBRARY_WARMUP_STEPS,
    optimizer: OptimizerOpt = TRAIN.optimizer,
    max_train: MaxTrainOpt = TRAIN.max_train,
    embed_step: EmbedStepOpt = TRAIN.embed_step,
    ema: EmaOpt = TRAIN.ema,
    full_precision: Annotated[
        bool, typer.Option(help="Store prompts as float32 (default: float16 in --builtin, float32 in --library).")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Rebuild entries made with other settings.")] = False,
    nproc: NprocOpt = 1,
):
    """Train every source to convergence (early stopping on its dev) from one init and file it,
    with its task embedding, dev metrics and rebuild command, in --library or the built-in library.
    Resumable: finished sources are reused (refused if built with other settings). Under torchrun
    (or --nproc N) the workers share out the sources."""
    if builtin == (library is not None):
        raise ConfigError("library build: give --builtin (the library shipped with softprompt) or --library DIR")
    cfg = config_from(TrainConfig, locals(), init=Init.VOCAB.value, seed=0)
    source_list = names(sources, "--sources")
    for name in source_list:  # unknown names fail before the model loads
        source_task(name, mixture_cap)
    code = runtime.relaunch(nproc)
    if code is not None:
        raise typer.Exit(code)
    lm = runtime.load_model(model, precision)
    target = library if library is not None else lib.builtin_dir_for(lm.identity)
    model_args = f"--model {model}" if model else ""
    command = shlex.join(["softprompt", *runtime.ARGV])
    dtype = torch.float32 if full_precision or not builtin else torch.float16
    found = build_library(
        lm,
        source_list,
        cfg,
        out,
        target,
        cap=mixture_cap,
        dtype=dtype,
        overwrite=overwrite,
        build_command=command,
        model_args=model_args,
        builtin=builtin,
        progress=True,
    )
    if not dp.context().main:
        return
    _list_entries(found, target)
    typer.echo(f"-> {target} ({len(found)} entries)")
