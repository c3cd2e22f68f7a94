"""The transfer study (spot/study.py) and the embedding study (spot/embedding_study.py) on a
tiny model: every cell, no target from its own data, resume, the report's numbers."""

from __future__ import annotations

import json
import math

import pytest
from helpers import cli_loads, learnable_llama, run_cli, toy_task

import softprompt.cli as cli
from softprompt.errors import ConfigError
from softprompt.spot.study import BASE, RETRIEVED, StudyReport, write_report
from softprompt.stats import mean
from softprompt.tasks.base import register

for _name in ("study_a", "study_b", "study_t"):
    register(_name)(lambda n=_name: toy_task(24, 8, name=n))

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = ("--batch-size", "8", "--prompt-length", "4", "--embed-step", "2", "--optimizer", "adamw", "--lr", "0.5")


@pytest.fixture
def model(monkeypatch):
    return cli_loads(monkeypatch, learnable_llama())


@pytest.fixture
def lib(model, tmp_path, capsys):
    lib = tmp_path / "lib"
    code, _, err = run_cli(
        capsys, "library", "build", "--library", lib, "--sources", "study_a,study_b,study_a+study_b",
        "--out", tmp_path / "work", "--steps", "6", "--eval-every", "2", "--patience", "1", "--max-eval", "8", *TINY,
    )  # fmt: skip
    assert code == 0, err
    return lib


def study(capsys, lib, out, *extra):
    return run_cli(
        capsys, "transfer-study", "--targets", "study_t,study_b", "--library", lib, "--out", out, "--seeds", "0,1",
        "--steps", "4", "--eval-every", "2", "--patience", "1", "--max-eval", "8", "--top-k", "2", *TINY, *extra,
    )  # fmt: skip


def test_transfer_study_runs_every_allowed_cell_and_writes_the_report(lib, tmp_path, capsys):
    out = tmp_path / "study"
    code, text, err = study(capsys, lib, out)
    assert code == 0, err
    assert "with 2 seeds no paired p goes below 0.5" in err  # said before anything trains
    report = json.loads((out / "study.json").read_text())
    # study_b never starts from a source trained on its data (study_b itself, the mixture).
    assert report["sources"] == {"study_t": ["study_a", "study_a+study_b", "study_b"], "study_b": ["study_a"]}
    assert sorted(p.name for p in (out / "study_b").iterdir()) == ["labels", "study_a", "vocab"]
    assert sorted(p.name for p in (out / "study_t").iterdir()) == ["labels", "study_a", "study_a+study_b", "study_b", "vocab"]
    for target, inits in report["scores"].items():
        assert all(len(s) == 2 for s in inits.values())
        assert report["retrieved"][target] in report["sources"][target]
        tests = report["tests"][target]
        assert set(tests) == set(inits) - {BASE} | {RETRIEVED}
        a, b = inits["study_a"], inits[BASE]
        assert tests["study_a"]["gain"] == pytest.approx(mean(a) - mean(b))
        assert tests["study_a"]["n"] == 2 and tests["study_a"]["p_sign_flip"] >= 0.5  # 2 seeds: p >= 2/4
    assert set(report["correlation"]["avg_cosine"]) == {"study_t", "study_b", "mean", "pooled"}
    assert [r["method"] for r in report["retrieval"]][:2] == ["baseline (vocab)", "oracle"]
    assert (out / "heatmap.png").read_bytes()[:8] == PNG_MAGIC
    md = (out / "study.md").read_text()
    assert "not significant" in md and "Spearman" in md and "Table 3" in md and md.strip() in text
    # Again: every run is finished, none is retrained.
    stamp = (out / "study_t/study_a/seed1/best/prompt.safetensors").stat().st_mtime_ns
    code, _, err = study(capsys, lib, out)
    assert code == 0, err
    assert (out / "study_t/study_a/seed1/best/prompt.safetensors").stat().st_mtime_ns == stamp
    assert json.loads((out / "study.json").read_text())["scores"] == report["scores"]


def test_transfer_study_cuts_every_runs_input_as_told(lib, tmp_path, capsys):
    out = tmp_path / "study"
    code, _, err = study(capsys, lib, out, "--max-input-tokens", "12", "--truncation", "tail")
    assert code == 0, err
    runs = sorted(out.glob("*/*/seed*/best/prompt.json"))
    assert len(runs) == 2 * (3 + 5)  # every init of both targets, both seeds
    settings = [json.loads(p.read_text())["training"] for p in runs]
    assert {(s["max_input_tokens"], s["truncation"]) for s in settings} == {(12, "tail")}


