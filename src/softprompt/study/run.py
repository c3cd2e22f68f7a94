"""Run a study: every cell trained (or reused when finished with the same settings), evaluated,
written atomically as it finishes, then the table and the figure.

A cell's folder is model/series/task/seedN (plan.py) holding train()'s run and result.json,
written last and atomically: a killed study resumes at the first cell without one. A
result.json made with other settings is refused before anything runs, as `bench` does.
Models load one at a time through `load(name)` (the CLI's seam), each after `check(name,
method)` has refused a cell the machine cannot hold (models/memory.py), so the cells of
smaller models still run.
"""

from __future__ import annotations

import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from softprompt.config import Method
from softprompt.errors import ConfigError, ModelError
from softprompt.io import read_json, write_json
from softprompt.models import memory
from softprompt.models.loading import LoadedModel
from softprompt.models.precision import cpu_flags
from softprompt.study.plan import LATER_SETTINGS, WEIGHT_METHODS, Cell, StudyConfig, plan
from softprompt.study.table import build_table, write_outputs
from softprompt.tasks import dev_sample, get_task
from softprompt.train import train

RESULT = "result.json"


def shared(kind: str, cfg: StudyConfig) -> dict:
    """The settings every cell of a study shares, its own coordinates aside."""
    return {"study": kind, **cfg.settings()}


def expected(kind: str, cell: Cell, cfg: StudyConfig) -> dict:
    """The settings a finished cell must carry to be reused."""
    return {**shared(kind, cfg), "cell": cell.__dict__, "precision": None}


def finished(folder: Path, want: dict, overwrite: bool) -> dict | None:
    """The cell's result if it finished with `want` (precision aside: known once loaded); raise if with others."""
    path = folder / RESULT
    if overwrite or not path.is_file():
        return None
    done = read_json(path)
    theirs = {**recorded(done), "precision": None}
    if theirs != want:
        diff = [f"{k}={theirs.get(k)!r} (now {v!r})" for k, v in want.items() if theirs.get(k) != v]
        raise ConfigError(f"{path}: finished with other settings: {', '.join(diff)}; use --overwrite or another --out")
    return done


def recorded(done: dict) -> dict:
    """The settings a finished cell was made with, those added since it ran at the value it was made at."""
    return {**LATER_SETTINGS, **(done.get("settings") or {})}


def machine() -> dict:
    """What the outputs say about where they were made."""
    flags = cpu_flags()
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_flags": list(flags or ()),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def run_study(
    kind: str,
    cfg: StudyConfig,
    out: Path,
    load: Callable[[str], LoadedModel],
    check: Callable[[str, str], object] | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    time_limit: float | None = None,
) -> dict:
    """Run (or resume) study `kind` into `out` and return its table (written as table.json,
    table.md and figure.png after every cell), which also holds the cells earlier runs finished
    there with the same settings. `check(model, method, in_place)` raises ModelError for a cell
    that cannot fit. `time_limit` (seconds): start no cell that would end past it, judged by the
    last cell of the same model and method (a first one always starts before the limit); the
    cells left are named in the table, and the same call resumes them."""
    out = Path(out)
    cells = plan(kind, cfg)
    done = {c: finished(out / c.folder(kind), expected(kind, c, cfg), overwrite) for c in cells}
    results: list[dict] = [r for r in done.values() if r is not None]
    todo = [c for c in cells if done[c] is None]  # plan's order: a model's weight-tuning cells last
    say = tqdm.write if progress else (lambda line: None)
    say(f"study {kind}: {len(cells)} cells, {len(cells) - len(todo)} finished before, {len(todo)} to run -> {out}")
    started, data = time.perf_counter(), {}
    lm: LoadedModel | None = None
    loaded = None
    refused: dict[tuple[str, str], str] = {}
    took: dict[tuple[str, str], float] = {}  # seconds of the last cell per (model, method)
    not_run: list[str] = []

    def write() -> dict:
        every = results + grown(out, kind, cfg, {c.folder(kind) for c in cells})
        table = build_table(kind, cfg, every, machine(), refused, not_run)
        write_outputs(table, out)
        return table

    for i, cell in enumerate(todo, start=1):
        if (cell.model, cell.method) in refused:
            continue
        if time_limit is not None:
            elapsed = time.perf_counter() - started
            if elapsed + took.get((cell.model, cell.method), 0.0) > time_limit:
                not_run = [c.folder(kind) for c in todo[i - 1 :] if (c.model, c.method) not in refused]
                say(
                    f"time limit {time_limit / 60:.1f} min: {len(not_run)} cells not run "
                    "(the same command resumes them)"
                )
                break
        last = i == len(todo) or todo[i].model != cell.model  # no later cell needs this load
        in_place = last and cell.method in WEIGHT_METHODS
        if check is not None:
            try:
                check(cell.model, cell.method, in_place)
            except ModelError as err:  # the machine cannot hold it: say so, run the rest
                refused[cell.model, cell.method] = str(err)
                say(f"cell {i} of {len(todo)}: skipped, {err}")
                continue
        if loaded != cell.model:
            lm = None  # free the previous model first
            lm, loaded = load(cell.model), cell.model
        tick = time.perf_counter()
        result = run_cell(kind, cell, cfg, lm, out, data, progress, in_place)
        took[cell.model, cell.method] = time.perf_counter() - tick
        if in_place:
            lm, loaded = None, None  # its weights were trained
        results.append(result)
        elapsed = time.perf_counter() - started
        eta = elapsed / i * (len(todo) - i)
        say(
            f"cell {i} of {len(todo)} ({cell.model} {cell.series(kind)} {cell.task} seed {cell.seed}): "
            f"{100 * result['score']:.1f}, {result['train_examples_per_s']:.1f} ex/s, "
            f"peak {memory.gib(result['peak_memory'])}; ETA {eta / 60:.0f} min"
        )
        write()  # a kill later loses no finished cell from the table
    return write()


