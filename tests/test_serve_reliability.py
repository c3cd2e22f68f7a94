"""Serving under bad libraries, bad prompts, hostile or oversized requests: one bad folder or
prompt never fails anyone else's request, nothing a client sends gives a 500, limits answer
413/422/504 with a message, the Host header and the API key guard the server, and blocking
work stays off the event loop. Tiny random model, prompts in tmp_path, uvicorn on loopback."""

from __future__ import annotations

import dataclasses
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from helpers import TOY, YN, learnable_llama, run_cli, save_library_prompt
from test_serve import TEXTS, offline

from softprompt.evaluate import predict
from softprompt.io import load_prompt
from softprompt.scoring import PromptedLM
from softprompt.serve.app import BackgroundServer, create_app
from softprompt.serve.library import make_example, scan_library
from softprompt.tasks import saved_task


@pytest.fixture(scope="module")
def lm():
    return learnable_llama()


@pytest.fixture(scope="module")
def library(lm, tmp_path_factory):
    lib = tmp_path_factory.mktemp("library")
    save_library_prompt(lib, "toy-a", lm, TOY, 4, 1, accuracy=0.5)
    save_library_prompt(lib, "yn", lm, YN, 5, 4)
    save_library_prompt(lib, "broken", lm, TOY, 4, 7)  # made unrunnable after loading, below
    save_library_prompt(lib, "nan", lm, TOY, 4, 8)  # gives NaN scores after loading, below
    return lib


@pytest.fixture(scope="module")
def server(lm, library):
    app = create_app(lm, library, max_batch=64, max_wait_ms=150, rescan_s=0, max_inputs=8, max_input_chars=200)
    prompts = app.state.server.library.scan.prompts
    prompts["broken"].weight = torch.zeros(4, lm.hidden_size + 3)  # loads, cannot run (wrong width)
    prompts["nan"].weight = torch.full((4, lm.hidden_size), float("nan"))
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        yield app, url, http


# -- the library ----------------------------------------------------------------------------


def _corrupt_library(lm, root):
    save_library_prompt(root, "good", lm, TOY, 4, 1)
    save_library_prompt(root, "latin1", lm, TOY, 4, 2)
    meta = root / "latin1" / "prompt.json"
    meta.write_bytes(meta.read_bytes().replace(b'"toy"', b'"t\xe9y"'))  # not UTF-8
    save_library_prompt(root, "bad-task", lm, TOY, 4, 3)
    meta = root / "bad-task" / "prompt.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "task": {"name": 5, "template": 3}}))
    save_library_prompt(root, "bad-tensor", lm, TOY, 4, 4)
    (root / "bad-tensor" / "prompt.safetensors").write_bytes(b"\x00garbage")
    (root / "empty").mkdir()
    (root / "ensembles.json").write_bytes(b'{"e": ["good", "g\xffod"]}')  # not UTF-8 either


def test_a_library_with_malformed_folders_serves_the_good_ones_and_lists_the_rest(lm, tmp_path):
    root = tmp_path / "lib"
    root.mkdir()
    _corrupt_library(lm, root)
    scan = scan_library(root, lm.identity, torch.device("cpu"))  # raised AttributeError / UnicodeDecodeError before
    assert list(scan.prompts) == ["good"]
    assert set(scan.skipped) == {"latin1", "bad-task", "bad-tensor", "empty", "ensembles.json"}
    assert "not UTF-8" in scan.skipped["latin1"] and "AttributeError" in scan.skipped["bad-task"]
    assert "not a readable safetensors" in scan.skipped["bad-tensor"]
    app = create_app(lm, root, rescan_s=0)
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        reply = http.post("/classify", json={"task": "good", "inputs": TEXTS[:3]})
        assert reply.status_code == 200, reply.text
        assert [r["label"] for r in reply.json()["results"]] == offline(lm, root, "good", TEXTS[:3])[1]
        listing = http.get("/prompts")
        assert listing.status_code == 200 and set(listing.json()["skipped"]) == set(scan.skipped)
        # Skipped reasons and prompt entries name files inside the library, never the server's paths.
        assert str(tmp_path) not in listing.text and listing.json()["prompts"][0]["path"] == "good"
        assert listing.json()["skipped"]["latin1"].startswith("latin1/prompt.json: not UTF-8")


