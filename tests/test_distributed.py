"""Data-parallel training, sharded evaluation and spread cells on 2 gloo workers (loopback).

The multi-process tests start `torchrun` (through `distributed.launch`) in a subprocess with
2 workers running tests/dist_worker.py, at most 2 processes each, bounded in time; the
single-process references run in the test process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import learnable_llama, tiny_llama, toy_task
from softprompt import distributed as dp
from softprompt.batching import Encoded, Encoder, loss_counts
from softprompt.io import write_report_json

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"


# -- in process: the loss shares add up to the loss ------------------------------------------------


def _rows(lm):
    task = toy_task()
    enc = Encoder(lm.tokenizer, lm.is_encoder_decoder)
    ranked = [enc.encode(task, e) for e in task.load("train")[:5]]
    generative = [
        Encoded(enc.input_ids("a b c"), enc.target_ids("great movie", eos=True)),
        Encoded(enc.input_ids("the movie"), enc.target_ids("awful", eos=True)),
    ]
    return enc, [ranked[0], generative[0], ranked[1], ranked[2], generative[1], ranked[3], ranked[4]]


@pytest.mark.parametrize("objective", ["lm", "rank", "rank+lm"])
@pytest.mark.parametrize("length_normalize", [False, True])
@pytest.mark.parametrize("world", [2, 3])
def test_loss_shares_of_the_workers_add_up_to_the_loss_of_the_whole_batch(objective, length_normalize, world):
    from softprompt.scoring import PromptedLM

    lm = tiny_llama()
    plm = PromptedLM(lm)
    enc, rows = _rows(lm)
    for batch_rows in (rows, [r for r in rows if r.choices is not None], [r for r in rows if r.choices is None]):
        prompt = torch.nn.Parameter(torch.randn(3, lm.hidden_size) * 0.1)
        whole = plm.loss(prompt, enc.collate(batch_rows), objective, length_normalize)
        (expected,) = torch.autograd.grad(whole, prompt)
        total = loss_counts(batch_rows)
        assert total == enc.collate(batch_rows).loss_counts()
        shares, grads = [], []
        for rank in range(world):
            mine = dp.shard(batch_rows, dp.Context(rank, world))
            share = (
                plm.loss(prompt, enc.collate(mine), objective, length_normalize, total) if mine else prompt.sum() * 0
            )
            shares.append(share.detach())
            grads.append(torch.autograd.grad(share, prompt, allow_unused=True)[0])
        assert float(sum(shares)) == pytest.approx(float(whole), abs=1e-6)
        assert torch.allclose(sum(g for g in grads if g is not None), expected, atol=1e-6)


def test_shard_splits_in_order_and_cells_round_robin():
    items = list(range(7))
    assert [dp.shard(items, dp.Context(r, 3)) for r in range(3)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [dp.cells(items, dp.Context(r, 3)) for r in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
    assert dp.shard([1], dp.Context(1, 2)) == []


# -- 2 gloo workers ----------------------------------------------------------------------------------


def run_workers(specs: list[dict], timeout: float = 120) -> subprocess.CompletedProcess:
    """`distributed.launch` of 2 workers running tests/dist_worker.py with `specs`, loopback only."""
    env = {
        **os.environ,
        "PYTHONPATH": f"{SRC}{os.pathsep}{TESTS}",
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
        "MASTER_ADDR": "127.0.0.1",
    }
    code = (
        f"import sys; from softprompt.distributed import launch; "
        f"sys.exit(launch(2, [{str(TESTS / 'dist_worker.py')!r}, {json.dumps(specs)!r}], module=None))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout, cwd=TESTS.parent
    )


def checkpoint_prompt(out: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(out / "checkpoint" / "prompt" / "prompt.safetensors")["prompt"]


def train_here(out: Path, resume: bool = False, **settings):
    import dist_worker
    from softprompt.train import TrainConfig, train

    cfg = TrainConfig(**{**dist_worker.TRAIN, **settings})
    return train(learnable_llama(), toy_task(), cfg, out, resume=resume, progress=False)


def log_records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def as_written(report: dict, path: Path) -> dict:
    """`report` as a report file holds it (strict JSON: undefined numbers are null)."""
    write_report_json(path, report)
    return json.loads(path.read_text())


def strip_times(obj):
    """A table or report without wall times (they differ from run to run)."""
    if isinstance(obj, dict):
        return {
            k: strip_times(v)
            for k, v in obj.items()
            if k not in ("seconds", "wall_seconds", "examples_per_s", "added_at")
        }
    if isinstance(obj, list):
        return [strip_times(v) for v in obj]
    return obj


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """One torchrun job of 2 workers doing, in turn: a full training run, a run stopped at
    step 8 (for resuming elsewhere), a sharded evaluation, a bench and a transfer matrix."""
    root = tmp_path_factory.mktemp("dist")
    specs = [
        {"do": "train", "out": str(root / "train")},
        {"do": "train", "out": str(root / "half"), "settings": {"steps": 8}},
        {"do": "eval", "out": str(root / "eval.json")},
        {"do": "bench", "out": str(root / "bench")},
        {"do": "matrix", "out": str(root / "matrix" / "grid")},
        {"do": "train", "out": str(root / "fsdp"), "fsdp": True, "settings": {"steps": 4, "fast": False}},
    ]
    done = run_workers(specs, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def test_two_workers_train_the_prompt_of_one_process(two_workers, tmp_path):
    here = tmp_path / "one"
    result = train_here(here)
    there = two_workers / "train"
    assert torch.allclose(checkpoint_prompt(there), checkpoint_prompt(here), atol=1e-5, rtol=0)
    from softprompt.io import load_prompt

    best_there, best_here = load_prompt(there / "best"), load_prompt(here / "best")
    assert torch.allclose(best_there.weight, best_here.weight, atol=1e-5, rtol=0)
    assert best_there.metrics == best_here.metrics == result.best.metrics
    logs_there, logs_here = log_records(there), log_records(here)
    assert [sorted(r) for r in logs_there] == [sorted(r) for r in logs_here]
    for a, b in zip(logs_there, logs_here):
        assert a["step"] == b["step"]
        if "loss" in a:
            assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        else:
            assert a["eval"] == b["eval"] and a["dev_examples"] == b["dev_examples"]
    # rank 0 alone wrote: no temporary or stray folders
    assert sorted(p.name for p in there.iterdir()) == ["best", "checkpoint", "curve.png", "embedding", "log.jsonl"]


def test_a_two_worker_checkpoint_resumes_in_one_process_to_the_same_prompt(two_workers, tmp_path):
    import shutil

    straight = tmp_path / "straight"
    train_here(straight)
    resumed = tmp_path / "resumed"
    shutil.copytree(two_workers / "half", resumed)
    train_here(resumed, resume=True)
    assert torch.allclose(checkpoint_prompt(resumed), checkpoint_prompt(straight), atol=1e-5, rtol=0)
    assert [r["step"] for r in log_records(resumed)] == [r["step"] for r in log_records(straight)]


def test_sharded_evaluation_gives_the_metrics_of_one_process(two_workers):
    import dist_worker
    from softprompt.evaluate import evaluate
    from softprompt.scoring import PromptedLM

    lm, task = learnable_llama(), toy_task(n_dev=23)  # 23: the workers' shares differ (12 + 11)
    ev = evaluate(PromptedLM(lm), dist_worker.eval_prompt(lm), task, task.load("dev"), batch_size=4)
    there = json.loads((two_workers / "eval.json").read_text())
    assert there["metrics"] == ev.metrics and there["predictions"] == ev.predictions
    assert torch.allclose(torch.tensor(there["scores"]), torch.tensor(ev.scores), atol=1e-5)


def test_bench_cells_over_two_workers_give_the_table_of_one_process(two_workers, tmp_path):
    import dist_worker
    from softprompt.bench.suite import BenchConfig, run_bench

    table = run_bench(
        tiny_llama(), dist_worker.bench_jobs(), BenchConfig(**dist_worker.BENCH), tmp_path / "b", progress=False
    )
    out = two_workers / "bench"
    returned = [json.loads((out / f"returned{r}.json").read_text()) for r in (0, 1)]
    written = json.loads((out / "table.json").read_text())
    assert strip_times(returned[0]) == strip_times(returned[1]) == strip_times(written)
    assert strip_times(written) == strip_times(as_written(table, tmp_path / "table.json"))


def test_transfer_matrix_cells_over_two_workers_give_the_grid_of_one_process(two_workers, tmp_path):
    import dist_worker
    import test_spot  # noqa: F401  registers the spot_* tasks
    from softprompt.spot.matrix import transfer_matrix
    from softprompt.train import TrainConfig

    (tmp_path / "m").mkdir()
    report = transfer_matrix(
        tiny_llama(),
        ["spot_a", "spot_yes"],
        ["spot_target"],
        TrainConfig(**dist_worker.MATRIX),
        [0],
        tmp_path / "m" / "grid",
        library_dir=tmp_path / "m" / "lib",
    )
    out = two_workers / "matrix" / "grid"
    returned = [json.loads((out / f"returned{r}.json").read_text()) for r in (0, 1)]
    assert returned[0] == returned[1] == json.loads((out / "matrix.json").read_text())
    assert returned[0] == as_written(report.to_dict(), tmp_path / "matrix.json")
    # both workers trained: the sources' logs were written by different processes
    assert sorted(p.name for p in (out / "targets" / "spot_target").iterdir()) == [
        "baseline",
        "from-spot_a",
        "from-spot_yes",
        "transfer.json",
    ]


def test_a_killed_worker_ends_the_job_with_one_line_and_the_job_resumes(tmp_path):
    from softprompt.io import load_prompt

    out = tmp_path / "killed"
    # rank 1 is SIGKILLed before the all-reduce of step 7; the last evaluation was at step 4
    done = run_workers([{"do": "train", "out": str(out), "kill_rank": 1, "kill_step": 7}])
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "--resume" in errors[0], done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    best = load_prompt(out / "best")  # the previous best/ is intact
    assert best.metrics["step"] == 4
    assert json.loads((out / "checkpoint" / "trainer.json").read_text())["step"] == 4
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no half-written folder
    train_here(out, resume=True)  # the job resumes (here in one process) from the last checkpoint
    straight = tmp_path / "straight"
    train_here(straight)
    assert torch.allclose(checkpoint_prompt(out), checkpoint_prompt(straight), atol=1e-5, rtol=0)


def test_fsdp2_sharded_frozen_layers_train_the_prompt_of_one_process(two_workers, tmp_path):
    """FSDP2 on CPU with gloo: decoder layers sharded over 2 workers (plain path, whole batch
    on every worker) give the prompt one unsharded process trains."""
    here = tmp_path / "one"
    train_here(here, steps=4, fast=False)
    assert torch.allclose(checkpoint_prompt(two_workers / "fsdp"), checkpoint_prompt(here), atol=1e-5, rtol=0)
