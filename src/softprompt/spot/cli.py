"""SPoT commands: `similar`, `transfer`, `transfer-matrix` and `library list|add|remove`.

Registered on the main command table (softprompt.cli imports this module).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

import softprompt.cli as core
from softprompt.cli import EmaOpt, ModelOpt, PrecisionOpt, app
from softprompt.errors import ConfigError

library_app = typer.Typer(help="A folder of source prompts and task embeddings for retrieval and serving.", no_args_is_help=True)
app.add_typer(library_app, name="library")

LibraryOpt = Annotated[Path, typer.Option("--library", "-l", help="Prompt library folder (see softprompt.spot.library).")]
OptLibraryOpt = Annotated[Optional[Path], typer.Option("--library", "-l", help="Prompt library folder (see softprompt.spot.library).")]
SeedsOpt = Annotated[str, typer.Option(help="Comma list of seeds; every initialisation runs with each.")]
StepsOpt = Annotated[int, typer.Option(help="Target training steps (the same for every initialisation).")]
BatchOpt = Annotated[int, typer.Option(help="Examples per step.")]
LengthOpt = Annotated[int, typer.Option(help="Prompt tokens P.")]
LrOpt = Annotated[float, typer.Option(help="Learning rate (paper: 0.3, Adafactor).")]
OptimizerOpt = Annotated[str, typer.Option(help="adafactor (paper) or adamw.")]
EvalEveryOpt = Annotated[int, typer.Option(help="Evaluate on dev every N steps (best on dev is kept).")]
MaxEvalOpt = Annotated[Optional[int], typer.Option(help="Evaluate on at most N dev examples per task (seeded sample).")]
MaxTrainOpt = Annotated[Optional[int], typer.Option(help="Train on at most N examples per task (seeded sample).")]
EmbedStepOpt = Annotated[int, typer.Option(help="Step whose prompt is the task embedding (the same for every task).")]
MeasureOpt = Annotated[str, typer.Option(help="Similarity: avg_cosine (cosine of average tokens) or per_token_cosine.")]
MixtureCapOpt = Annotated[Optional[int], typer.Option(help="Mixture sources (a+b): per-task cap K of examples-proportional mixing.")]


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected a comma list of integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: expected distinct integers, e.g. 0,1,2")
    return seeds


def names(text: str, flag: str) -> list[str]:
    found = [n.strip() for n in text.split(",") if n.strip()]
    if not found:
        raise ConfigError(f"{flag}: expected a comma list of task names")
    return found


def _config(steps, batch_size, prompt_length, lr, optimizer, eval_every, max_eval, max_train, embed_step, ema=0.99):
    from softprompt.train import TrainConfig

    return TrainConfig(steps=steps, batch_size=batch_size, prompt_length=prompt_length, lr=lr, optimizer=optimizer,
                       eval_every=eval_every, max_eval=max_eval, max_train=max_train, embed_step=embed_step, ema=ema)


# -- library ------------------------------------------------------------------------------


@library_app.command("list")
def library_list(library: LibraryOpt):
    """List the entries: task, model, dev metrics, whether a task embedding is stored."""
    from softprompt.spot import library as lib

    found = lib.entries(library)
    if not found:
        typer.echo(f"{library}: no entries")
    for e in found:
        metrics = ", ".join(f"{k} {100 * v:.2f}" for k, v in e.meta.get("metrics", {}).items() if isinstance(v, float))
        embedding = f"embedding@{e.meta.get('embed_step')}" if e.meta.get("has_embedding") else "no embedding (best/ used)"
        typer.echo(f"{e.name:20s} task {e.meta.get('task')!s:16s} {e.meta['model']['name']:24s} {embedding:26s} {metrics}")


@library_app.command("add")
def library_add(
    run: Annotated[Path, typer.Argument(help="A `softprompt train` output folder (best/ and embedding/) or a prompt folder.")],
    library: LibraryOpt,
    name: Annotated[Optional[str], typer.Option(help="Entry name (default: the prompt's task).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an entry of the same name.")] = False,
):
    """Copy a trained prompt and its task embedding into the library."""
    from softprompt.spot import library as lib

    entry = lib.add(library, run, name, overwrite)
    typer.echo(f"added {entry.name} to {library}" + ("" if entry.meta["has_embedding"] else " (no embedding/: best/ stands in)"))


@library_app.command("remove")
def library_remove(name: Annotated[str, typer.Argument(help="Entry to remove.")], library: LibraryOpt):
    """Remove an entry."""
    from softprompt.spot import library as lib

    lib.remove(library, name)
    typer.echo(f"removed {name} from {library}")


# -- similarity, transfer, grid --------------------------------------------------------------


@app.command()
def similar(
    task: Annotated[str, typer.Option("--task", "-t", help="The new (target) task.")],
    library: LibraryOpt,
    model: ModelOpt = None,
    precision: PrecisionOpt = "auto",
    embed_step: EmbedStepOpt = 10,
    measure: MeasureOpt = "avg_cosine",
    batch_size: BatchOpt = 16,
    prompt_length: LengthOpt = 20,
    lr: LrOpt = 0.3,
    max_train: MaxTrainOpt = None,
    max_eval: MaxEvalOpt = 32,
    out: Annotated[Optional[Path], typer.Option(help="Keep the embedding run here (default: a temporary folder).")] = None,
):
    """Embed TASK (prompt tuning up to --embed-step from the sampled-vocabulary init, seed 0)
    and rank the library's sources by similarity."""
    from softprompt.spot import library as lib
    from softprompt.spot import similarity
    from softprompt.spot.transfer import retrieve
    from softprompt.tasks import get_task
    from softprompt.train import train

    the_task = get_task(task)
    similarity.measure(measure)
    lib.entries(library)  # a missing library fails before the model loads
    cfg = _config(embed_step, batch_size, prompt_length, lr, "adafactor", embed_step, max_eval, max_train, embed_step)
    lm = core._load(model, precision)
    with tempfile.TemporaryDirectory(prefix="softprompt-embed-") as tmp:
        run = out or Path(tmp) / "run"
        with contextlib.redirect_stdout(sys.stderr):  # the run's dev line is not part of the ranking
            train(lm, the_task, replace(cfg, init="vocab", seed=0), run, overwrite=True, progress=False)
        ranked = retrieve(lm, run / "embedding", library, measure)
    typer.echo(f"sources most similar to {the_task.name} (embedding at step {embed_step}), by {measure}")
    typer.echo(f"{'rank':>4s}  {'source':20s} {'avg_cosine':>10s} {'per_token_cosine':>16s}")
    for i, (name, scores) in enumerate(ranked, 1):
        typer.echo(f"{i:4d}  {name:20s} {scores['avg_cosine']:10.4f} {scores['per_token_cosine']:16.4f}")