def grown(out: Path, kind: str, cfg: StudyConfig, planned: set[str]) -> list[dict]:
    """Finished cells in `out` outside this run's plan, made with the same settings: a study grown
    over several runs (another model, method or seed added later) is tabulated whole."""
    want = shared(kind, cfg)
    found = []
    for path in sorted(out.glob(f"*/*/*/seed*/{RESULT}")):  # Cell.folder: model/series/task/seedN
        if path.parent.relative_to(out).as_posix() in planned:
            continue
        done = read_json(path)
        settings = {k: v for k, v in recorded(done).items() if k not in ("cell", "precision")}
        if settings == want:
            found.append(done)
    return found


def run_cell(
    kind: str,
    cell: Cell,
    cfg: StudyConfig,
    lm: LoadedModel,
    out: Path,
    data: dict,
    progress: bool,
    in_place: bool = False,
) -> dict:
    """Train and evaluate one cell; write its result.json last (atomically). `in_place`: model
    tuning or LoRA trains `lm`'s own weights (the caller does not use `lm` again)."""
    folder = out / cell.folder(kind)
    (folder / RESULT).unlink(missing_ok=True)
    if folder.exists():
        shutil.rmtree(folder)  # a killed cell starts over: never report what this run did not make
    task = get_task(cell.task)
    if cell.task not in data:
        data[cell.task] = (task.load("train"), dev_sample(task.load("dev"), cfg.max_eval))
    train_set, dev = data[cell.task]
    memory.reset_peak(lm.device)
    model_params = sum(p.numel() for p in lm.model.parameters())  # before LoRA adds its adapters in place
    tick = time.perf_counter()
    r = train(
        lm,
        task,
        cfg.train_config(cell),
        folder,
        train_examples=train_set,
        dev_examples=dev,
        progress=progress,
        in_place=in_place,
    )
    shutil.rmtree(folder / "checkpoint", ignore_errors=True)  # a cell never resumes mid-way (above)
    frozen = str(lm.dtype).removeprefix("torch.")
    precision = f"{frozen}, trained in float32" if cell.method == Method.MODEL.value else frozen
    result = {
        "cell": cell.__dict__,
        "series": cell.series(kind),
        "metrics": {m: float(r.best.metrics[m]) for m in task.metrics},
        "score": float(r.best.metrics[task.metrics[0]]),
        "dev_examples": len(dev),
        "model_params": model_params,
        "trainable_params": r.trainable_params,
        "bytes_per_task": r.bytes_per_task,
        "train_examples_per_s": r.train_examples_per_s,
        "peak_memory": r.peak_memory,
        "seconds": round(time.perf_counter() - tick, 1),
        "precision": precision,
        "settings": {**expected(kind, cell, cfg), "precision": precision},
    }
    write_json(folder / RESULT, result)
    return result

