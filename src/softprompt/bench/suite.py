"""Run a benchmark suite: one prompt per task, trained or reused, then the eval-only sets.

A run's output folder holds one folder per task and seed, and the table:

    OUT/<task>/seed<k>/        a training output folder (best/, checkpoint/, log.jsonl, curve.png)
    OUT/<task>/seed<k>/result.json   dev metrics and the settings that made them; written last,
                               so its presence means "finished" and a rerun reuses it
    OUT/table.json, table.md, table.png

Diagnostic and domain-shift sets (AX-b, AX-g, the GLUE diagnostic, ANLI, IMDB) are
evaluated with the prompt of their source task when that task is in the run (SOURCES):
they measure how a prompt transfers, so they train nothing and stay out of the average.
"""

from __future__ import annotations

import random
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from softprompt import distributed as dp
from softprompt.tasks.crosstask import task_for_prompt
from softprompt.bench.table import build_table, write_outputs
from softprompt.config import (  # noqa: F401  (parse_seeds: part of this module's API)
    METHOD_LR,
    Init,
    Method,
    TrainConfig,
    helped,
    parse_seeds,
    same_as,
)
from softprompt.errors import ConfigError
from softprompt.evaluate import evaluate
from softprompt.io import load_prompt, read_json, write_json
from softprompt.models.loading import LoadedModel
from softprompt.scoring import PromptedLM
from softprompt.tasks.base import EVAL_SEED, Example, Task, dev_sample, task_names
from softprompt.train import train

SUITES: dict[str, tuple[str, ...]] = {
    # COPA and WiC are not in the data folder; QQP and MNLI-mm neither.
    "superglue": ("boolq", "cb", "multirc", "record", "rte", "wsc", "axb", "axg"),
    "glue": ("cola", "sst2", "mrpc", "stsb", "qnli", "mnli", "rte_glue", "wnli", "glue_diagnostic"),
}
# Eval-only or shift set -> tasks whose prompt evaluates it, first present wins. AX-b, AX-g and
# the GLUE diagnostic are in RTE format (2-way); an MNLI prompt is mapped onto it by label name.
SOURCES: dict[str, tuple[str, ...]] = {
    "axb": ("rte", "rte_glue", "mnli"),
    "axg": ("rte", "rte_glue", "mnli"),
    "glue_diagnostic": ("mnli", "rte_glue", "rte"),
    "anli_r1": ("mnli",),
    "anli_r2": ("mnli",),
    "anli_r3": ("mnli",),
    "imdb": ("sst2",),
}
RESULT = "result.json"
OUTPUTS = ("table.json", "table.md", "table.png")


BENCH_INITS = (Init.AUTO, Init.VOCAB, Init.UNIFORM, Init.LABELS)  # no text or file: one setting for every task


