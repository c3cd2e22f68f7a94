"""A torchrun worker for tests/test_distributed.py (not a test file): joins the gloo group and
runs the actions of the JSON spec in argv[1], as `softprompt` would under torchrun.
User errors end the worker as the CLI does: one `error: ...` line on stderr, exit code 2."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent))

from helpers import learnable_llama, tiny_llama, toy_task  # noqa: E402

from softprompt import distributed as dp  # noqa: E402
from softprompt.evaluate import evaluate  # noqa: E402
from softprompt.errors import SoftPromptError  # noqa: E402
from softprompt.io import write_report_json  # noqa: E402

TRAIN = dict(steps=12, batch_size=5, grad_accum=2, prompt_length=4, eval_every=4, optimizer="adafactor", embed_step=3)
BENCH = dict(steps=2, prompt_length=2, seeds=(0, 1), max_eval=8, batch_size=4)
MATRIX = dict(steps=4, batch_size=8, prompt_length=4, eval_every=2, embed_step=2)


def bench_jobs():
    from test_bench import two_metric_task

    from softprompt.bench.suite import plan_tasks

    return plan_tasks([two_metric_task("shift", splits=("dev",)), toy_task()], sources={"shift": ("toy",)})


def eval_prompt(lm) -> torch.Tensor:
    return torch.randn(4, lm.hidden_size, generator=torch.Generator().manual_seed(7))


def act(spec: dict, ctx: dp.Context) -> None:
    from softprompt.train import TrainConfig, train

    out = Path(spec["out"])
    if spec["do"] == "train":
        if "kill_rank" in spec and ctx.rank == spec["kill_rank"]:  # die like a lost machine, before a step's all-reduce
            real, calls = dp.all_reduce_grad, [0]

            def dying(*args, **kwargs):
                calls[0] += 1
                if calls[0] == spec["kill_step"]:
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(*args, **kwargs)

            dp.all_reduce_grad = dying
        cfg = TrainConfig(**{**TRAIN, **spec.get("settings", {})})
        lm = learnable_llama()
        if spec.get("fsdp"):
            dp.shard_model(lm, ctx)  # FSDP2: decoder layers sharded over the 2 workers
        train(lm, toy_task(), cfg, out, resume=spec.get("resume", False), progress=False)
    elif spec["do"] == "eval":
        from softprompt.scoring import PromptedLM

        lm, task = learnable_llama(), toy_task(n_dev=23)
        ev = evaluate(PromptedLM(lm), eval_prompt(lm), task, task.load("dev"), batch_size=4, ctx=dp.context())
        if ctx.main:
            out.write_text(json.dumps({"metrics": ev.metrics, "predictions": ev.predictions, "scores": ev.scores}))
    elif spec["do"] == "bench":
        from softprompt.bench.suite import BenchConfig, run_bench

        table = run_bench(tiny_llama(), bench_jobs(), BenchConfig(**BENCH), out, progress=False)
        write_report_json(out / f"returned{ctx.rank}.json", table)  # as table.json is written
    elif spec["do"] == "matrix":
        import test_spot  # noqa: F401  registers the spot_* tasks
        from softprompt.spot.matrix import transfer_matrix

        report = transfer_matrix(
            tiny_llama(),
            ["spot_a", "spot_yes"],
            ["spot_target"],
            TrainConfig(**MATRIX),
            [0],
            out,
            library_dir=out.parent / "lib",
        )
        write_report_json(out / f"returned{ctx.rank}.json", report.to_dict())  # as matrix.json is written


def main() -> int:
    ctx = dp.init_from_env()
    try:
        for spec in json.loads(sys.argv[1]):
            act(spec, ctx)
    except SoftPromptError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        dp.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
