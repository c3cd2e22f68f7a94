"""Several processes, one job: PyTorch's own engine (`torch.distributed`, started by `torchrun`).

Three uses, all on one process group (gloo on CPU, NCCL on GPU):

* data-parallel prompt training (`train.train` under torchrun): every worker holds the frozen
  model and the same P×H prompt, takes its rows of every global batch (`shard`), and the
  prompt gradient (P×H numbers) is summed over workers (`all_reduce_grad`). Each worker's
  loss is its rows' share of the global loss (`shard_loss`), so the sum equals the loss of
  one process on the whole batch. Rank 0 alone writes files.
* sharded evaluation (`evaluate`): each worker predicts its slice of the examples, the
  predictions are gathered in order and the metrics computed on the whole list.
* many independent runs (bench cells, transfer-matrix cells): `cells` splits a list of
  work items over the workers and `gather_dict` collects what each did; inside a cell a
  worker trains alone (`local()`).

`init_from_env()` initialises the process group from torchrun's variables (a no-op in one
process); `launch(nproc, argv)` runs `torchrun` in this process for `softprompt train --nproc`.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn.functional as F

from softprompt.combine import IGNORE
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
            _lost(f"a worker of the job was lost during {what} ({first[:160]}); "
                  "files written so far are complete: rerun with --resume", ctx, err)
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


# -- data-parallel loss ---------------------------------------------------------------------------

def batch_counts(rows) -> dict[str, int]:
    """Normalisers of `PromptedLM.loss` for a global batch of `batching.Encoded` rows:
    rows, ranked rows, target tokens (all rows), gold-candidate tokens (ranked rows),
    target tokens of the rows that are not ranked. Every worker holds the whole batch's
    indices, so these need no communication."""
    ranked = [r for r in rows if r.choices is not None and r.gold >= 0]
    rest = [r for r in rows if not (r.choices is not None and r.gold >= 0)]
    return {
        "rows": len(rows),
        "ranked": len(ranked),
        "tokens": sum(len(r.target_ids) for r in rows),
        "gold_tokens": sum(len(r.choices[r.gold]) for r in ranked),
        "rest_rows": len(rest),
        "rest_tokens": sum(len(r.target_ids) for r in rest),
    }


def shard_loss(plm, prompt: torch.Tensor, batch, objective: str, length_normalize: bool, total: dict[str, int]) -> torch.Tensor:
    """This worker's share of `plm.loss(prompt, global_batch, objective, length_normalize)`:
    `batch` holds its rows of the global batch, `total` the global batch's `batch_counts`.
    Every mean in the loss is written as a sum over rows (or tokens) divided by the global
    count, so the shares of all workers add up to the loss of the whole batch.

    Mirrors `PromptedLM.loss`: "lm" is the token-weighted mean cross-entropy over the
    targets; "rank" the row-weighted mix of the rank cross-entropy (ranked rows) and the
    token mean "lm" loss over the other rows; "rank+lm" the rank term plus the "lm" loss of
    every row, ranked rows contributing their gold candidate's log-likelihood.
    tests/test_distributed.py checks the shares against `PromptedLM.loss`.
    """
    zero = prompt.sum() * 0.0  # keeps the graph (and the gradient's shape) on an empty share
    if batch is None or batch.size == 0:
        return zero
    tokens = lambda b: int((b.labels != IGNORE).sum())
    if objective == "lm" or batch.gold is None or total["ranked"] == 0:
        return plm.lm_loss(prompt, batch) * (tokens(batch) / total["tokens"])
    ranked = (batch.gold >= 0).nonzero().flatten().tolist()
    rest = sorted(set(range(batch.size)) - set(ranked))
    rank_sum, gold_lp_sum = zero, zero
    if ranked:
        inputs, choices = [batch.inputs[i] for i in ranked], [batch.choices[i] for i in ranked]
        gold = batch.gold[ranked]
        scores = plm.candidate_logprobs(prompt, inputs, choices)  # (R, K)
        width = scores.shape[1]
        lengths = torch.tensor([[len(c) for c in cs] + [1] * (width - len(cs)) for cs in choices], device=scores.device)
        gold = gold.to(scores.device)
        rank_sum = F.cross_entropy(scores / lengths if length_normalize else scores, gold, reduction="sum")
        gold_lp_sum = scores[torch.arange(len(ranked), device=scores.device), gold].sum()
    rest_sum = zero
    if rest:
        part = batch.select(rest)
        rest_sum = plm.lm_loss(prompt, part) * tokens(part)  # sum of the rest's token cross-entropies
    if objective == "rank":
        rest_mean = rest_sum / total["rest_tokens"] if total["rest_tokens"] else zero
        return (rank_sum + total["rest_rows"] * rest_mean) / total["rows"]
    return rank_sum / total["rows"] + (rest_sum - gold_lp_sum) / (total["gold_tokens"] + total["rest_tokens"])


def all_reduce_grad(prompt: torch.nn.Parameter, loss_sum: float, ctx: Context) -> float:
    """Sum the prompt gradient and the logged loss over workers in one collective; returns the
    global loss. Every worker then holds the gradient of the global batch."""
    if not ctx.active:
        return loss_sum
    grad = prompt.grad if prompt.grad is not None else torch.zeros_like(prompt)
    comm_device = grad.device if dist.get_backend() == "nccl" else torch.device("cpu")
    packed = torch.cat([grad.detach().flatten().double(), torch.tensor([loss_sum], dtype=torch.float64)]).to(comm_device)
    all_reduce_sum(packed, ctx, "a training step")
    prompt.grad = packed[:-1].view_as(prompt).to(device=prompt.device, dtype=prompt.dtype)
    return float(packed[-1])


# -- sharded evaluation -----------------------------------------------------------------------------

def evaluate(plm, prompt: torch.Tensor, task, examples: Sequence, batch_size: int = 32, length_normalize: bool = False,
             progress: bool = False, ctx: Context | None = None):
    """`evaluate.evaluate` with the examples split over the workers: each predicts its slice,
    predictions and scores are gathered in order and the metrics computed on the whole list
    (so they equal one process's)."""
    from softprompt.evaluate import Evaluation, evaluate as evaluate_one, predict
    from softprompt.tasks.metrics import compute_metrics

    ctx = context() if ctx is None else ctx
    if not ctx.active:
        return evaluate_one(plm, prompt, task, examples, batch_size, length_normalize, progress)
    mine = shard(examples, ctx)
    preds, scores = predict(plm, prompt, task, mine, batch_size, length_normalize, progress and ctx.main) if mine else ([], None)
    parts = all_gather_object((preds, scores), ctx, "evaluation")
    all_preds = [p for part, _ in parts for p in part]
    ranked = any(s is not None for _, s in parts)
    all_scores = [s for _, part in parts for s in (part or [])] if ranked else None
    return Evaluation(task.name, compute_metrics(task, all_preds, list(examples)), all_preds, all_scores, len(examples))


# -- a frozen model larger than one device (FSDP2) ---------------------------------------------------

def shard_model(lm, ctx: Context | None = None):
    """Shard the frozen model's decoder layers over the workers with FSDP2 (`fully_shard`,
    per-parameter sharding, so frozen weights need no flat-parameter tricks); the prompt,
    the embeddings and the output head stay whole on every worker (the embedding matrix is
    looked up directly by `PromptedLM`, outside the root module's forward, so sharding it
    would leave a worker with a zero-size shard). Every forward then all-gathers each layer
    in turn: all workers must run the same forward passes, so `train` gives every worker
    the whole batch (no data split) and evaluates unsplit, and uses the plain path
    (`fast` off): the fast path runs each layer twice per backward (prompt cache, then
    the rows), which FSDP2 does not support (its backward finds the layer resharded).
    Returns `lm`, sharded in place; a no-op in one process."""
    ctx = context() if ctx is None else ctx
    if not ctx.active:
        return lm
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    device = "cuda" if torch.cuda.is_available() and dist.get_backend() == "nccl" else "cpu"
    mesh = init_device_mesh(device, (ctx.world,))
    layers = _decoder_layers(lm.model)
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    return lm


def _decoder_layers(model) -> list:
    base = getattr(model, model.base_model_prefix, model)
    for name in ("layers", "h", "block"):
        found = getattr(base, name, None) or getattr(getattr(base, "decoder", None), name, None)
        if found is not None:
            return list(found)
    raise SoftPromptError(f"{type(model).__name__}: no decoder layers found to shard")


def is_sharded(model) -> bool:
    """Whether some of `model`'s parameters are FSDP2 shards (DTensors)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


# -- faults ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def stop_on_sigterm(ctx: Context) -> Iterator[None]:
    """Under torchrun, the launcher stops the other workers with SIGTERM when one dies: turn
    that into `WorkerLost` (one line, no traceback) instead of a silent death. Writes are
    atomic, so stopping anywhere leaves complete files."""
    import threading

    if (not ctx.active or threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)):
        yield
        return
    def handler(signum, frame):
        _lost("the job lost a worker (torchrun stopped the others); files written so far are complete: "
              "rerun with --resume", ctx)
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- launching --------------------------------------------------------------------------------------------

def torchrun_args(nproc: int, argv: Sequence[str], *, module: str | None = "softprompt", nnodes: int | str = 1,
                  node_rank: int = 0, master_addr: str = "127.0.0.1", master_port: int | None = None,
                  rdzv_endpoint: str | None = None, rdzv_id: str = "softprompt") -> list[str]:
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
    loggers = [logging.getLogger(n) for n in ("torch.distributed.elastic", "torch.distributed.run",
                                               "torch.distributed.elastic.multiprocessing.api")]
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
        culprits = sorted(((f.timestamp, r, f) for r, f in err.failures.items() if f.exitcode != LOST_EXIT),
                          key=lambda t: (t[0], t[1]))
        if not culprits:
            print("error: a worker of the job was lost; files written so far are complete: rerun with --resume",
                  file=sys.stderr)
            return 1
        _, rank, failure = culprits[0]
        if failure.exitcode == 2:  # a user error: the worker printed its one line
            return 2
        how = (f"was killed by {signal.Signals(-failure.exitcode).name}" if failure.exitcode < 0
               else f"exited with code {failure.exitcode}")
        print(f"error: worker rank {rank} (pid {failure.pid}) {how}; the job stopped, files written so far are "
              "complete: rerun with --resume", file=sys.stderr)
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
