"""`serve`: every prompt of a library over one frozen model, over HTTP."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer

from softprompt.cli import runtime
from softprompt.cli.options import MODEL, ModelOpt, PrecisionOpt
from softprompt.errors import ConfigError
from softprompt.serve.library import library_model


def serve(
    library: Annotated[
        Path,
        typer.Option(
            "--library",
            "-l",
            help="Folder of prompt folders (each a training output or prompt folder; optional ensembles.json).",
        ),
    ],
    model: ModelOpt = MODEL.model,
    precision: PrecisionOpt = MODEL.precision,
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on. Beyond loopback (e.g. 0.0.0.0) an API key is required.",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    max_batch: Annotated[
        int,
        typer.Option(
            help="Most rows (input x prompt) in one forward pass; 1 = one at a time.",
        ),
    ] = 32,
    max_wait_ms: Annotated[float, typer.Option(help="Longest a request waits for others to join its batch.")] = 5.0,
    queue_size: Annotated[int, typer.Option(help="Most rows waiting; beyond it requests get 503.")] = 1024,
    max_inputs: Annotated[int, typer.Option(help="Most inputs in one request (413 beyond).")] = 64,
    api_key: Annotated[
        Optional[str],
        typer.Option(
            envvar="SOFTPROMPT_API_KEY",
            show_envvar=True,
            help="Require this key in header X-API-Key. Prefer the environment variable SOFTPROMPT_API_KEY: "
            "a flag shows in `ps`.",
        ),
    ] = None,
    threads: Annotated[
        Optional[int],
        typer.Option(
            help="CPU threads for the model (default: torch's; 1 is often fastest on a busy machine).",
        ),
    ] = None,
):
    """Serve every prompt of a library over one frozen model (HTTP; docs at /docs)."""
    # uvicorn and fastapi are the optional `serve` extras: imported only when this command runs.
    import uvicorn

    from softprompt.serve.app import LOOPBACK_HOSTS, create_app

    if api_key is not None and not api_key.strip():
        raise ConfigError(
            "--api-key is empty (or SOFTPROMPT_API_KEY is set but empty): give a real key, or leave it unset"
        )
    loopback = _is_loopback(host)
    if not loopback and api_key is None:
        raise ConfigError(
            f"--host {host} listens beyond loopback: set --api-key (or SOFTPROMPT_API_KEY) to serve there"
        )
    if not library.is_dir():
        raise ConfigError(f"--library {library}: folder not found")
    positive = (
        ("--max-batch", max_batch),
        ("--queue-size", queue_size),
        ("--max-inputs", max_inputs),
        ("--port", port + 1),
    )
    for flag, value in positive:
        if value < 1:
            raise ConfigError(f"{flag} {value}: expected a positive number")
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads {threads}: expected a positive number")
        torch.set_num_threads(threads)
    if max_wait_ms < 0:
        raise ConfigError(f"--max-wait-ms {max_wait_ms}: expected 0 or more")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    lm = runtime.load_model(model or library_model(library), precision)
    server_app = create_app(
        lm,
        library,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        queue_size=queue_size,
        api_key=api_key,
        max_inputs=max_inputs,
        # A loopback server answers only to loopback names (DNS rebinding); one
        # beyond loopback has a key and answers to any name it is reached by.
        allowed_hosts=(*LOOPBACK_HOSTS, host) if loopback else None,
    )
    prompts = len(server_app.state.server.library.scan.prompts)
    typer.echo(f"serving {prompts} prompt(s) from {library} on http://{host}:{port} (docs: /docs)")
    uvicorn.run(server_app, host=host, port=port, log_level="info")


def _is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or `localhost`; anything else (0.0.0.0, a LAN address, a name) is not."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
