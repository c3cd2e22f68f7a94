"""The `softprompt` command line. Each command is a plain function whose flags are its typed
parameters (flags that set a config field take their default and help from it: options.py);
the library API (softprompt/__init__.py) mirrors them.

The command table below is the whole list, in the order `softprompt --help` shows it:

    core.py      train, eval, predict, inspect, tasks, info  runtime.py  model loading (the test seam),
    peft_io.py   export-peft, import-peft                               prompt and task resolution
    bench.py     bench                                     options.py  the shared options
    study.py     study scale|length|init
    spot.py      similar, transfer, transfer-matrix
    library.py   library list|add|remove|build|baselines
    transfer_study.py  transfer-study, transfer-report, embedding-study
    serve.py     serve                                     app.py      the typer apps
"""

from __future__ import annotations

import sys

import click
import typer

from softprompt import distributed as dp
from softprompt.cli import bench, core, library, peft_io, runtime, serve, spot, study, transfer_study
from softprompt.cli.app import app, library_app
from softprompt.errors import SoftPromptError

app.command()(core.train)
app.command("eval")(core.eval_)
app.command()(core.predict)
app.command()(core.inspect)
app.command("export-peft")(peft_io.export_peft)
app.command("import-peft")(peft_io.import_peft)
app.command()(core.tasks)
app.command()(core.info)
app.command()(bench.bench)
app.command()(study.study)
app.command()(spot.similar)
app.command()(spot.transfer)
app.command("transfer-matrix")(spot.transfer_matrix)
app.command("transfer-study")(transfer_study.transfer_study)
app.command("transfer-report")(transfer_study.transfer_report)
app.command("embedding-study")(transfer_study.embedding_study)
app.command()(serve.serve)
app.add_typer(library_app, name="library")
library_app.command("list")(library.library_list)
library_app.command("add")(library.library_add)
library_app.command("remove")(library.library_remove)
library_app.command("build")(library.library_build)
library_app.command("baselines")(library.library_baselines)

# typer >= 0.20 raises its own (vendored click) exceptions, older typer raises click's.
USAGE_ERRORS = (
    click.exceptions.ClickException,
    getattr(typer.exceptions, "TyperException", click.exceptions.ClickException),
)
EXITS = (click.exceptions.Exit, typer.Exit)
ABORTS = (click.exceptions.Abort, typer.Abort)


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors are one line on stderr and exit code 2 (under torchrun, printed
    by rank 0 only; every worker exits 2)."""
    runtime.ARGV[:] = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    try:
        app(args=argv, standalone_mode=False)
    except SoftPromptError as err:
        if dp.context().main:
            typer.echo(f"error: {err}", err=True)
        return 2
    except EXITS as done:
        return done.exit_code
    except ABORTS:
        typer.echo("aborted", err=True)
        return 130
    except USAGE_ERRORS as err:
        ctx = getattr(err, "ctx", None)
        where = f" ({ctx.command_path})" if ctx else ""
        message = " ".join(err.format_message().split())
        typer.echo(f"error: {message}{where}", err=True)
        return 2
    finally:
        dp.shutdown()
    return 0
