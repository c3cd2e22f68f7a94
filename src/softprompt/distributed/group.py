"""The process group: this worker's place in the job, collectives that turn a lost peer into
one line, and the splitting of work over workers. Every function is a no-op in one process."""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from softprompt.errors import SoftPromptError


class WorkerLost(SoftPromptError):
    """Another worker of the job died (or the launcher stopped this one): the job ends.
    Raised on rank 0 only (one line for the job); the other workers exit quietly (`_lost`)."""


LOST_EXIT = 75  # exit code of a worker that stops quietly because the job lost another
LAUNCHER_ENV = "SOFTPROMPT_LAUNCHER"  # set by `launch`: it prints the job's one line itself


def _lost(message: str, ctx: "Context", cause: BaseException | None = None):
    """End this worker after the job lost one: rank 0 raises `WorkerLost` (the CLI prints its
    one line and exits 2), the others leave quietly (exit code LOST_EXIT). Under `launch`,
    rank 0 is quiet too: the launcher names the worker that failed."""
    if ctx.main and not os.environ.get(LAUNCHER_ENV):
        raise WorkerLost(message) from cause
    raise SystemExit(LOST_EXIT)


@dataclass(frozen=True)
class Context:
    """This process's place in the job: rank `rank` of `world` workers (1: no process group)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this worker writes files and prints (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


SINGLE = Context()
_local_depth = 0


def context() -> Context:
    """The current job: the process group's rank and size, or one process (`SINGLE`) when
    there is none or inside `local()`."""
    if _local_depth or not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return Context(dist.get_rank(), dist.get_world_size())


@contextlib.contextmanager
def local() -> Iterator[None]:
    """Within the block, `context()` is one process: a worker runs a cell of its own."""
    global _local_depth
    _local_depth += 1
    try:
        yield
    finally:
        _local_depth -= 1


def init_from_env(backend: str | None = None, timeout_s: float = 1800) -> Context:
    """Join the job torchrun started (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in the
    environment): gloo on CPU, NCCL when CUDA is available; a no-op without those variables
    or with WORLD_SIZE 1. On GPU each worker uses cuda:LOCAL_RANK."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return context()


def device_for(ctx: Context | None = None) -> torch.device:
    """The device this worker should load the model on: cuda:LOCAL_RANK under NCCL, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# -- collectives (each a no-op in one process) ------------------------------------------------


def _guard(what: str, ctx: "Context"):
    """Turn a failed collective (a peer died: connection closed, timeout) into one line."""

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except (RuntimeError, dist.DistError) as err:  # gloo: "Connection closed by peer", NCCL: DistBackendError
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            first = re.sub(r"^\[[^\]]*\]\s*", "", first)  # gloo's [source.cc:line] prefix
            first = first.split(". ")[0]
            _lost(
                f"a worker of the job was lost during {what} ({first[:160]}); "
                "files written so far are complete: rerun with --resume",
                ctx,
                err,
            )

    return guard()


def barrier(ctx: Context, what: str = "a barrier") -> None:
    if ctx.active:
        with _guard(what, ctx):
            dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, ctx: Context, what: str = "training") -> torch.Tensor:
    """Sum `tensor` over workers, in place (gloo needs it on the CPU, NCCL on the GPU)."""
    if ctx.active:
        with _guard(what, ctx):
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_(tensor: torch.Tensor, ctx: Context, src: int = 0) -> torch.Tensor:
    if ctx.active:
        with _guard("start-up", ctx):
            dist.broadcast(tensor, src)
    return tensor


def broadcast_object(obj, ctx: Context, src: int = 0):
    if not ctx.active:
        return obj
    box = [obj]
    with _guard("start-up", ctx):
        dist.broadcast_object_list(box, src)
    return box[0]


def all_gather_object(obj, ctx: Context, what: str = "gathering results") -> list:
    """Every worker's `obj`, in rank order."""
    if not ctx.active:
        return [obj]
    out: list = [None] * ctx.world
    with _guard(what, ctx):
        dist.all_gather_object(out, obj)
    return out


def gather_dict(mine: dict, ctx: Context, what: str = "gathering results") -> dict:
    """The union of every worker's dict (keys are disjoint)."""
    merged: dict = {}
    for part in all_gather_object(mine, ctx, what):
        merged.update(part)
    return merged


# -- splitting work -----------------------------------------------------------------------------


def shard(items: Sequence, ctx: Context) -> list:
    """This worker's contiguous slice of `items`: sizes differ by at most one, and the slices
    of ranks 0..N-1 concatenated are `items` in order."""
    n, world = len(items), ctx.world
    start = ctx.rank * (n // world) + min(ctx.rank, n % world)
    size = n // world + (1 if ctx.rank < n % world else 0)
    return list(items[start : start + size])


def cells(items: Sequence, ctx: Context) -> list:
    """Items i with i % world == rank (round robin: neighbouring cells, often alike in cost,
    go to different workers)."""
    return [item for i, item in enumerate(items) if i % ctx.world == ctx.rank]


def all_reduce_grad(params, loss_sum: float, ctx: Context) -> float:
    """Sum the gradient of `params` (one parameter or several) and the logged loss over workers
    in one collective; returns the global loss. Every worker then holds the gradient of the
    global batch."""
    if not ctx.active:
        return loss_sum
    params = [params] if isinstance(params, torch.Tensor) else list(params)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    comm_device = grads[0].device if dist.get_backend() == "nccl" else torch.device("cpu")
    flat = [g.detach().flatten().double().to(comm_device) for g in grads]
    packed = torch.cat([*flat, torch.tensor([loss_sum], dtype=torch.float64, device=comm_device)])
    all_reduce_sum(packed, ctx, "a training step")
    offset = 0
    for p in params:
        p.grad = packed[offset : offset + p.numel()].view_as(p).to(device=p.device, dtype=p.dtype)
        offset += p.numel()
    return float(packed[-1])


# -- faults --------------------------------------------------------------------------------


@contextlib.contextmanager
def stop_on_sigterm(ctx: Context) -> Iterator[None]:
    """Under torchrun, the launcher stops the other workers with SIGTERM when one dies: turn
    that into `WorkerLost` (one line, no traceback) instead of a silent death. Writes are
    atomic, so stopping anywhere leaves complete files."""
    import threading

    if (
        not ctx.active
        or threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
    ):
        yield
        return

    def handler(signum, frame):
        _lost(
            "the job lost a worker (torchrun stopped the others); files written so far are complete: "
            "rerun with --resume",
            ctx,
        )

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
