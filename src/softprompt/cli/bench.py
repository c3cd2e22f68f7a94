"""`bench`: one prompt per task of a suite, and a paper-style table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from softprompt import distributed as dp
from softprompt.bench.suite import BenchConfig, check_out_folder, plan_tasks, resolve_suite, run_bench
from softprompt.bench.table import render_markdown
from softprompt.cli import runtime
from softprompt.cli.options import (
    BENCH,
    MODEL,
    BatchSizeOpt,
    BenchInitOpt,
    BenchMaxEvalOpt,
    BenchSeedsOpt,
    EmaOpt,
    LrOpt,
    MaxTrainOpt,
    ModelOpt,
    NprocOpt,
    PrecisionOpt,
    PromptLengthOpt,
    StepsOpt,
    config_from,
)
from softprompt.config import parse_seeds
from softprompt.tasks import get_task


def bench(
    suite: Annotated[
        str,
        typer.Argument(
            help="superglue | glue | comma-separated task names (see `softprompt tasks`).",
        ),
    ],
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out",
            "-o",
            help="Output folder: one folder per task and seed, table.json/.md/.png. Default: runs/bench-SUITE.",
        ),
    ] = None,
    model: ModelOpt = MODEL.model,
    precision: PrecisionOpt = MODEL.precision,
    steps: StepsOpt = BENCH.steps,
    prompt_length: PromptLengthOpt = BENCH.prompt_length,
    init: BenchInitOpt = BENCH.init,
    seeds: BenchSeedsOpt = ",".join(map(str, BENCH.seeds)),
    max_eval: BenchMaxEvalOpt = BENCH.max_eval,
    max_train: MaxTrainOpt = BENCH.max_train,
    batch_size: BatchSizeOpt = BENCH.batch_size,
    lr: LrOpt = BENCH.lr,
    ema: EmaOpt = BENCH.ema,
    overwrite: Annotated[
        bool,
        typer.Option(
            help="Retrain every task instead of reusing finished ones in --out.",
        ),
    ] = False,
    nproc: NprocOpt = 1,
):
    """Train one prompt per task of a suite (reusing finished ones in --out) and print a paper-style table.
    Under torchrun (or --nproc N) the workers share out the task/seed cells."""
    label, names = resolve_suite(suite)
    jobs = plan_tasks([get_task(n) for n in names])
    cfg = config_from(BenchConfig, locals(), seeds=parse_seeds(seeds))
    out = out or Path("runs") / f"bench-{label}"
    check_out_folder(out, overwrite)
    code = runtime.relaunch(nproc)
    if code is not None:
        raise typer.Exit(code)
    lm = runtime.load_model(model, precision)
    table = run_bench(lm, jobs, cfg, out, suite=label, overwrite=overwrite)
    if not dp.context().main:
        return
    typer.echo("")
    typer.echo(render_markdown(table), nl=False)
    typer.echo(f"{table['wall_seconds']:.0f} s; wrote {out}/table.json, table.md, table.png")
