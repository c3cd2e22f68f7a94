"""Several processes, one job: PyTorch's own engine (`torch.distributed`, started by `torchrun`).

Three uses, all on one process group (gloo on CPU, NCCL on GPU):

* data-parallel prompt training (`train.train` under torchrun): every worker holds the frozen
  model and the same P×H prompt, takes its rows of every global batch (`shard`), and the
  prompt gradient (P×H numbers) is summed over workers (`all_reduce_grad`). Each worker's
  loss is its rows' share of the global loss (`PromptedLM.loss(..., whole=)`), so the sum
  equals the loss of one process on the whole batch. Rank 0 alone writes files.
* sharded evaluation (`evaluate.evaluate(..., ctx=)`): each worker predicts its slice of the
  examples, the predictions are gathered in order and the metrics computed on the whole list.
* many independent runs (bench cells, transfer-matrix cells): `cells` splits a list of
  work items over the workers and `gather_dict` collects what each did; inside a cell a
  worker trains alone (`local()`).

`init_from_env()` initialises the process group from torchrun's variables (a no-op in one
process); `launch(nproc, argv)` runs `torchrun` in this process for `softprompt train --nproc`.

  group.py    the process group (`init_from_env`, `context`), collectives, `shard`/`cells`, faults
  fsdp.py     `shard_model`: FSDP2 over the frozen decoder layers
  launch.py   `launch`: torchrun in this process
"""

from softprompt.distributed.fsdp import is_sharded, shard_model
from softprompt.distributed.group import (
    LAUNCHER_ENV,
    LOST_EXIT,
    SINGLE,
    Context,
    WorkerLost,
    all_gather_object,
    all_reduce_grad,
    all_reduce_sum,
    barrier,
    broadcast_,
    broadcast_object,
    cells,
    context,
    device_for,
    gather_dict,
    init_from_env,
    local,
    shard,
    shutdown,
    stop_on_sigterm,
)
from softprompt.distributed.launch import free_port, launch, torchrun_args

__all__ = [
    "LAUNCHER_ENV",
    "LOST_EXIT",
    "SINGLE",
    "Context",
    "WorkerLost",
    "all_gather_object",
    "all_reduce_grad",
    "all_reduce_sum",
    "barrier",
    "broadcast_",
    "broadcast_object",
    "cells",
    "context",
    "device_for",
    "free_port",
    "gather_dict",
    "init_from_env",
    "is_sharded",
    "launch",
    "local",
    "shard",
    "shard_model",
    "shutdown",
    "stop_on_sigterm",
    "torchrun_args",
]