# -- prompts that load but cannot run ------------------------------------------------------


def test_a_prompt_that_cannot_run_fails_only_its_own_rows(server, lm, library):
    app, url, http = server
    jobs = [("toy-a", t) for t in TEXTS[:4]] + [("broken", t) for t in TEXTS[:2]] + [("nan", TEXTS[0])]
    jobs += [("yn", t) for t in TEXTS[4:7]]
    with ThreadPoolExecutor(len(jobs)) as pool:  # max_wait_ms=150: they share batches
        replies = list(pool.map(lambda job: http.post("/classify", json={"task": job[0], "input": job[1]}), jobs))
    status = {name: {r.status_code for (n, _), r in zip(jobs, replies) if n == name} for name, _ in jobs}
    assert status == {"toy-a": {200}, "yn": {200}, "broken": {500}, "nan": {422}}
    for name in ("toy-a", "yn"):
        got = [r.json()["results"][0]["label"] for (n, _), r in zip(jobs, replies) if n == name]
        assert got == offline(lm, library, name, [t for n, t in jobs if n == name])[1]
    broken = next(r for (n, _), r in zip(jobs, replies) if n == "broken").json()["detail"]
    assert broken.startswith("prompt 'broken' failed on the model") and str(library) not in broken
    nan = next(r for (n, _), r in zip(jobs, replies) if n == "nan").json()["detail"]
    assert nan == "prompt 'nan' gives non-finite (NaN or inf) scores for this input"


# -- limits -------------------------------------------------------------------------------


def test_the_body_is_capped_before_it_is_parsed(lm, library):
    app = create_app(lm, library, max_body_bytes=1000)
    parsed = []
    original = app.state.server.classify_rows
    app.state.server.classify_rows = lambda req: parsed.append(req) or original(req)
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        body = json.dumps({"task": "toy-a", "input": "great " * 300}).encode()
        reply = http.post("/classify", content=body, headers={"content-type": "application/json"})
        assert reply.status_code == 413 and reply.json()["detail"] == f"request body of {len(body)} bytes; at most 1000"
        chunked = http.post(
            "/classify", content=iter([body[:600], body[600:]]), headers={"content-type": "application/json"}
        )
        assert chunked.status_code == 413 and chunked.json()["detail"] == "request body over 1000 bytes"
        assert parsed == []
        ok = http.post("/classify", json={"task": "toy-a", "input": "great"})
        assert ok.status_code == 200 and len(parsed) == 1
    assert create_app(lm, library).user_middleware  # the default cap (1 MiB) is installed too


@pytest.mark.parametrize(
    "body,message",
    [
        ({"task": "toy-a", "inputs": ["a"] * 1025}, "at most 1024 items"),
        ({"prompts": ["toy-a"] * 65, "input": "a"}, "at most 64 items"),
        ({"task": "t" * 257, "input": "a"}, "at most 256 characters"),
        ({"task": "toy-a", "input": "a" * 100_001}, "at most 100000 characters"),
        ({"task": "toy-a", "input": {f"f{i}": "a" for i in range(33)}}, "at most 32 items"),
        ({"task": "toy-a", "input": "a", "labels": ["good"]}, "at least 2 items"),
        ({"task": "toy-a", "input": "a", "labels": [f"w{i}" for i in range(65)]}, "at most 64 items"),
        ({"task": "toy-a", "input": "a", "labels": ["good", "good"]}, "'labels' repeats a word (good)"),
        ({"task": "toy-a", "input": "a", "labels": ["good", " "]}, "'labels' holds an empty word"),
    ],
)
def test_every_list_and_string_has_a_ceiling(server, body, message):
    app, url, http = server
    reply = http.post("/classify", json=body)
    assert reply.status_code == 422 and message in json.dumps(reply.json()["detail"]), reply.text


