"""A short soak on loopback (benchmarks/serve_soak.py): concurrent mixed requests while
library folders are added, corrupted and removed and clients hang up mid-request -- no 500s,
no lost or wrong answers (each checked against offline predict), memory flat."""

from __future__ import annotations

import sys
from pathlib import Path

from helpers import learnable_llama

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from serve_soak import report, soak  # noqa: E402


def test_a_short_soak_with_faults_has_no_500s_and_no_lost_or_wrong_answers(capsys, tmp_path):
    figures = soak(learnable_llama(), seconds=6, clients=4, workdir=tmp_path)
    with capsys.disabled():
        print("\n" + report(figures))
    assert figures["faults"] >= 20 and figures["requests"] >= 20
    assert (figures["500s"], figures["server_5xx"], figures["lost"], figures["wrong"]) == (0, 0, 0, 0)
    assert figures["rss_end_mb"] - figures["rss_start_mb"] < 64
