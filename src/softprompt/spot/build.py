"""Build a prompt library: every source prompt trained to convergence, with its task embedding.

Each source (a task, or a named mixture such as "glue") trains from the sampled-vocabulary
init, seed 0 (one init for all, so task embeddings compare what the tasks did), for at most
`cfg.steps` steps with early stopping on its dev sample (`cfg.patience`), after the warm-up
of `cfg.warmup_steps` (the command line's default: LIBRARY_WARMUP_STEPS). Output:

    WORK/<source>/        the training run (train.py layout); an interrupted one is resumed
    LIBRARY/<source>/     its library entry (float16 in the built-in library), whose entry.json
                          records the dev metrics, their constant baseline and whether the
                          prompt beat it ("chance", see chance.py), every training setting,
                          the steps run and `rebuild_command`: the `softprompt train` + `library add` commands that
                          make this one entry again

Resumable: an entry already in the library with the same settings is reused; one made with
other settings is refused (unless `overwrite`). Under torchrun the sources are spread over the
workers (round robin), each training and adding its own.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from softprompt import distributed as dp
from softprompt.config import TrainConfig, default_of, embed_step_for
from softprompt.errors import ConfigError
from softprompt.io import META_FILE, read_json
from softprompt.models.loading import LoadedModel
from softprompt.spot import chance, library
from softprompt.spot.matrix import MIXTURES, source_task
from softprompt.spot.transfer import train_once

# Every task with a train split in ../shared/data (MNLI, SNLI, QNLI, SQuAD: carved from their
# dev sets by the task loaders; BoolQ: its 32 FewGLUE examples) and one GLUE mixture.
BUILTIN_SOURCES = (
    "sst2", "imdb", "cola", "mrpc", "stsb", "qnli", "mnli", "snli", "squad", "rte", "cb", "wsc", "boolq", "glue",
)  # fmt: skip


def source_settings(cfg: TrainConfig, cap: int | None) -> dict:
    """The settings that make a source (what a reused entry must match)."""
    return {**asdict(cfg), "mixture_cap": cap}


def train_command(name: str, cfg: TrainConfig, cap: int | None, model_args: str = "", out: str = "") -> str:
    """The `softprompt train` command that trains source `name` with `cfg` (flags that differ from
    the defaults), followed by the `library add` that files it under `name`."""
    spec = MIXTURES.get(name, name)
    out = out or f"runs/library/{name}"
    parts = ["softprompt", "train", "--task", spec.replace("+", ",")]
    if "+" in spec and cap is not None:
        parts += ["--mixture-cap", str(cap)]
    for f in fields(TrainConfig):
        value = getattr(cfg, f.name)
        if value == default_of(TrainConfig, f.name) or value is None:
            continue
        flag = "--" + f.name.replace("_", "-")
        parts += [flag if value else "--no-" + f.name.replace("_", "-")] if isinstance(value, bool) else [flag, str(value)]
    parts += shlex.split(model_args) + ["--out", out]
    add = ["softprompt", "library", "add", out, "--library", "LIBRARY", "--name", name]
    return shlex.join(parts) + " && " + shlex.join(add)


def _reusable(entry: library.Entry, settings: dict, lm: LoadedModel, overwrite: bool) -> bool:
    """Whether `entry` is this build's source already; refuses one made otherwise (unless overwrite)."""
    if overwrite:
        made = entry.meta.get("training")
        return made is not None and not _differences(made, settings) and entry.model.fingerprint == lm.identity.fingerprint
    if entry.meta["model"]["fingerprint"] != lm.identity.fingerprint:
        raise ConfigError(
            f"{entry.path}: entry {entry.name!r} was trained on {entry.meta['model']['name']}, not the loaded "
            f"{lm.identity.name} (use another --library, or --overwrite to rebuild it)"
        )
    made = entry.meta.get("training")
    differ = _differences(made, settings) if made is not None else None
    if differ is None or differ:
        diff = ", ".join(f"{k} {made.get(k)!r} (now {v!r})" for k, v in differ.items()) if differ else "added by hand"
        raise ConfigError(
            f"{entry.path}: entry {entry.name!r} was built with other settings: {diff} "
            "(build with its settings, or --overwrite to rebuild it)"
        )
    return True


def _differences(made: dict, settings: dict) -> dict:
    """Settings of this build that differ from the entry's (a setting newer than the entry
    counts as its default)."""
    names = {f.name for f in fields(TrainConfig)}
    old = {k: made.get(k, default_of(TrainConfig, k) if k in names else None) for k in settings}
    return {k: v for k, v in settings.items() if old[k] != v}


def build_library(
    lm: LoadedModel,
    sources: list[str],
    cfg: TrainConfig,
    work_dir: Path,
    library_dir: Path,
    *,
    cap: int | None = None,
    dtype: torch.dtype = torch.float16,
    overwrite: bool = False,
    build_command: str = "",
    model_args: str = "",
    builtin: bool = False,
    progress: bool = False,
    context: dp.Context | None = None,
) -> list[library.Entry]:
    """Train (or reuse) every source and file it in `library_dir`; returns the entries, in `sources` order.

    Args:
        cfg: The source budget: `steps` is the most a source trains, `patience` stops it earlier.
        builtin: `library_dir` is a folder of the built-in library: update its index.json.
        build_command, model_args: Recorded in each entry (how the whole library and this entry were made).
    """
    if len(set(sources)) != len(sources):
        raise ConfigError("--sources: a name is listed twice")
    for name in sources:  # unknown names fail before any training
        source_task(name, cap)
    ctx = dp.context() if context is None else context
    embed_at = embed_step_for(cfg.steps, cfg.embed_step, cfg.warmup_steps, cfg.decay)
    cfg = replace(cfg, init="vocab", init_from=None, seed=0, embed_step=embed_at)
    settings = source_settings(cfg, cap)
    known = {e.name: e for e in library.entries(library_dir, must_exist=False)}
    todo = [n for n in sources if n not in known or not _reusable(known[n], settings, lm, overwrite)]
    dp.barrier(ctx, "start-up")  # every worker has read the library before any entry is replaced
    mine = dp.cells(todo, ctx)
    bar = tqdm(total=len(mine), desc="library build", unit="source", disable=not (progress and mine))
    with dp.local():
        for name in mine:
            run = Path(work_dir) / name
            bar.set_postfix(source=name)
            task = source_task(name, cap)
            train_once(lm, task, cfg, run, progress and ctx.main, refuse_other=not overwrite)
            counters = read_json(run / "checkpoint" / "trainer.json")
            metrics = read_json(run / "best" / META_FILE)["metrics"]
            extra = {
                "training": settings,
                "steps_done": counters["step"],
                "best_step": counters["best_step"],
                "early_stopped": counters["step"] < cfg.steps,
                "rebuild_command": train_command(name, cfg, cap, model_args),
                "build_command": build_command,
                "chance": chance.record(getattr(task, "tasks", (task,)), metrics, cfg.max_eval),
            }
            library.add(library_dir, run, name, overwrite=True, dtype=dtype, extra=extra)
            bar.update(1)
    bar.close()
    dp.barrier(ctx, "building the library")
    if builtin and ctx.main:
        library.update_index(library_dir, lm.identity, build_command)
    found = {e.name: e for e in library.entries(library_dir)}
    return [found[n] for n in sources]