def test_a_request_past_its_deadline_gets_504(lm, library):
    app = create_app(lm, library, max_wait_ms=0, deadline_s=0.3)
    release = threading.Event()
    scheduler = app.state.server.scheduler
    run = scheduler._run
    scheduler._run = lambda rows: (release.wait(30), run(rows))[1]
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        reply = http.post("/classify", json={"task": "toy-a", "input": "great"})
        release.set()
        assert reply.status_code == 504 and "deadline of 0.3 s" in reply.json()["detail"]
        assert http.post("/classify", json={"task": "toy-a", "input": "great"}).status_code == 200


def test_tokenising_and_rescans_run_off_the_event_loop(server):
    app, url, http = server
    srv = app.state.server
    threads = []
    encode, refresh = srv.encoder.task_input_ids, srv.library.refresh
    srv.encoder.task_input_ids = lambda *args: threads.append(threading.current_thread().name) or encode(*args)
    srv.library.refresh = lambda: threads.append(threading.current_thread().name) or refresh()
    try:
        assert http.post("/classify", json={"task": "toy-a", "input": "great"}).status_code == 200
        assert http.get("/prompts").status_code == 200
    finally:
        del srv.encoder.task_input_ids, srv.library.refresh
    assert len(threads) >= 3 and set(threads) == {"softprompt-prep_0"}


# -- per-request label words --------------------------------------------------------------


@pytest.mark.parametrize("name", ["toy-a", "yn"])
def test_classify_ranks_the_label_words_a_request_gives(server, lm, library, name):
    app, url, http = server
    words = ["great", "awful", "maybe movie"]
    reply = http.post("/classify", json={"task": name, "inputs": TEXTS[:6], "labels": words})
    assert reply.status_code == 200, reply.text
    saved = load_prompt(library / name)
    base = saved_task(saved.task)
    task = dataclasses.replace(base, verbalizer={w: w for w in words})
    preds, scores = predict(PromptedLM(lm), saved.weight, task, [make_example(task, t) for t in TEXTS[:6]])
    results = reply.json()["results"]
    assert [r["label"] for r in results] == preds
    assert [list(r["scores"]) for r in results] == [words] * 6
    assert [list(r["scores"].values()) for r in results] == [pytest.approx(s, abs=1e-5) for s in scores]


# -- security -----------------------------------------------------------------------------


def test_the_host_header_must_name_the_server(server):
    app, url, http = server
    port = url.rsplit(":", 1)[1]
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", ""):
        reply = http.get("/health", headers={"host": host})
        assert reply.status_code == 421 and "DNS-rebinding" in reply.json()["detail"], host
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "[::1]", "LOCALHOST"):
        assert http.get("/health", headers={"host": host}).status_code == 200, host


def test_an_empty_api_key_is_refused_not_ignored(lm, library):
    with pytest.raises(ValueError, match="api_key is empty"):
        create_app(lm, library, api_key="")


def test_serve_refuses_beyond_loopback_without_a_key_and_an_empty_key(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("SOFTPROMPT_API_KEY", raising=False)
    code, _, err = run_cli(capsys, "serve", "--library", tmp_path, "--host", "0.0.0.0")
    assert code == 2 and err.strip() == (
        "error: --host 0.0.0.0 listens beyond loopback: set --api-key (or SOFTPROMPT_API_KEY) to serve there"
    )
    code, _, err = run_cli(capsys, "serve", "--library", tmp_path, "--api-key", "")
    assert code == 2 and err.startswith("error: --api-key is empty")
    # The key from the environment counts (past the key checks, the missing library is reported).
    monkeypatch.setenv("SOFTPROMPT_API_KEY", "k3y")
    code, _, err = run_cli(capsys, "serve", "--library", tmp_path / "nope", "--host", "0.0.0.0")
    assert code == 2 and err.strip() == f"error: --library {tmp_path / 'nope'}: folder not found"
    code, out, _ = run_cli(capsys, "serve", "--help")
    assert "SOFTPROMPT_API_KEY" in out
