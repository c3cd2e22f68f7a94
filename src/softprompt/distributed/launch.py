"""Start a job: `torch.distributed.run` (torchrun) in this process, for `softprompt train --nproc N`."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from softprompt.distributed.group import LAUNCHER_ENV, LOST_EXIT


def torchrun_args(
    nproc: int,
    argv: Sequence[str],
    *,
    module: str | None = "softprompt",
    nnodes: int | str = 1,
    node_rank: int = 0,
    master_addr: str = "127.0.0.1",
    master_port: int | None = None,
    rdzv_endpoint: str | None = None,
    rdzv_id: str = "softprompt",
) -> list[str]:
    """The `torch.distributed.run` arguments for `nproc` workers per node running
    `python -m module *argv` (or the script argv[0] when `module` is None)."""
    args = [f"--nproc-per-node={nproc}", f"--nnodes={nnodes}", "--max-restarts=0"]
    if rdzv_endpoint:  # multi-node: c10d rendezvous on one host:port every node reaches
        args += ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}", f"--rdzv-id={rdzv_id}"]
    else:
        port = master_port if master_port is not None else free_port(master_addr)
        args += [f"--node-rank={node_rank}", f"--master-addr={master_addr}", f"--master-port={port}"]
    return args + (["-m", module] if module else []) + list(argv)


def launch(nproc: int, argv: Sequence[str], *, quiet: bool = True, **kwargs) -> int:
    """Run `torchrun` in this process (what `softprompt train --nproc N ...` calls) and return
    the job's exit code. On a failure, the launcher's multi-line report is replaced by one
    line naming the worker that failed first (a worker's own `error: ...` line, exit code 2,
    is left alone); the other workers stop quietly."""
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(torchrun_args(nproc, argv, **kwargs))
    loggers = [
        logging.getLogger(n)
        for n in ("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.elastic.multiprocessing.api")
    ]
    levels = [lg.level for lg in loggers]
    if quiet:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
    previous = os.environ.get(LAUNCHER_ENV)
    os.environ[LAUNCHER_ENV] = "1"  # inherited by the workers
    try:
        run(args)
        return 0
    except ChildFailedError as err:
        culprits = sorted(
            ((f.timestamp, r, f) for r, f in err.failures.items() if f.exitcode != LOST_EXIT),
            key=lambda t: (t[0], t[1]),
        )
        if not culprits:
            print(
                "error: a worker of the job was lost; files written so far are complete: rerun with --resume",
                file=sys.stderr,
            )
            return 1
        _, rank, failure = culprits[0]
        if failure.exitcode == 2:  # a user error: the worker printed its one line
            return 2
        how = (
            f"was killed by {signal.Signals(-failure.exitcode).name}"
            if failure.exitcode < 0
            else f"exited with code {failure.exitcode}"
        )
        print(
            f"error: worker rank {rank} (pid {failure.pid}) {how}; the job stopped, files written so far are "
            "complete: rerun with --resume",
            file=sys.stderr,
        )
        return 1
    finally:
        if previous is None:
            os.environ.pop(LAUNCHER_ENV, None)
        else:
            os.environ[LAUNCHER_ENV] = previous
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