@app.command()
def transfer(
    task: Annotated[str, typer.Option("--task", "-t", help="Target task.")],
    source: Annotated[Optional[list[str]], typer.Option("--source", "-s", help="Source prompt folder (or a --library entry name); repeat or comma-separate for several.")] = None,
    library: OptLibraryOpt = None,
    top_k: Annotated[Optional[int], typer.Option(help="Retrieve the K library sources most similar to the target and keep the best on dev.")] = None,
    auto: Annotated[bool, typer.Option(help="Retrieval + transfer in one command: --top-k 3 unless given; needs --library.")] = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: baseline/, from-<source>/, transfer.json.")] = Path("runs/transfer"),
    seeds: SeedsOpt = "0,1,2",
    steps: StepsOpt = 100,
    model: ModelOpt = None,
    precision: PrecisionOpt = "auto",
    batch_size: BatchOpt = 16,
    prompt_length: LengthOpt = 20,
    lr: LrOpt = 0.3,
    optimizer: OptimizerOpt = "adafactor",
    eval_every: EvalEveryOpt = 50,
    max_eval: MaxEvalOpt = None,
    max_train: MaxTrainOpt = None,
    embed_step: EmbedStepOpt = 10,
    ema: EmaOpt = 0.99,
    measure: MeasureOpt = "avg_cosine",
    baseline_init: Annotated[str, typer.Option(help="Baseline initialisation: vocab (sampled vocabulary), uniform, labels.")] = "vocab",
):
    """Train TASK from source prompt(s) and from the default init, same steps and seeds;
    print mean ± std of the target dev score for each and the gain."""
    from softprompt.spot import library as lib
    from softprompt.spot import similarity
    from softprompt.spot.transfer import transfer as run_transfer
    from softprompt.tasks import get_task

    the_task = get_task(task)
    seed_list = parse_seeds(seeds)
    similarity.measure(measure)
    if auto:
        top_k = top_k or 3
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    if source and top_k:
        raise ConfigError("--source and --top-k/--auto: give one (fixed sources, or retrieval from --library)")
    if not source and not top_k:
        raise ConfigError("--source DIR, or --library DIR with --top-k K or --auto: name where the source prompts come from")
    if top_k and library is None:
        raise ConfigError("--top-k/--auto: retrieval needs --library DIR")
    sources = _sources([s for item in source or [] for s in item.split(",") if s.strip()], library)
    cfg = _config(steps, batch_size, prompt_length, lr, optimizer, eval_every, max_eval, max_train, embed_step, ema)
    if top_k:
        lib.entries(library)
    lm = core._load(model, precision)
    report = run_transfer(lm, the_task, cfg, seed_list, out, sources=sources or None, library_dir=library, top_k=top_k,
                          by=measure, baseline_init=baseline_init, progress=True)
    if report.retrieved:
        typer.echo(f"retrieved by {measure}: " + ", ".join(f"{n} {s[measure]:.3f}" for n, s in report.retrieved[:top_k]))
    typer.echo(report.table())
    typer.echo(f"-> {out}/transfer.json")


