"""Soak and fault test of `softprompt serve` on loopback.

Concurrent clients send mixed classify / generate requests to a server (uvicorn in a thread
of this process) while a fault thread keeps changing its library: prompt folders are added,
corrupted (bytes that are not UTF-8, not JSON, not safetensors, a wrong task), removed, and
ensembles.json rewritten; other clients drop their connection mid-request. Every answer to a
valid request is checked against offline `evaluate.predict`. Prints requests, concurrency,
faults injected, 500s, lost answers (a valid request not answered 200), wrong answers and the
process RSS at the start (after warm-up) and the end.

    python benchmarks/serve_soak.py                      # embedded model, 60 s, 8 clients
    python benchmarks/serve_soak.py --seconds 300 --clients 16 --model NAME

`tests/test_serve_soak.py` runs `soak` for a few seconds on a tiny random model.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

from softprompt.evaluate import predict
from softprompt.io import SavedPrompt, save_prompt
from softprompt.scoring import PromptedLM
from softprompt.serve.app import BackgroundServer, create_app
from softprompt.serve.library import make_example
from softprompt.tasks import saved_task

TASKS = {
    "cls-a": {
        "name": "soak-a",
        "template": "review: {text} verdict:",
        "verbalizer": {"neg": "negative", "pos": "positive"},
        "metrics": ["accuracy"],
    },
    "cls-b": {
        "name": "soak-b",
        "template": "question: {text} answer:",
        "verbalizer": {"y": "yes", "n": "no", "m": "maybe"},
        "metrics": ["accuracy"],
    },
    "gen": {"name": "soak-gen", "template": "{text} :", "verbalizer": None, "metrics": ["squad_em"]},
}
TEXTS = [
    "great movie",
    "awful",
    "a b c great",
    "no",
    "yes maybe",
    "the movie is so awful",
    "d e f",
    "really great really",
    "what is it ?",
    "7 8 9 movie",
]
GEN_TOKENS = 4


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; psutil elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss


def _prompt(lm, task: dict, length: int, seed: int) -> SavedPrompt:
    weight = torch.randn(length, lm.hidden_size, generator=torch.Generator().manual_seed(seed)) * 0.3
    return SavedPrompt(weight, lm.identity, task)


def expected_answers(lm, saved: dict[str, SavedPrompt]) -> dict[tuple[str, str], object]:
    """(prompt, text) -> offline answer: (label, scores) for classification, text for generation."""
    plm, out = PromptedLM(lm), {}
    for name, prompt in saved.items():
        task = saved_task(prompt.task)
        if not task.is_classification:
            import dataclasses

            task = dataclasses.replace(task, max_new_tokens=GEN_TOKENS)
        preds, scores = predict(plm, prompt.weight, task, [make_example(task, t) for t in TEXTS], batch_size=4)
        for i, text in enumerate(TEXTS):
            out[name, text] = (preds[i], scores[i]) if task.is_classification else preds[i]
    return out


def _corrupt(folder: Path, rng: random.Random, lm) -> None:
    """A prompt folder that must be skipped: one of several kinds of damage."""
    save_prompt(folder, _prompt(lm, TASKS["cls-a"], 3, rng.randrange(1000)))
    kind = rng.randrange(5)
    meta = folder / "prompt.json"
    if kind == 0:
        meta.write_bytes(b"\xff\xfe" + os.urandom(40))  # not UTF-8
    elif kind == 1:
        meta.write_text('{"model": ')  # not JSON
    elif kind == 2:
        (folder / "prompt.safetensors").write_bytes(os.urandom(64))
    elif kind == 3:
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "task": {"name": 5, "template": []}}))
    else:
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "prompt_length": 99}))


def _faults(lm, root: Path, stop: threading.Event, url: str, counts: dict, seed: int) -> None:
    rng = random.Random(seed)
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    extra: list[Path] = []
    i = 0
    while not stop.is_set():
        i += 1
        action = rng.randrange(6)
        try:
            if action == 0:  # a valid prompt appears
                save_prompt(root / f"extra-{i}", _prompt(lm, TASKS["cls-b"], 2 + i % 3, i))
                extra.append(root / f"extra-{i}")
            elif action == 1:  # a broken folder appears
                _corrupt(root / f"junk-{i}", rng, lm)
                extra.append(root / f"junk-{i}")
            elif action == 2 and extra:  # a folder disappears
                shutil.rmtree(extra.pop(rng.randrange(len(extra))), ignore_errors=True)
            elif action == 3:  # ensembles.json rewritten, valid or not
                data = rng.choice([b'{"ens": ["cls-a", "cls-a"]}', b"\xff\xfe[", b'{"ens": {"prompts": 3}}', b"[]"])
                (root / "ensembles.json").write_bytes(data)
            elif action == 4:  # a client sends half a request and hangs up
                with socket.create_connection((host, int(port)), timeout=5) as sock:
                    body = json.dumps({"task": "cls-a", "inputs": TEXTS}).encode()
                    sock.sendall(
                        b"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(body) + body[: rng.randrange(len(body))]
                    )
            else:  # a client sends a whole request and hangs up before the answer
                with socket.create_connection((host, int(port)), timeout=5) as sock:
                    body = json.dumps({"task": "gen", "inputs": TEXTS[:4], "max_tokens": GEN_TOKENS}).encode()
                    sock.sendall(
                        b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(body) + body
                    )
            counts["faults"] += 1
        except OSError:
            counts["fault_errors"] += 1
        stop.wait(0.02)


def _client(url: str, expected: dict, stop: threading.Event, counts: dict, lock: threading.Lock, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=120) as http:
        while not stop.is_set():
            name = rng.choice(["cls-a", "cls-b", "gen"])
            texts = rng.sample(TEXTS, rng.randint(1, 4))
            path = "/generate" if name == "gen" else "/classify"
            body = {"task": name, "inputs": texts, **({"max_tokens": GEN_TOKENS} if name == "gen" else {})}
            try:
                reply = http.post(path, json=body)
            except httpx.HTTPError:
                with lock:
                    counts["requests"] += 1
                    counts["lost"] += 1
                continue
            wrong = 0
            if reply.status_code == 200:
                for text, result in zip(texts, reply.json()["results"]):
                    want = expected[name, text]
                    if name == "gen":
                        wrong += result["text"] != want
                    else:
                        label, scores = want
                        got = list(result["scores"].values())
                        wrong += result["label"] != label or max(abs(a - b) for a, b in zip(got, scores)) > 1e-3
            with lock:
                counts["requests"] += 1
                counts["500s"] += reply.status_code >= 500
                counts["lost"] += reply.status_code != 200
                counts["wrong"] += wrong


def soak(lm, seconds: float = 60.0, clients: int = 8, seed: int = 0, workdir: Path | None = None) -> dict:
    """Run the soak for `seconds` with `clients` concurrent clients; the figures as a dict."""
    root = Path(tempfile.mkdtemp(prefix="soak-", dir=workdir))
    try:
        saved = {name: _prompt(lm, task, 3 + i, seed + i) for i, (name, task) in enumerate(TASKS.items())}
        for name, prompt in saved.items():
            save_prompt(root / name, prompt)
        expected = expected_answers(lm, saved)
        app = create_app(lm, root, max_batch=32, max_wait_ms=5, rescan_s=0.05, max_tokens=GEN_TOKENS * 2)
        counts = dict.fromkeys(("requests", "500s", "lost", "wrong", "faults", "fault_errors"), 0)
        lock = threading.Lock()
        with BackgroundServer(app) as url:
            warm = threading.Event()
            threads = [threading.Thread(target=_client, args=(url, expected, warm, dict(counts), lock, seed + 100))]
            threads[0].start()
            time.sleep(min(2.0, seconds / 4))  # warm-up: allocator pools, prepared prompts
            warm.set()
            threads[0].join()
            gc.collect()
            rss_start = rss_bytes()
            stop = threading.Event()
            threads = [threading.Thread(target=_faults, args=(lm, root, stop, url, counts, seed))]
            threads += [
                threading.Thread(target=_client, args=(url, expected, stop, counts, lock, seed + c))
                for c in range(clients)
            ]
            for t in threads:
                t.start()
            time.sleep(seconds)
            stop.set()
            for t in threads:
                t.join(timeout=180)
            status = httpx.get(f"{url}/metrics", timeout=30).text
        gc.collect()
        served_500 = sum(
            float(line.split()[-1])
            for line in status.splitlines()
            if line.startswith("softprompt_requests_total{") and 'status="5' in line
        )
        return {
            **counts,
            "clients": clients,
            "seconds": seconds,
            "server_5xx": int(served_500),
            "rss_start_mb": rss_start / 2**20,
            "rss_end_mb": rss_bytes() / 2**20,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(figures: dict) -> str:
    return (
        f"soak: {figures['requests']} requests from {figures['clients']} concurrent clients over "
        f"{figures['seconds']:g} s; {figures['faults']} faults injected; {figures['500s']} answered 500 "
        f"(server counted {figures['server_5xx']} 5xx); {figures['lost']} lost, {figures['wrong']} wrong answers; "
        f"RSS {figures['rss_start_mb']:.0f} MiB at start, {figures['rss_end_mb']:.0f} MiB at end"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model name (default: the embedded one)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from softprompt.models.loading import load_model

    lm = load_model(args.model) if args.model else load_model()
    print(report(soak(lm, args.seconds, args.clients, args.seed)))


if __name__ == "__main__":
    main()
