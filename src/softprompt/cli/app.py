"""The typer apps: the command table and the `library` group. Commands are added in cli/__init__.py."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Train, evaluate and use soft prompts on frozen language models (Lester et al. 2021).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

library_app = typer.Typer(
    help="A folder of source prompts and task embeddings for retrieval and serving.", no_args_is_help=True
)