def test_transfer_study_without_label_init_runs_only_vocab_and_sources(lib, tmp_path, capsys):
    out = tmp_path / "study"
    code, text, err = study(capsys, lib, out, "--no-label-init", "--sources", "study_a")
    assert code == 0, err
    assert sorted(p.name for p in (out / "study_b").iterdir()) == ["study_a", "vocab"]
    assert sorted(p.name for p in (out / "study_t").iterdir()) == ["study_a", "vocab"]
    report = json.loads((out / "study.json").read_text())
    assert {t: sorted(inits) for t, inits in report["scores"].items()} == {
        "study_t": ["study_a", "vocab"],
        "study_b": ["study_a", "vocab"],
    }
    assert {t: sorted(tests) for t, tests in report["tests"].items()} == {
        t: ["retrieved", "study_a"] for t in ("study_t", "study_b")
    }
    assert "labels" not in (out / "study.md").read_text()


def test_transfer_study_bad_input_is_one_line(lib, tmp_path, capsys):
    for extra, needle in (
        (("--seeds", "0"), "--seeds"),
        (("--sources", "nope"), "nope"),
        (("--top-k", "0"), "--top-k"),
        (("--measure", "l2"), "--measure"),
        (("--truncation", "middle"), "--truncation"),
        (("--max-input-tokens", "0"), "--max-input-tokens"),
    ):
        code, _, err = study(capsys, lib, tmp_path / "s", *extra)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and needle in lines[0], err
    code, _, err = study(capsys, lib, tmp_path / "s", "--sources", "study_b")
    assert code == 2 and "study_b" in err and "own data" in err  # study_b is left no source


def test_embedding_study_correlates_each_embedding_with_the_gains(lib, tmp_path, capsys, monkeypatch):
    out = tmp_path / "study"
    assert study(capsys, lib, out, "--top-k", "5")[0] == 0  # more than any target's sources: top-k is every source
    code, text, err = run_cli(
        capsys, "embedding-study", "--study", out, "--library", lib, "--out", tmp_path / "emb", "--lengths", "2,4",
        "--steps", "2", "--batch-size", "8", "--optimizer", "adamw", "--max-eval", "4",
    )  # fmt: skip
    assert code == 0, err
    rows = json.loads((tmp_path / "emb/embeddings.json").read_text())["rows"]
    library_rows = [f"library {when}{centred}" for when in ("early", "late") for centred in ("", ", centred")]
    assert {(r["embedding"], r["measure"]) for r in rows} == {
        (e, m) for e in (*library_rows, "P2 step 2", "P4 step 2") for m in ("avg_cosine", "per_token_cosine")
    }
    spread = {(r["embedding"], r["measure"]): r["spread"]["per_token_cosine"] for r in rows}
    assert spread["library early", "per_token_cosine"] != spread["library early, centred", "per_token_cosine"]
    means = [r["mean"] for r in rows if r["mean"] is not None]  # null: undefined (one source)
    assert means == sorted(means, reverse=True)
    oracle = next(r for r in json.loads((out / "study.json").read_text())["retrieval"] if r["method"] == "oracle")
    assert {r["topk_score"] for r in rows} == {oracle["score"]}
    assert "| top-3 score |" in (tmp_path / "emb/embeddings.md").read_text()  # study_t's three sources
    assert (tmp_path / "emb/runs/P4-S2/study_a/embedding/prompt.safetensors").is_file()
    assert "Best predictor of gain" in text
    assert run_cli(capsys, "transfer-report", out, "--out", tmp_path / "merged")[0] == 0  # its runs stay in `out`
    code, _, err = run_cli(
        capsys, "embedding-study", "--study", tmp_path / "merged", "--library", lib, "--out", tmp_path / "emb",
        "--lengths", "2,4", "--steps", "2", "--batch-size", "8", "--optimizer", "adamw", "--max-eval", "4",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "emb/embeddings.json").read_text())["rows"] == rows
    (tmp_path / "lonely").mkdir()  # a study.json without its runs
    (tmp_path / "lonely" / "study.json").write_text((out / "study.json").read_text())
    monkeypatch.setattr(cli.runtime, "load_model", lambda name, precision: pytest.fail("loaded a model first"))
    code, _, err = run_cli(capsys, "embedding-study", "--study", tmp_path / "lonely", "--library", lib)
    assert code == 2 and "baseline run" in err and "is missing" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "embedding-study", "--study", tmp_path / "none", "--library", lib)
    assert code == 2 and "study.json" in err


