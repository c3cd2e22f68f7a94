"""benchmarks/peft_vs_softprompt.py on a tiny model saved to disk: every run reports the
examples it was asked to process, and the printed ratios follow from the rows."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tiny_llama_folder

pytest.importorskip("peft")
SCRIPT = Path(__file__).parents[1] / "benchmarks" / "peft_vs_softprompt.py"


def test_benchmark_rows_are_internally_consistent(tmp_path):
    tiny_llama_folder(tmp_path / "model")
    steps, batch, n_eval = 2, 4, 12
    out = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--model",
            str(tmp_path / "model"),
            "--steps",
            str(steps),
            "--batch-size",
            str(batch),
            "--prompt-length",
            "4",
            "--eval-examples",
            str(n_eval),
            "--repeats",
            "1",
            "--json",
            str(tmp_path / "r.json"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    rows, runs, plan = report["rows"], report["runs"], report["plan"]
    assert [(r["tool"], r["setup"]) for r in rows] == [("peft", "documented"), ("peft", "best"), ("softprompt", "best")]
    assert rows[0]["precision"] == "fp32" and len(runs) == 3 and report["bookkeeping_problems"] == []
    # The best rows run at one precision, the probe's pick (bf16 for PEFT is autocast).
    assert rows[1]["precision"].split("-")[0] == rows[2]["precision"] in ("fp32", "bf16")
    assert report["precision"].startswith(f"precision auto -> {rows[2]['precision']} on ")

    # Both sides of the comparison processed the same examples in the same batches: the
    # index lists softprompt's train/evaluate really drew are the ones PEFT was given.
    peft, sp = rows[1], rows[2]
    assert sp["train_batches"] == peft["train_batches"] == plan["best"]["train"]
    assert sp["eval_batches"] == peft["eval_batches"] == plan["best"]["eval"]
    assert len(sp["train_batches"]) == steps and all(len(b) == batch for b in sp["train_batches"])
    for r in rows:  # every sampled example exactly once in training and in evaluation
        assert sorted(i for b in r["train_batches"] for i in b) == list(range(steps * batch))
        assert sorted(i for b in r["eval_batches"] for i in b) == list(range(n_eval))
        assert r["train_examples"] == steps * batch and r["eval_examples"] == n_eval
        assert (r["accuracy"] * n_eval) == pytest.approx(round(r["accuracy"] * n_eval))
    for run in runs:
        assert run["train_s"] > 0 and run["eval_s"] > 0 and run["peak_mb"] > 0
        assert run["train_ex_s"] == pytest.approx(run["train_examples"] / run["train_s"], rel=1e-6)
        assert run["eval_ex_s"] == pytest.approx(run["eval_examples"] / run["eval_s"], rel=1e-6)
    for r, run in zip(rows, runs):  # one repeat: the median is the run
        assert r["train_ex_s"] == r["train_ex_s_min"] == r["train_ex_s_max"] == run["train_ex_s"]
    assert report["peaks_gflop_s"]["fp32"] > 0 and report["peaks_gflop_s"]["bf16"] > 0

    # The printed table: CPU flags above it; ratio columns = row / PEFT best, row / PEFT documented.
    assert out.stdout.startswith("cpu flags: ")
    table = [l for l in out.stdout.splitlines() if l.startswith("| softprompt")]
    cells = [c.strip() for c in table[0].strip("|").split("|")]
    assert cells[2] == f"{sp['precision']}, {sp['attention']}" and sp["attention"] in ("sdpa", "eager")
    assert float(cells[5]) == pytest.approx(sp["train_ex_s"] / peft["train_ex_s"], abs=0.006)
    assert float(cells[6]) == pytest.approx(sp["train_ex_s"] / rows[0]["train_ex_s"], abs=0.006)
    assert float(cells[9]) == pytest.approx(sp["eval_ex_s"] / peft["eval_ex_s"], abs=0.006)
    assert re.fullmatch(r"\d+\.\d-\d+\.\d", cells[4])
    assert re.fullmatch(r"\d+\.\d%", cells[12]) and re.fullmatch(r"\d+\.\d%", cells[13])


def test_profile_script_accounts_for_the_operator_time(tmp_path):
    tiny_llama_folder(tmp_path / "model")
    script = Path(__file__).parents[1] / "benchmarks" / "profile_step.py"
    out = subprocess.run(
        [
            sys.executable,
            str(script),
            "--model",
            str(tmp_path / "model"),
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--prompt-length",
            "4",
            "--top",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for phase in ("training, 2 steps x 4 examples", "evaluation, 64 examples"):
        block = out.stdout.split(phase, 1)[1].split("\n\n", 1)[0]
        shares = [float(s) for s in re.findall(r"^\S.*?\s(\d+\.\d)%$", block, re.M)]
        assert "matmul" in block and sum(shares) == pytest.approx(100.0, abs=0.3)