@dataclass(frozen=True)
class BenchConfig:
    """Settings of a bench run; each is a `softprompt bench` flag of the same name (help shared with TrainConfig's)."""

    steps: int = same_as(TrainConfig, "steps")
    prompt_length: int = same_as(TrainConfig, "prompt_length")
    init: str = helped(Init.AUTO.value, "auto | vocab | uniform | labels (as `softprompt train`).")
    seeds: tuple[int, ...] = helped(
        (0,), "Comma-separated seeds, one prompt per task and seed: '0,1,2' gives mean ± std."
    )
    max_eval: int | None = helped(
        None, "Evaluate on at most N dev examples per task (seeded sample; whole groups for MultiRC/AX-g)."
    )
    max_train: int | None = same_as(TrainConfig, "max_train")
    batch_size: int = same_as(TrainConfig, "batch_size")
    lr: float = helped(METHOD_LR[Method.PROMPT.value], "Learning rate (paper: 0.3, constant).")
    ema: float = same_as(TrainConfig, "ema")
    eval_batch_size: int = same_as(TrainConfig, "eval_batch_size")

    def __post_init__(self) -> None:
        self.train_config(0)  # rejects bad values with the flag's name
        if self.max_eval is not None and self.max_eval < 1:
            raise ConfigError(f"--max-eval must be at least 1, got {self.max_eval}")
        if self.init not in BENCH_INITS:
            raise ConfigError(f"--init {self.init!r}: expected auto, vocab, uniform or labels")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ConfigError(f"--seeds: expected distinct non-negative integers, got {','.join(map(str, self.seeds))}")

    def train_config(self, seed: int) -> TrainConfig:
        """One evaluation, at the last step: no selection on the dev set that is reported."""
        return TrainConfig(
            steps=self.steps,
            batch_size=self.batch_size,
            prompt_length=self.prompt_length,
            init=self.init,
            seed=seed,
            eval_every=self.steps,
            max_eval=None,
            max_train=self.max_train,  # dev: eval_sample
            eval_batch_size=self.eval_batch_size,
            lr=self.lr,
            ema=self.ema,
        )

    def settings(self) -> dict:
        """What a finished result must have been made with to be reused (seeds aside)."""
        return {k: v for k, v in asdict(self).items() if k not in ("seeds", "eval_batch_size")}


def resolve_suite(spec: str) -> tuple[str, list[str]]:
    """(suite label, task names) for "superglue", "glue" or "task1,task2,..."."""
    key = spec.strip().lower()
    if key in SUITES:
        return key, list(SUITES[key])
    names = list(dict.fromkeys(n.strip() for n in key.split(",") if n.strip()))
    unknown = [n for n in names if n not in task_names()]
    if unknown or not names:
        raise ConfigError(
            f"SUITE {spec!r}: unknown task {', '.join(unknown) or '(none given)'}; expected superglue, glue or "
            f"comma-separated task names from: {', '.join(task_names())}"
        )
    return "tasks", names


@dataclass(frozen=True)
class Job:
    """One task of a run: trains its own prompt (source None) or is evaluated with `source`'s."""

    task: Task
    source: str | None = None


def plan_tasks(tasks: Sequence[Task], sources: Mapping[str, Sequence[str]] = SOURCES) -> list[Job]:
    """Jobs for `tasks`: trained tasks first (in order), then the sets evaluated with their prompts."""
    names = {t.name for t in tasks}
    jobs = []
    for task in tasks:
        candidates = [s for s in sources.get(task.name, ()) if s != task.name]
        source = next((s for s in candidates if s in names), None)
        if source is None and "train" not in task.splits:
            how = (
                f"with the prompt of {' or '.join(candidates)}; add one to the run"
                if candidates
                else "only with another task's prompt"
            )
            raise ConfigError(f"task {task.name!r} has no train split: it is evaluated {how}")
        jobs.append(Job(task, source))
    return [j for j in jobs if j.source is None] + [j for j in jobs if j.source]


def eval_sample(examples: Sequence[Example], max_eval: int | None) -> list[Example]:
    """At most `max_eval` dev examples, seeded; grouped examples (MultiRC questions, AX-g
    pairs) are drawn as whole groups, since their metrics are computed per group."""
    if not max_eval or max_eval >= len(examples):
        return list(examples)
    if all(e.group is None for e in examples):
        return dev_sample(examples, max_eval)
    groups: dict[object, list[int]] = {}
    for i, example in enumerate(examples):
        groups.setdefault(example.group if example.group is not None else ("single", i), []).append(i)
    order = list(groups.values())
    random.Random(EVAL_SEED).shuffle(order)
    chosen: list[int] = []
    for group in order:
        if chosen and len(chosen) + len(group) > max_eval:
            continue
        chosen.extend(group)
        if len(chosen) >= max_eval:
            break
    return [examples[i] for i in sorted(chosen)]