def test_study_report_numbers_on_hand_made_scores():
    scores = {
        "t1": {BASE: [0.5, 0.5], "labels": [0.6, 0.4], "a": [0.7, 0.7], "b": [0.6, 0.6], "c": [0.4, 0.4]},
        "t2": {BASE: [0.4, 0.4], "labels": [0.4, 0.4], "a": [0.5, 0.5], "b": [0.3, 0.3]},
    }
    sims = {
        "t1": {"a": {"avg_cosine": 0.9, "per_token_cosine": 0.1}, "b": {"avg_cosine": 0.5, "per_token_cosine": 0.2},
               "c": {"avg_cosine": 0.1, "per_token_cosine": 0.3}},
        "t2": {"a": {"avg_cosine": 0.2, "per_token_cosine": 0.3}, "b": {"avg_cosine": 0.8, "per_token_cosine": 0.2}},
    }  # fmt: skip
    report = StudyReport(["t1", "t2"], {"t1": "accuracy", "t2": "accuracy"}, [0, 1], scores,
                         {"t1": ["a", "b", "c"], "t2": ["a", "b"]}, sims, top_k=1)  # fmt: skip
    assert report.retrieved("t1") == "a" and report.retrieved("t2") == "b"  # top-1 by avg_cosine
    rows = {r["method"]: r for r in report.retrieval()}
    assert rows["baseline (vocab)"]["score"] == pytest.approx(45.0)
    assert rows["oracle"]["per_target"] == pytest.approx({"t1": 70.0, "t2": 50.0})
    assert rows["avg_cosine best of top-1"]["change"] == pytest.approx((20 - 10) / 2)
    assert rows["avg_cosine best of top-3"]["score"] == pytest.approx(60.0)  # every source: the oracle
    corr = report.correlations()
    assert corr["avg_cosine"]["t1"] == pytest.approx(1.0) and corr["avg_cosine"]["t2"] == pytest.approx(-1.0)
    assert corr["per_token_cosine"]["t1"] == pytest.approx(-1.0) and corr["avg_cosine"]["mean"] == pytest.approx(0.0)
    tests = report.tests()
    assert tests["t1"][RETRIEVED]["gain"] == pytest.approx(0.2) and tests["t2"][RETRIEVED]["gain"] == pytest.approx(-0.1)
    # Holm over t1's family (labels, a, b, c): sign-flip p 1, 0.5, 0.5, 0.5 -> 0.5 x 3 = 1.5 -> 1 each.
    assert [tests["t1"][i]["p_holm"] for i in ("labels", "a", "b", "c")] == pytest.approx([1.0] * 4)
    assert tests["t1"][RETRIEVED]["p_holm"] == tests["t1"]["a"]["p_holm"]
    ps = report.correlation_p()
    assert ps["avg_cosine"]["t1"] == pytest.approx(2 / 6)  # 3 sources in perfect order: 2 of 3! pairings
    assert math.isnan(ps["avg_cosine"]["t2"])  # 2 sources: r is +-1 whatever they are
    assert "| avg_cosine, permutation p | 0.333 | n/a | | |" in report.markdown()
    assert StudyReport.from_dict(json.loads(json.dumps(report.to_dict()))).retrieval() == report.retrieval()


def test_one_source_per_target_reports_no_correlation_rather_than_nan(tmp_path):
    scores = {"t1": {BASE: [0.5, 0.4], "labels": [0.5, 0.5], "a": [0.7, 0.6]}}
    sims = {"t1": {"a": {"avg_cosine": 0.9, "per_token_cosine": 0.1}}}
    report = StudyReport(["t1"], {"t1": "accuracy"}, [0, 1], scores, {"t1": ["a"]}, sims, top_k=1)
    md = report.markdown()
    assert "nan" not in md and "| avg_cosine | n/a | n/a | n/a |" in md
    assert "at least two sources" in md
    write_report(report, tmp_path)
    text = (tmp_path / "study.json").read_text()
    saved = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in study.json"))  # strict JSON
    assert saved["correlation"]["avg_cosine"] == {"t1": None, "mean": None, "pooled": None}
    assert StudyReport.from_dict(saved).markdown() == md


