"""A real fault test: training runs in a child process that is killed with SIGKILL at
random moments (inside steps, evaluations and checkpoint writes), resumed each time, and
must end with exactly the prompt of an uninterrupted run."""

from __future__ import annotations

import importlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

TESTS = Path(__file__).parent
SETTINGS = dict(steps=30, batch_size=4, prompt_length=4, eval_every=1, optimizer="adafactor")


def child(out: str, resume: bool) -> None:
    """Entry point of the child process: train (or resume) the run at `out`."""
    torch.set_num_threads(1)
    from helpers import learnable_llama, toy_task

    from softprompt.train import TrainConfig, train

    # Killed before the first checkpoint, there is nothing to resume: start over.
    train(
        learnable_llama(),
        toy_task(),
        TrainConfig(**SETTINGS),
        Path(out),
        resume=resume,
        overwrite=not resume,
        progress=False,
    )


def start(out: Path, resume: bool) -> subprocess.Popen:
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); "
        f"from test_crash_resume import child; child({str(out)!r}, {resume})"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def logged_steps(out: Path) -> int:
    """The last training step in the run's log (0 before any)."""
    try:
        lines = (out / "log.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    steps = [
        int(line.split(",")[0].split(":")[1]) for line in lines if line.startswith('{"step": ') and '"loss"' in line
    ]
    return max(steps, default=0)


def final_prompt(out: Path) -> torch.Tensor:
    return load_file(out / "checkpoint" / "prompt" / "prompt.safetensors")["prompt"]


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_prompt(tmp_path):
    straight = tmp_path / "straight"
    done = start(straight, resume=False)
    _, err = done.communicate(timeout=300)
    assert done.returncode == 0, err.decode()[-2000:]

    rng = random.Random(0)
    out, kills, resumed = tmp_path / "killed", 0, False
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        proc = start(out, resume=resumed)
        # Kill once the log reaches a random step, a random few ms later.
        if kills < 6 and logged_steps(out) < SETTINGS["steps"] - 1:
            target = rng.randint(logged_steps(out) + 1, min(logged_steps(out) + 5, SETTINGS["steps"] - 1))
            while proc.poll() is None and logged_steps(out) < target:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.05))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                kills += 1
                resumed = resumed or (out / "checkpoint").is_dir()
                continue
        proc.wait(timeout=300)
        err = proc.stderr.read().decode()
        assert proc.returncode == 0, err[-2000:]
        if logged_steps(out) >= SETTINGS["steps"]:
            break
    assert kills >= 3, f"only {kills} kills landed before the child finished"
    assert torch.equal(final_prompt(out), final_prompt(straight))
    assert not [p.name for p in (out).iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def cli_child(out: str, steps: int) -> int:
    """Entry point: `softprompt train` on the tiny model, as a user runs it."""
    torch.set_num_threads(1)
    from helpers import learnable_llama, toy_task

    from softprompt import cli
    from softprompt.cli import runtime

    lm, task = learnable_llama(), toy_task()
    runtime.load_model = lambda name, precision: lm
    runtime.train_task = lambda *args: task
    return cli.main(
        [
            "train",
            "--task",
            "toy",
            "--steps",
            str(steps),
            "--batch-size",
            "4",
            "--prompt-length",
            "4",
            "--eval-every",
            "1000",
            "--checkpoint-every",
            "1000",
            "--out",
            out,
        ]
    )


def test_sigterm_checkpoints_the_step_in_hand_and_resume_finishes_exactly(tmp_path):
    steps = 40
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); from test_crash_resume import cli_child; "
        f"sys.exit(cli_child({str(tmp_path / 'run')!r}, {steps}))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while proc.poll() is None and logged_steps(tmp_path / "run") < 5:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    lines = [line for line in err.decode().splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "stopped by SIGTERM after step" in lines[0], err.decode()[-800:]
    stopped_at = int(lines[0].split("after step ")[1].split(";")[0])
    assert 5 <= stopped_at < steps  # no evaluation or --checkpoint-every boundary was reached: the signal wrote it
    trainer = json.loads((tmp_path / "run/checkpoint/trainer.json").read_text())
    assert trainer["step"] == stopped_at
    assert logged_steps(tmp_path / "run") == stopped_at

    from helpers import learnable_llama, toy_task

    from softprompt.train import TrainConfig, train

    settings = dict(steps=steps, batch_size=4, prompt_length=4, eval_every=1000, checkpoint_every=1000)
    train(learnable_llama(), toy_task(), TrainConfig(**settings), tmp_path / "run", resume=True, progress=False)
    train(learnable_llama(), toy_task(), TrainConfig(**settings), tmp_path / "straight", progress=False)
    assert torch.equal(final_prompt(tmp_path / "run"), final_prompt(tmp_path / "straight"))


def test_checkpoints_are_written_every_n_steps_between_evaluations(tmp_path, monkeypatch):
    from helpers import learnable_llama, toy_task

    from softprompt.train import TrainConfig, train

    train_module = importlib.import_module("softprompt.train")  # the package exports a function of that name
    real, steps_seen = train_module.save_checkpoint, []

    def spy(path, checkpoint):
        steps_seen.append(checkpoint.counters["step"])
        return real(path, checkpoint)

    monkeypatch.setattr(train_module, "save_checkpoint", spy)
    cfg = TrainConfig(steps=7, batch_size=4, prompt_length=4, eval_every=100, checkpoint_every=3)
    train(learnable_llama(), toy_task(), cfg, tmp_path / "run", progress=False)
    assert steps_seen == [3, 6, 7]  # every 3 steps, and the final evaluation