def check_out_folder(out: Path, overwrite: bool) -> None:
    """Refuse to mix bench results into a folder that holds something else."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")

    def ours(p: Path) -> bool:
        seeds = p.is_dir() and any(re.fullmatch(r"seed\d+", c.name) for c in p.iterdir())
        return p.name in OUTPUTS or p.name in task_names() or p.name.startswith(".") or seeds

    foreign = [p.name for p in out.iterdir() if not ours(p)]
    if foreign and not overwrite:
        raise ConfigError(
            f"--out {out}: not a bench output folder (holds {', '.join(sorted(foreign)[:3])}); choose another --out"
        )


def _expected(job: Job, cfg: BenchConfig, lm: LoadedModel, seed: int) -> dict:
    return {**cfg.settings(), "seed": seed, "source": job.source, "model": lm.identity.to_dict()}


def _finished(folder: Path, expected: dict, overwrite: bool) -> dict | None:
    """The finished result in `folder` if it was made with `expected` settings; raise if it
    was made with others (unless `overwrite`)."""
    path = folder / RESULT
    if overwrite or not path.is_file():
        return None
    done = read_json(path)
    if done.get("settings") != expected:
        theirs = done.get("settings") or {}
        diff = [
            f"{k}={theirs.get(k)!r} (now {v!r})" for k, v in expected.items() if theirs.get(k) != v and k != "model"
        ]
        if theirs.get("model") != expected["model"]:
            diff.insert(0, f"model {(theirs.get('model') or {}).get('name')!r} (now {expected['model']['name']!r})")
        raise ConfigError(f"{path}: finished with other settings: {', '.join(diff)}; use --overwrite or another --out")
    return done


def run_bench(
    lm: LoadedModel,
    jobs: Sequence[Job],
    cfg: BenchConfig,
    out: Path,
    *,
    suite: str = "tasks",
    overwrite: bool = False,
    progress: bool = True,
    context: dp.Context | None = None,
) -> dict:
    """Train (or reuse) and evaluate every job for every seed; write and return the table.

    Every existing result is checked against this run's settings before anything is
    written, so a conflicting rerun fails without touching the folder. Under torchrun the
    cells (task, seed) that need work are spread over the workers, round robin: trained
    cells first, then the evaluations with their prompts; each worker trains its cells alone
    and writes only their folders, results are gathered, and rank 0 writes the table.
    """
    ctx = dp.context() if context is None else context
    out = Path(out)
    check_out_folder(out, overwrite)
    finished = {}
    for job in jobs:
        for seed in cfg.seeds:
            finished[job.task.name, seed] = _finished(
                out / job.task.name / f"seed{seed}", _expected(job, cfg, lm, seed), overwrite
            )
    dp.barrier(ctx, "start-up")  # every worker has read the results before any is rewritten
    started, data = time.perf_counter(), _Data(cfg.max_eval)
    order = [(j, s) for j in jobs for s in cfg.seeds]
    number = {(j.task.name, s): n for n, (j, s) in enumerate(order, start=1)}
    outcomes: dict[tuple[str, int], tuple[dict, str]] = {}  # (task, seed) -> (result, how)
    for phase in ([c for c in order if c[0].source is None], [c for c in order if c[0].source is not None]):
        redone = {key for key, (_, how) in outcomes.items() if how != "reused"}
        todo = []
        for job, seed in phase:
            done = finished[job.task.name, seed]
            if done is not None and (job.source, seed) not in redone:  # else: its source prompt was retrained
                outcomes[job.task.name, seed] = (done, "reused")
            else:
                todo.append((job, seed))
        mine = {}
        with dp.local():  # a cell is one worker's own run
            for job, seed in dp.cells(todo, ctx):
                done, how = _run_cell(lm, job, cfg, seed, out, data, progress and ctx.main)
                mine[job.task.name, seed] = (done, how)
                _report(number[job.task.name, seed], len(order), job, seed, done, how, progress)
        outcomes.update(dp.gather_dict(mine, ctx, "the bench cells"))
    results: dict[str, list[dict]] = {}
    for job, seed in order:
        done, how = outcomes[job.task.name, seed]
        if how == "reused":
            _report(number[job.task.name, seed], len(order), job, seed, done, how, progress and ctx.main)
        results.setdefault(job.task.name, []).append(done)
    table = build_table(suite, jobs, results, cfg, lm.identity.to_dict(), time.perf_counter() - started)
    if ctx.main:
        write_outputs(table, out)
    dp.barrier(ctx, "writing the table")
    return table


def _run_cell(
    lm: LoadedModel, job: Job, cfg: BenchConfig, seed: int, out: Path, data: "_Data", progress: bool
) -> tuple[dict, str]:
    """Train (or evaluate with its source's prompt) one cell and write its result.json."""
    folder = out / job.task.name / f"seed{seed}"
    tick = time.perf_counter()
    if job.source is None:
        done = _train_one(lm, job.task, cfg, seed, folder, data, progress)
    else:
        done = _transfer_one(lm, job, cfg, seed, out, data, progress)
    done.update(settings=_expected(job, cfg, lm, seed), seconds=round(time.perf_counter() - tick, 1))
    write_json(folder / RESULT, done)
    return done, f"{'trained' if job.source is None else job.source + ' prompt'}, {done['seconds']:.0f} s"


def _report(n: int, total: int, job: Job, seed: int, done: dict, how: str, progress: bool) -> None:
    shown = ", ".join(f"{k} {100 * v:.2f}" for k, v in done["metrics"].items())
    _say(f"[{n}/{total}] {job.task.name} seed {seed}: {shown} ({done['examples']} dev examples; {how})", progress)


def _say(line: str, progress: bool) -> None:
    if progress:
        tqdm.write(line)


class _Data:
    """Task data of one run, loaded once (seeds and transfer sets share it)."""

    def __init__(self, max_eval: int | None) -> None:
        self.max_eval = max_eval
        self.loaded: dict[tuple[str, str], list[Example]] = {}

    def __call__(self, task: Task, split: str) -> list[Example]:
        if (task.name, split) not in self.loaded:
            examples = task.load(split)
            self.loaded[task.name, split] = examples if split == "train" else eval_sample(examples, self.max_eval)
        return self.loaded[task.name, split]


def _train_one(
    lm: LoadedModel, task: Task, cfg: BenchConfig, seed: int, folder: Path, data: _Data, progress: bool
) -> dict:
    (folder / RESULT).unlink(missing_ok=True)
    if (folder / "best").exists():
        shutil.rmtree(folder / "best")  # never report a prompt this training did not produce
    dev = data(task, "dev")
    result = train(
        lm,
        task,
        cfg.train_config(seed),
        folder,
        train_examples=data(task, "train"),
        dev_examples=dev,
        overwrite=True,
        progress=progress,
    )
    metrics = {m: float(result.best.metrics[m]) for m in task.metrics}
    return {
        "task": task.name,
        "seed": seed,
        "metrics": metrics,
        "examples": len(dev),
        "prompt": f"{task.name}/seed{seed}/best",
    }


def _transfer_one(
    lm: LoadedModel, job: Job, cfg: BenchConfig, seed: int, out: Path, data: _Data, progress: bool
) -> dict:
    folder = out / job.task.name / f"seed{seed}"
    (folder / RESULT).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    prompt_dir = out / job.source / f"seed{seed}" / "best"
    saved = load_prompt(prompt_dir)
    lm.identity.check_compatible(saved.model, f"prompt {prompt_dir}")
    task = task_for_prompt(job.task, saved.task, where=f"prompt {prompt_dir}")
    dev = data(task, "dev")
    ev = evaluate(PromptedLM(lm), saved.weight, task, dev, cfg.eval_batch_size, progress=progress)
    return {
        "task": task.name,
        "seed": seed,
        "metrics": ev.metrics,
        "examples": len(dev),
        "prompt": f"{job.source}/seed{seed}/best",
    }
