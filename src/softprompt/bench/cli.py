"""`softprompt bench`: registered on the main command table by importing this module."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from softprompt.cli import EmaOpt, ModelOpt, PrecisionOpt, app


@app.command()
def bench(
    suite: Annotated[str, typer.Argument(help="superglue | glue | comma-separated task names (see `softprompt tasks`).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder: one folder per task and seed, table.json/.md/.png. Default: runs/bench-SUITE.")] = None,
    model: ModelOpt = None,
    precision: PrecisionOpt = "auto",
    steps: Annotated[int, typer.Option(help="Optimizer steps per task.")] = 500,
    prompt_length: Annotated[int, typer.Option(help="Prompt tokens P.")] = 20,
    init: Annotated[str, typer.Option(help="auto | vocab | uniform | labels (as `softprompt train`).")] = "auto",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds, one prompt per task and seed: '0,1,2' gives mean ± std.")] = "0",
    max_eval: Annotated[Optional[int], typer.Option(help="Evaluate on at most N dev examples per task (seeded sample; whole groups for MultiRC/AX-g).")] = None,
    max_train: Annotated[Optional[int], typer.Option(help="Train on at most N examples per task (seeded sample).")] = None,
    batch_size: Annotated[int, typer.Option(help="Training examples per step.")] = 16,
    lr: Annotated[float, typer.Option(help="Learning rate (Adafactor; paper: 0.3).")] = 0.3,
    ema: EmaOpt = 0.99,
    overwrite: Annotated[bool, typer.Option(help="Retrain every task instead of reusing finished ones in --out.")] = False,
):
    """Train one prompt per task of a suite (reusing finished ones in --out) and print a paper-style table."""
    from softprompt.bench.suite import BenchConfig, check_out_folder, parse_seeds, plan_tasks, resolve_suite, run_bench
    from softprompt.bench.table import render_markdown
    from softprompt.cli import _load
    from softprompt.tasks import get_task

    label, names = resolve_suite(suite)
    jobs = plan_tasks([get_task(n) for n in names])
    cfg = BenchConfig(
        steps=steps, prompt_length=prompt_length, init=init, seeds=parse_seeds(seeds), max_eval=max_eval,
        max_train=max_train, batch_size=batch_size, lr=lr, ema=ema,
    )
    out = out or Path("runs") / f"bench-{label}"
    check_out_folder(out, overwrite)
    lm = _load(model, precision)
    table = run_bench(lm, jobs, cfg, out, suite=label, overwrite=overwrite)
    typer.echo("")
    typer.echo(render_markdown(table), nl=False)
    typer.echo(f"{table['wall_seconds']:.0f} s; wrote {out}/table.json, table.md, table.png")
