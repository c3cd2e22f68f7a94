"""benchmarks/peft_vs_softprompt.py on a tiny model saved to disk: every run reports the
examples it was asked to process, and the printed ratios follow from the rows."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_llama

pytest.importorskip("peft")
SCRIPT = Path(__file__).parents[1] / "benchmarks" / "peft_vs_softprompt.py"


def test_benchmark_rows_are_internally_consistent(tmp_path):
    lm = tiny_llama()
    lm.model.save_pretrained(tmp_path / "model")
    lm.tokenizer.save_pretrained(tmp_path / "model")
    steps, batch, n_eval = 2, 4, 12
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(tmp_path / "model"), "--steps", str(steps), "--batch-size",
         str(batch), "--prompt-length", "4", "--eval-examples", str(n_eval), "--json", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    rows = report["rows"]
    assert [(r["tool"], r["precision"]) for r in rows][0] == ("peft", "fp32")
    assert {r["tool"] for r in rows} == {"peft", "softprompt"} and len(rows) == 3
    for r in rows:
        assert r["train_examples"] == steps * batch
        assert r["eval_examples"] == n_eval
        assert (r["accuracy"] * n_eval) == pytest.approx(round(r["accuracy"] * n_eval))
        assert r["train_s"] > 0 and r["eval_s"] > 0 and r["peak_mb"] > 0
        assert r["train_ex_s"] == pytest.approx(steps * batch / r["train_s"], rel=1e-6)
        assert r["eval_ex_s"] == pytest.approx(n_eval / r["eval_s"], rel=1e-6)
    assert report["peaks_gflop_s"]["fp32"] > 0

    # The printed table: train ratio column = row / PEFT fp32.
    table = [l for l in out.stdout.splitlines() if l.startswith("| softprompt")]
    cells = [c.strip() for c in table[0].strip("|").split("|")]
    sp, peft = rows[1], rows[0]
    assert float(cells[3]) == pytest.approx(sp["train_ex_s"] / peft["train_ex_s"], abs=0.006)
    assert re.fullmatch(r"\d+\.\d%", cells[9])


def test_profile_script_accounts_for_the_operator_time(tmp_path):
    lm = tiny_llama()
    lm.model.save_pretrained(tmp_path / "model")
    lm.tokenizer.save_pretrained(tmp_path / "model")
    script = Path(__file__).parents[1] / "benchmarks" / "profile_step.py"
    out = subprocess.run(
        [sys.executable, str(script), "--model", str(tmp_path / "model"), "--steps", "2", "--batch-size", "4",
         "--prompt-length", "4", "--top", "3"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for phase in ("training, 2 steps x 4 examples", "evaluation, 64 examples"):
        block = out.stdout.split(phase, 1)[1].split("\n\n", 1)[0]
        shares = [float(s) for s in re.findall(r"^\S.*?\s(\d+\.\d)%$", block, re.M)]
        assert "matmul" in block and sum(shares) == pytest.approx(100.0, abs=0.3)
