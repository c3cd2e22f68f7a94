"""`study scale|length|init`: Lester et al.'s Fig. 1 and Fig. 3 on the models at hand (softprompt.study)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from softprompt.cli import runtime
from softprompt.cli.options import MODEL, MemoryCheckOpt, PrecisionOpt, config_from, defaults, from_field
from softprompt.config import parse_duration
from softprompt.study import Cell, Kind, StudyConfig, render_markdown, run_study

STUDY = defaults(StudyConfig)


def study(
    kind: Annotated[
        Kind,
        typer.Argument(
            help="scale: methods across model sizes (Fig. 1) | length: prompt lengths (Fig. 3a) | "
            "init: initialisations (Fig. 3b)."
        ),
    ],
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", help="Output folder: one folder per cell, table.json/.md, figure.png. "
                     "Default: runs/study-KIND."),
    ] = None,
    models: from_field(StudyConfig, "models") = STUDY.models,
    tasks: from_field(StudyConfig, "tasks") = STUDY.tasks,
    methods: from_field(StudyConfig, "methods") = STUDY.methods,
    lengths: from_field(StudyConfig, "lengths") = STUDY.lengths,
    inits: from_field(StudyConfig, "inits") = STUDY.inits,
    seeds: from_field(StudyConfig, "seeds") = STUDY.seeds,
    steps: from_field(StudyConfig, "steps") = STUDY.steps,
    batch_size: from_field(StudyConfig, "batch_size") = STUDY.batch_size,
    prompt_length: from_field(StudyConfig, "prompt_length") = STUDY.prompt_length,
    max_train: from_field(StudyConfig, "max_train") = STUDY.max_train,
    max_eval: from_field(StudyConfig, "max_eval") = STUDY.max_eval,
    eval_batch_size: from_field(StudyConfig, "eval_batch_size") = STUDY.eval_batch_size,
    activation_checkpointing: from_field(StudyConfig, "activation_checkpointing") = STUDY.activation_checkpointing,
    length_scaled_lr: from_field(StudyConfig, "length_scaled_lr") = STUDY.length_scaled_lr,
    precision: PrecisionOpt = MODEL.precision,
    memory_check: MemoryCheckOpt = MODEL.memory_check,
    overwrite: Annotated[bool, typer.Option(help="Retrain every cell instead of reusing finished ones.")] = False,
    time_limit: Annotated[
        Optional[str],
        typer.Option(
            help="Start no cell that would end after this long (90s, 10m, 1h; judged by the last cell of the "
            "same model and method): the table holds the finished cells and names the rest, and the same "
            "command resumes them. For a device lent for a fixed time.",
        ),
    ] = None,
):
    """Train and evaluate every model x method (or length, or init) x task x seed cell, reusing
    finished cells in --out, and write the table and the paper's figure."""
    cfg = config_from(StudyConfig, locals())
    limit = parse_duration(time_limit, "--time-limit") if time_limit is not None else None
    out = out or Path("runs") / f"study-{kind.value}"

    def check(model: str, method: str, in_place: bool = False) -> None:
        optimizer = cfg.train_config(Cell(model, method, "", 0)).optimizer
        runtime.check_memory(
            model, precision, method, optimizer, memory_check, activation_checkpointing, in_place=in_place
        )

    def load(name: str):
        return runtime.load_model(name, precision)

    table = run_study(kind.value, cfg, out, load, check, overwrite=overwrite, time_limit=limit)
    typer.echo("")
    typer.echo(render_markdown(table), nl=False)
    typer.echo(f"wrote {out}/table.json, table.md, figure.png")
