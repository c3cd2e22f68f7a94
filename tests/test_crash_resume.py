"""A real fault test: training runs in a child process that is killed with SIGKILL at
random moments (inside steps, evaluations and checkpoint writes), resumed each time, and
must end with exactly the prompt of an uninterrupted run."""

from __future__ import annotations

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
    from conftest import learnable_llama, toy_task

    from softprompt.train import TrainConfig, train

    # Killed before the first checkpoint, there is nothing to resume: start over.
    train(learnable_llama(), toy_task(), TrainConfig(**SETTINGS), Path(out), resume=resume, overwrite=not resume,
          progress=False)


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
