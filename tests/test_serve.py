"""Serving: per-row-prompt scoring equals per-prompt scoring; the real HTTP server (uvicorn on
loopback, tiny model, tiny prompts in tmp_path) answers concurrent mixed-task and ensemble
requests exactly as offline `evaluate.predict` does; bad input gets a 4xx with a message; a
prompt added while it runs is served; `eval` with several prompts reports the ensemble."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from helpers import (
    ECHO,
    TOY,
    YN,
    cli_loads,
    learnable_llama,
    prompt_tensor,
    run_cli,
    save_library_prompt,
    tiny_llama,
    tiny_t5,
    toy_rows,
    write_csv,
)

from softprompt.ensemble import combine_predictions
from softprompt.evaluate import predict
from softprompt.io import load_prompt
from softprompt.scoring import PromptedLM
from softprompt.serve.app import BackgroundServer, create_app
from softprompt.serve.client import Client, ServerError
from softprompt.serve.library import make_example
from softprompt.serve.scheduler import split_by_length
from softprompt.tasks import saved_task

TEXTS = [s for s, _ in toy_rows(12, seed=3)] + ["great", "a b c d e f g awful movie", "no", "yes maybe 7"]

# Candidates of different lengths: multi-token label words ("maybe sentence") take the second pass.
INPUTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14], [20, 21]]
CANDIDATES = [[[45], [46, 47, 48]], [[46], [45], [49, 50, 51, 52]], [[49, 50], [5]], [[7], [8, 9]]]


# -- per-row prompts --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fast", "plain", "t5"])
def test_per_row_prompts_score_and_generate_as_each_prompt_alone(kind):
    lm = tiny_t5() if kind == "t5" else learnable_llama()
    plm = PromptedLM(lm, fast=kind == "fast")
    a, b, c = (prompt_tensor(lm.hidden_size, n, s) for n, s in ((4, 1), (7, 2), (4, 3)))
    rows = [a, b, c, a]  # different lengths, one prompt twice
    got = plm.score_rows(rows, INPUTS, CANDIDATES)
    alone = [plm.score(p, [i], [cands])[0] for p, i, cands in zip(rows, INPUTS, CANDIDATES)]
    for g, r in zip(got, alone):
        assert [n for _, n in g] == [n for _, n in r]
        assert [s for s, _ in g] == pytest.approx([s for s, _ in r], abs=1e-5)
    assert plm.generate_rows(rows, INPUTS, 5) == [plm.generate(p, [i], 5)[0] for p, i in zip(rows, INPUTS)]
    # Prompts matter: the same input under another prompt scores differently.
    under_a, under_b = (plm.score_rows([p], INPUTS[:1], CANDIDATES[:1])[0][0][0] for p in (a, b))
    assert under_a != pytest.approx(under_b, abs=1e-4)


def test_per_row_prompts_with_prepared_prompts_and_a_prompt_sharing_batch():
    lm = learnable_llama()
    plm = PromptedLM(lm)
    a, b = prompt_tensor(lm.hidden_size, 3, 1), prompt_tensor(lm.hidden_size, 8, 2)
    prepared = {id(a): plm.prepare(a), id(b): plm.prepare(b)}
    rows = [b, a, b, a]
    got = plm.score_rows([prepared[id(p)] for p in rows], INPUTS, CANDIDATES)
    shared = plm.score(prepared[id(b)], INPUTS[::2], CANDIDATES[::2])
    assert [s for row in got[::2] for s, _ in row] == pytest.approx([s for row in shared for s, _ in row], abs=1e-5)


def test_a_batch_is_cut_by_input_length_only_where_padding_costs_more_than_a_pass():
    assert split_by_length([20, 60, 22, 61, 15, 58, 21], pass_cost=32) == [[4, 0, 6, 2], [5, 1, 3]]
    assert split_by_length([20, 21, 22], pass_cost=32) == [[0, 1, 2]]
    assert split_by_length([20, 60, 22], pass_cost=1000) == [[0, 2, 1]]
    assert split_by_length([5, 200], pass_cost=32) == [[0], [1]]


# -- the HTTP server --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lm():
    return learnable_llama()


@pytest.fixture(scope="module")
def library(lm, tmp_path_factory):
    lib = tmp_path_factory.mktemp("library")
    save_library_prompt(lib, "toy-a", lm, TOY, 4, 1, accuracy=0.5)
    save_library_prompt(lib, "toy-b", lm, TOY, 6, 2, accuracy=0.9)
    save_library_prompt(lib, "toy-c", lm, TOY, 4, 3, accuracy=0.7)
    save_library_prompt(lib, "yn", lm, YN, 5, 4)
    save_library_prompt(lib, "echo", lm, ECHO, 3, 5)
    save_library_prompt(lib, "other-model", tiny_llama(seed=5, hidden_size=16), TOY, 4, 6)
    (lib / "ensembles.json").write_text(
        json.dumps(
            {
                "toy-vote": {"prompts": ["toy-a", "toy-b", "toy-c"], "combine": "vote"},
                "toy-mean": ["toy-a", "toy-b", "toy-c"],
                "mixed": ["toy-a", "yn"],
            }
        )
    )
    return lib


@pytest.fixture(scope="module")
def server(lm, library):
    app = create_app(lm, library, max_batch=64, max_wait_ms=100, rescan_s=0, max_inputs=8, max_input_chars=200)
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        yield url, http  # one client: making one loads the TLS certificates (slow on a busy machine)


def offline(lm, library, name, texts, max_new_tokens=None):
    """`evaluate.predict` with prompt `name` from the library folder, one call for all texts."""
    saved = load_prompt(library / name)
    task = saved_task(saved.task)
    preds, scores = predict(PromptedLM(lm), saved.weight, task, [make_example(task, t) for t in texts], batch_size=5)
    return task, preds, scores


def test_concurrent_mixed_task_requests_equal_offline_predict(server, lm, library):
    url, http = server
    jobs = [("toy-a", t) for t in TEXTS[:6]] + [("toy-b", t) for t in TEXTS[6:12]]
    jobs += [("yn", t) for t in TEXTS[:8]] + [("toy", t) for t in TEXTS[12:]]
    with ThreadPoolExecutor(len(jobs)) as pool:
        replies = list(pool.map(lambda job: http.post("/classify", json={"task": job[0], "input": job[1]}), jobs))
    assert [r.status_code for r in replies] == [200] * len(jobs)
    for name in ("toy-a", "toy-b", "yn"):
        texts = [t for n, t in jobs if n == name]
        task, preds, scores = offline(lm, library, name, texts)
        got = [r.json() for (n, _), r in zip(jobs, replies) if n == name]
        assert [g["results"][0]["label"] for g in got] == preds
        for g, s in zip(got, scores):
            assert list(g["results"][0]["scores"].values()) == pytest.approx(s, abs=1e-5)
            assert list(g["results"][0]["scores"]) == list(task.labels)
    by_task = [r.json() for (n, _), r in zip(jobs, replies) if n == "toy"]
    assert {tuple(b["prompts"]) for b in by_task} == {("toy-b",)}  # the best dev score answers for the task
    assert [b["results"][0]["label"] for b in by_task] == offline(lm, library, "toy-b", TEXTS[12:])[1]
    text = http.get("/metrics").text
    batches = float(_metric(text, "softprompt_batch_rows_count"))
    assert float(_metric(text, "softprompt_rows_total")) >= len(jobs) > batches  # rows of several tasks shared passes


def _metric(text: str, name: str) -> str:
    return next(line.split()[-1] for line in text.splitlines() if line.startswith((name + " ", name + "{")))


def test_many_inputs_in_one_request_and_length_normalisation(server, lm, library):
    url, http = server
    reply = http.post("/classify", json={"task": "yn", "inputs": TEXTS[:8], "length_normalize": True})
    assert reply.status_code == 200, reply.text
    saved = load_prompt(library / "yn")
    task = saved_task(saved.task)
    examples = [make_example(task, t) for t in TEXTS[:8]]
    preds, scores = predict(PromptedLM(lm), saved.weight, task, examples, length_normalize=True)
    results = reply.json()["results"]
    assert [r["label"] for r in results] == preds
    assert [list(r["scores"].values()) for r in results] == [pytest.approx(s, abs=1e-5) for s in scores]
    assert all(sum(r["probabilities"].values()) == pytest.approx(1.0) for r in results)


@pytest.mark.parametrize(
    "request_body,method",
    [
        ({"task": "toy-vote"}, "vote"),
        ({"task": "toy-mean"}, "mean"),
        ({"prompts": ["toy-a", "toy-b", "toy-c"], "combine": "vote"}, "vote"),
    ],
)
def test_ensembles_equal_offline_combination(server, lm, library, request_body, method):
    url, http = server
    reply = http.post("/classify", json={**request_body, "inputs": TEXTS[:8]})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["prompts"] == ["toy-a", "toy-b", "toy-c"] and body["combine"] == method
    outputs = [offline(lm, library, name, TEXTS[:8])[1:] for name in body["prompts"]]
    task = saved_task(load_prompt(library / "toy-a").task)
    preds, probs = combine_predictions(task, [make_example(task, t) for t in TEXTS[:8]], outputs, method)
    assert [r["label"] for r in body["results"]] == preds
    for r, p, i in zip(body["results"], probs, range(8)):
        assert list(r["probabilities"].values()) == pytest.approx(p, abs=1e-5)
        assert [m["label"] for m in r["members"]] == [o[0][i] for o in outputs]
        assert sum(r["votes"].values()) == 3


def test_generate_equals_offline_greedy_text(server, lm, library):
    url, http = server
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda t: http.post("/generate", json={"task": "echo", "input": t}), TEXTS[:4]))
    assert [r.status_code for r in replies] == [200] * 4
    _, preds, _ = offline(lm, library, "echo", TEXTS[:4])
    assert [r.json()["results"][0]["text"] for r in replies] == preds
    short = http.post("/generate", json={"task": "echo", "inputs": TEXTS[:4], "max_tokens": 2}).json()
    assert all(len(r["text"].split()) <= 2 for r in short["results"])


def test_prompts_health_metrics_and_openapi(server):
    url, http = server
    listing = http.get("/prompts").json()
    assert sorted(p["name"] for p in listing["prompts"]) == ["echo", "toy-a", "toy-b", "toy-c", "yn"]
    toy_b = next(p for p in listing["prompts"] if p["name"] == "toy-b")
    assert toy_b["dev_metrics"] == {"accuracy": 0.9} and toy_b["labels"] == ["neg", "pos"]
    assert toy_b["prompt_length"] == 6
    assert "hidden size 16" in listing["skipped"]["other-model"]
    assert "different labels" in listing["skipped"]["mixed"]
    assert listing["names"]["toy"] == {"kind": "classify", "prompts": ["toy-b"]}
    assert listing["names"]["echo"]["kind"] == "generate"
    assert http.get("/health").json()["status"] == "ok"
    metrics = http.get("/metrics")
    assert metrics.status_code == 200 and "text/plain" in metrics.headers["content-type"]
    assert 'softprompt_requests_total{endpoint="/prompts",status="200"}' in metrics.text
    assert "softprompt_request_seconds_bucket" in metrics.text and "softprompt_batch_rows_bucket" in metrics.text
    assert "/classify" in http.get("/openapi.json").json()["paths"]
    assert http.get("/docs").status_code == 200


@pytest.mark.parametrize(
    "path,body,status,message",
    [
        ("/classify", {"task": "nope", "input": "great"}, 404, "unknown task, prompt or ensemble 'nope'"),
        ("/classify", {"prompts": ["toy-a", "nope"], "input": "great"}, 404, "unknown prompt(s) nope"),
        ("/classify", {"task": "toy-a", "input": "   "}, 422, "input 0 is empty"),
        ("/classify", {"task": "toy-a", "inputs": []}, 422, "'inputs' is empty"),
        ("/classify", {"task": "toy-a"}, 422, "exactly one of 'input' or 'inputs'"),
        ("/classify", {"input": "great"}, 422, "name a 'task'"),
        ("/classify", {"task": "toy-a", "input": "a" * 201}, 413, "201 characters; at most 200"),
        ("/classify", {"task": "toy-a", "inputs": ["great"] * 9}, 413, "9 inputs in one request; at most 8"),
        ("/classify", {"task": "yn", "input": {"question": "yes"}}, 422, "needs field(s) q"),
        ("/classify", {"task": "echo", "input": "great"}, 400, "generation task"),
        ("/classify", {"prompts": ["toy-a", "yn"], "input": "great"}, 400, "different labels"),
        ("/classify", {"task": "toy-a", "input": "great", "combine": "median"}, 422, "mean"),
        ("/generate", {"task": "echo", "input": "great", "max_tokens": 10_000}, 422, "at most 256"),
        ("/generate", {"task": "echo", "input": "great", "max_tokens": 0}, 422, "greater than or equal to 1"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(server, path, body, status, message):
    url, http = server
    reply = http.post(path, json=body)
    assert reply.status_code == status, reply.text
    assert message in json.dumps(reply.json()["detail"])


def test_malformed_json_is_422(server):
    url, http = server
    reply = http.post("/classify", content=b'{"task": "toy-a", "input": ', headers={"content-type": "application/json"})
    assert reply.status_code == 422 and "JSON" in reply.text


def test_a_prompt_added_while_serving_is_picked_up(server, lm, library):
    url, http = server
    assert http.post("/classify", json={"task": "toy-late", "input": "great"}).status_code == 404
    save_library_prompt(library, "toy-late", lm, TOY, 2, 9)
    reply = http.post("/classify", json={"task": "toy-late", "inputs": TEXTS[:3]})
    assert reply.status_code == 200, reply.text
    assert [r["label"] for r in reply.json()["results"]] == offline(lm, library, "toy-late", TEXTS[:3])[1]
    assert "toy-late" in [p["name"] for p in http.get("/prompts").json()["prompts"]]


def test_api_key_is_required_when_set(lm, library):
    app = create_app(lm, library, api_key="s3cret")
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        assert http.post("/classify", json={"task": "toy-a", "input": "great"}).status_code == 401
        assert http.get("/prompts", headers={"X-API-Key": "wrong"}).status_code == 401
        assert http.get("/health").status_code == 200
        with Client(url, api_key="s3cret") as client:
            assert client.classify("toy-a", "great")[0]["label"] == offline(lm, library, "toy-a", ["great"])[1][0]
        with pytest.raises(ServerError, match="401"):
            Client(url).prompts()


def test_a_full_queue_answers_503_and_loses_nothing(lm, library):
    app = create_app(lm, library, max_batch=1, max_wait_ms=0, queue_size=3)
    entered, release = threading.Event(), threading.Event()
    scheduler = app.state.server.scheduler
    run = scheduler._run

    def held(rows):  # hold the model thread until released
        entered.set()
        release.wait(30)
        return run(rows)

    scheduler._run = held
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=60) as http, ThreadPoolExecutor(4) as pool:
        post = lambda text: http.post("/classify", json={"task": "toy-a", "input": text})
        first = pool.submit(post, TEXTS[0])
        assert entered.wait(20)
        queued = [pool.submit(post, t) for t in TEXTS[1:4]]
        _wait_for(lambda: http.get("/health").json()["queue"] == 3)
        refused = post(TEXTS[4])
        assert refused.status_code == 503 and "server busy" in refused.json()["detail"]
        assert refused.headers["retry-after"] == "1"
        release.set()
        replies = [first.result()] + [q.result() for q in queued]
    assert [r.status_code for r in replies] == [200] * 4
    assert [r.json()["results"][0]["label"] for r in replies] == offline(lm, library, "toy-a", TEXTS[:4])[1]


def _wait_for(condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


# -- the command line ---------------------------------------------------------------------------


def test_predict_through_the_server_prints_what_offline_predict_gives(server, lm, library, capsys):
    url, _ = server
    code, out, err = run_cli(capsys, "predict", "--server", url, "--task", "yn", stdin="\n".join(TEXTS[:5]) + "\n\n")
    assert code == 0, err
    assert out.splitlines() == offline(lm, library, "yn", TEXTS[:5])[1]
    code, _, err = run_cli(capsys, "predict", "--server", url, "--task", "nope", stdin="great\n")
    assert code == 2 and "does not serve 'nope'" in err
    code, _, err = run_cli(capsys, "predict", "--server", url, stdin="great\n")
    assert code == 2 and err.startswith("error: --task")
    code, _, err = run_cli(capsys, "predict", stdin="great\n")
    assert code == 2 and err.startswith("error: --prompt")


def test_eval_with_several_prompts_reports_each_the_average_and_the_ensembles(
    lm, library, monkeypatch, capsys, tmp_path
):
    cli_loads(monkeypatch, lm)
    dev = write_csv(tmp_path / "dev.csv", toy_rows(16, seed=1))
    names = ["toy-a", "toy-b", "toy-c"]
    data = (
        "--dev-file",
        dev,
        "--text-field",
        "sentence",
        "--labels",
        "neg=negative,pos=positive",
        "--template",
        TOY["template"],
    )
    prompts = [a for n in names for a in ("--prompt", library / n)]
    code, out, err = run_cli(capsys, "eval", *prompts, *data, "--output", tmp_path / "e.json")
    assert code == 0, err
    report = json.loads((tmp_path / "e.json").read_text())
    singles = []
    for n in names:
        args = ("--prompt", library / n, *data, "--output", tmp_path / f"{n}.json")
        code, single_out, err = run_cli(capsys, "eval", *args)
        assert code == 0, err
        singles.append(json.loads((tmp_path / f"{n}.json").read_text()))
        assert single_out.startswith("toy dev (16 examples): accuracy")
    assert [m["metrics"] for m in report["members"]] == [s["metrics"] for s in singles]
    assert report["average"]["accuracy"] == pytest.approx(sum(s["metrics"]["accuracy"] for s in singles) / 3)
    assert set(report["ensembles"]) == {"mean", "vote"}
    for line in ("average: accuracy", "ensemble (mean probability): accuracy", "ensemble (majority vote): accuracy"):
        assert line in out
    code, _, err = run_cli(capsys, "eval", "--prompt", library / "toy-a", "--prompt", library / "yn", *data)
    assert code == 2 and "other label words" in err


def test_serve_rejects_a_missing_library(capsys, tmp_path):
    code, _, err = run_cli(capsys, "serve", "--library", tmp_path / "nope")
    assert code == 2 and err.strip() == f"error: --library {tmp_path / 'nope'}: folder not found"