def _sources(items: list[str], library: Path | None) -> dict[str, Path]:
    """--source values: prompt folders, or names of --library entries."""
    from softprompt.spot import library as lib

    found = {}
    for item in items:
        path = Path(item)
        if path.is_dir():
            name = path.name if path.name != "best" else path.parent.name
            found[name if name not in found else f"{name}-{len(found)}"] = path
        elif library is not None:
            found[item] = lib.get(library, item).prompt_dir
        else:
            raise ConfigError(f"--source {item}: prompt folder not found (or give --library to name an entry)")
    return found


@app.command("transfer-matrix")
def transfer_matrix(
    sources: Annotated[str, typer.Option(help="Comma list of source tasks; a+b is a mixture. Library entries of that name are reused.")],
    targets: Annotated[str, typer.Option(help="Comma list of target tasks.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: heatmap.png, matrix.md, matrix.json, sources/, targets/.")] = Path("runs/matrix"),
    library: OptLibraryOpt = None,
    steps: StepsOpt = 100,
    source_steps: Annotated[Optional[int], typer.Option(help="Source training steps (default: --steps).")] = None,
    seeds: SeedsOpt = "0",
    model: ModelOpt = None,
    precision: PrecisionOpt = "auto",
    batch_size: BatchOpt = 16,
    prompt_length: LengthOpt = 20,
    lr: LrOpt = 0.3,
    optimizer: OptimizerOpt = "adafactor",
    eval_every: EvalEveryOpt = 50,
    max_eval: MaxEvalOpt = None,
    max_train: MaxTrainOpt = None,
    embed_step: EmbedStepOpt = 10,
    ema: EmaOpt = 0.99,
    mixture_cap: MixtureCapOpt = None,
):
    """Transfer every source to every target; write a heatmap of relative gain, similarity vs
    gain correlations and the retrieval table (best of top-k vs oracle and baseline)."""
    from softprompt.spot.matrix import source_task
    from softprompt.spot.matrix import transfer_matrix as run_matrix
    from softprompt.tasks import get_task

    cfg = _config(steps, batch_size, prompt_length, lr, optimizer, eval_every, max_eval, max_train, embed_step, ema)
    if source_steps is not None and source_steps < max(1, embed_step):
        raise ConfigError(f"--source-steps {source_steps}: must reach --embed-step {embed_step}")
    source_list, target_list, seed_list = names(sources, "--sources"), names(targets, "--targets"), parse_seeds(seeds)
    for name in source_list:  # unknown names fail before the model loads
        source_task(name, mixture_cap)
    for name in target_list:
        get_task(name)
    lm = core._load(model, precision)
    report = run_matrix(lm, source_list, target_list, cfg, seed_list, out, source_steps=source_steps,
                        library_dir=library, mixture_cap=mixture_cap, progress=True)
    typer.echo(report.markdown())
    typer.echo(f"-> {out}/heatmap.png, {out}/matrix.md, {out}/matrix.json")