def test_studies_run_apart_merge_into_one_report_with_each_targets_own_seeds(tmp_path, capsys):
    sim = {"avg_cosine": 0.5, "per_token_cosine": 0.5}
    one = StudyReport(["t1"], {"t1": "accuracy"}, [0, 1, 2], {"t1": {BASE: [0.5, 0.4, 0.5], "a": [0.7, 0.6, 0.6]}},
                      {"t1": ["a"]}, {"t1": {"a": {"avg_cosine": 0.9, "per_token_cosine": 0.9}}}, top_k=1)
    two = StudyReport(["t2"], {"t2": "f1"}, [0, 1], {"t2": {BASE: [0.4, 0.4], "a": [0.5, 0.5], "b": [0.3, 0.4]}},
                      {"t2": ["a", "b"]}, {"t2": {"a": sim, "b": {"avg_cosine": 0.1, "per_token_cosine": 0.1}}},
                      top_k=1)  # fmt: skip
    merged = StudyReport.merge([one, two])
    assert merged.targets == ["t1", "t2"] and merged.seed_counts() == {"t1": 3, "t2": 2}
    assert merged.tests()["t1"]["a"] == one.tests()["t1"]["a"]  # each target paired over its own seeds
    # pooled over the three (target, source) pairs: similarity 0.9, 0.5, 0.1 against gain 0.167, 0.1, -0.05
    assert merged.correlations()["avg_cosine"]["pooled"] == pytest.approx(1.0)
    assert "seeds t1 3, t2 2" in merged.markdown() and "(with 2 seeds no p goes below 0.5)" in merged.markdown()
    with pytest.raises(ConfigError, match="more than one study"):
        StudyReport.merge([one, one])
    for name, report in (("s1", one), ("s2", two)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "study.json").write_text(json.dumps(report.to_dict()))
    code, out, err = run_cli(capsys, "transfer-report", tmp_path / "s1", tmp_path / "s2", "--out", tmp_path / "both")
    assert code == 0, err
    assert "| t2 (f1) | vocab |" in out and (tmp_path / "both" / "heatmap.png").read_bytes()[:8] == PNG_MAGIC
    merged_json = json.loads((tmp_path / "both" / "study.json").read_text())
    assert merged_json["targets"] == ["t1", "t2"]
    assert merged_json["runs"] == {"t1": str((tmp_path / "s1").resolve()), "t2": str((tmp_path / "s2").resolve())}
    code, _, err = run_cli(capsys, "transfer-report", tmp_path / "nope", "--out", tmp_path / "x")
    assert code == 2 and "no study.json" in err and len(err.strip().splitlines()) == 1


def test_a_gain_significant_alone_is_flagged_when_holm_over_the_targets_inits_undoes_it():
    six = [0, 1, 2, 3, 4, 5]
    sims = {"a": {"avg_cosine": 0.9, "per_token_cosine": 0.9}, "b": {"avg_cosine": 0.1, "per_token_cosine": 0.1}}
    crowded = StudyReport(["t"], {"t": "accuracy"}, six,
                          {"t": {BASE: [0.5] * 6, "labels": [0.5] * 6, "a": [0.6] * 6, "b": [0.5] * 6}},
                          {"t": ["a", "b"]}, {"t": sims}, top_k=1)  # fmt: skip
    alone = StudyReport(["t"], {"t": "accuracy"}, six, {"t": {BASE: [0.5] * 6, "a": [0.6] * 6}},
                        {"t": ["a"]}, {"t": {"a": sims["a"]}}, top_k=1)  # fmt: skip
    # a beats vocab on all 6 seeds: p = 2 / 64; three inits tested (labels, a, b): Holm 3 x 2 / 64.
    assert crowded.tests()["t"]["a"]["p_holm"] == pytest.approx(6 / 64)
    assert "| 0.0938 | significant (not after Holm) |" in crowded.markdown()
    assert "After Holm's correction over each target's inits: 0 (none)" in crowded.markdown()
    assert alone.tests()["t"]["a"]["p_holm"] == pytest.approx(2 / 64)
    assert "| 0.0312 | significant, also after Holm |" in alone.markdown()
    assert "After Holm's correction over each target's inits: 1 (t)" in alone.markdown()


def test_a_source_significantly_below_vocab_is_called_a_loss_and_never_counted_as_a_gain():
    six = [0, 1, 2, 3, 4, 5]
    sims = {"a": {"avg_cosine": 0.9, "per_token_cosine": 0.9}}
    report = StudyReport(["t"], {"t": "accuracy"}, six, {"t": {BASE: [0.5] * 6, "a": [0.4] * 6}},
                         {"t": ["a"]}, {"t": sims}, top_k=1)  # fmt: skip
    # a is below vocab on all 6 seeds: p = 2 / 64, a significant difference, and it is a loss.
    assert report.tests()["t"]["a"]["word"] == "significant loss"
    row = "| -10.0 | -10.0 to -10.0 | 0.0312 | 0.0312 | 0.0312 | significant loss, also after Holm |"
    assert row in report.markdown()
    assert "significant positive gain from a source prompt: 0 of 1" in report.markdown()


def test_the_study_says_before_it_runs_what_its_seeds_cannot_show():
    from softprompt.spot.study import seeds_note

    assert "with 5 seeds no paired p goes below 0.0625" in seeds_note(5, 1) and "6 or more" in seeds_note(5, 1)
    # 6 seeds, 13 sources: 13 x 2/64 = 0.41, so Holm leaves nothing significant; 10 seeds can.
    assert seeds_note(6, 13) == (
        "note: with 6 seeds and 13 inits on a target, no gain can stay significant after Holm's correction "
        "(13 x 0.0312 >= 0.05); 10 seeds can"
    )
    assert seeds_note(6, 1) is None and seeds_note(10, 13) is None
