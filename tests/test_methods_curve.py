"""benchmarks/methods_curve.py on a tiny model saved to disk: every method trains over every
seed under its own default recipe, the summary is the mean and std of the runs' own curves,
and a second invocation reuses the finished runs instead of training again."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tiny_llama_folder

from softprompt import TrainConfig

pytest.importorskip("peft")
SCRIPT = Path(__file__).parents[1] / "benchmarks" / "methods_curve.py"


def test_curve_over_seeds_is_the_mean_of_the_runs_and_resumes(tmp_path):
    tiny_llama_folder(tmp_path / "model")
    out = tmp_path / "curve"
    cmd = [sys.executable, str(SCRIPT), "--model", str(tmp_path / "model"), "--precision", "fp32",
           "--steps", "4", "--eval-every", "2", "--batch-size", "2", "--max-eval", "6", "--seeds", "0,1",
           "--out", str(out)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads((out / "curve.json").read_text())
    assert set(report["runs"]) == {"prompt", "lora", "model"} and report["dev_examples"] == 6
    for method, runs in report["runs"].items():
        assert [r["seed"] for r in runs] == [0, 1]
        for row in report["summary"][method]:
            scores = [100 * p["score"] for r in runs for p in r["curve"] if p["step"] == row["step"]]
            assert row["seeds"] == 2 and row["score"] == pytest.approx(statistics.mean(scores))
            assert row["std"] == pytest.approx(statistics.stdev(scores))
            kept = [100 * max(p["score"] for p in r["curve"] if p["step"] <= row["step"]) for r in runs]
            assert row["best"] == pytest.approx(statistics.mean(kept)) and row["best"] >= row["score"]
        assert [row["step"] for row in report["summary"][method]] == [2, 4]
    # The prompt trains with its default recipe (TrainConfig's prompt average), not a benchmark override.
    saved = json.loads((out / "prompt" / "seed0" / "best" / "prompt.json").read_text())
    assert saved["training"]["ema"] == TrainConfig().ema > 0
    table = (out / "curve.md").read_text()
    assert "| 8 (4) |" in table and "±" in table
    stamp = (out / "prompt" / "seed0" / "result.json").stat().st_mtime_ns
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (out / "prompt" / "seed0" / "result.json").stat().st_mtime_ns == stamp
    assert "train " not in second.stderr  # no training progress bar: every run was reused


def test_a_prompt_from_a_source_is_one_more_curve(tmp_path):
    """prompt@SOURCE: the prompt started from a saved prompt, beside the default-init one."""
    tiny_llama_folder(tmp_path / "model")
    source = tmp_path / "curve" / "prompt" / "seed0" / "best"
    cmd = [sys.executable, str(SCRIPT), "--model", str(tmp_path / "model"), "--precision", "fp32",
           "--steps", "2", "--eval-every", "2", "--batch-size", "2", "--max-eval", "6", "--out", str(tmp_path / "curve")]
    first = subprocess.run(cmd + ["--methods", "prompt"], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    second = subprocess.run(cmd + ["--methods", f"prompt,prompt@{source}"], capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    report = json.loads((tmp_path / "curve" / "curve.json").read_text())
    assert list(report["runs"]) == ["prompt", f"prompt@{source}"]
    folder = next(p for p in (tmp_path / "curve").iterdir() if p.name.startswith("prompt@"))
    saved = json.loads((folder / "seed0" / "best" / "prompt.json").read_text())
    assert saved["training"]["init"] == "file" and saved["training"]["init_from"] == str(source)
    bad = subprocess.run(cmd + ["--methods", "lora@x"], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "prompt@SOURCE" in bad.stderr
