"""Load test of `softprompt serve`: mixed-task batching against one request at a time.

Saves a small prompt library for the embedded model (prompts for SST-2, CoLA and MRPC, two
for SST-2, plus an ensemble of those two), computes every answer offline with
`evaluate.predict`, then starts `softprompt serve` as a child process twice, with
mixed-task batching (--max-batch 32) and one request at a time (--max-batch 1), and sends
the same requests from K concurrent clients, each picking a task at random. Prints
throughput, p50/p99 latency, rows per forward pass, errors, lost requests and answers that
differ from offline predict, side by side.

    python benchmarks/serve_load.py                         # 200 requests, 32 clients, a few minutes on 2 cores
    python benchmarks/serve_load.py --requests 400 --clients 32 --max-batch 64

The prompts are initialisations (vocabulary / class-label embeddings), not trained: the
batching and the exactness do not depend on training, and making them takes a second. Dev
sentences come from ../shared/data ($SOFTPROMPT_DATA). Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

from softprompt.ensemble import combine_predictions
from softprompt.evaluate import predict
from softprompt.io import SavedPrompt, load_prompt, save_prompt
from softprompt.models.loading import load_model
from softprompt.prompt import make_prompt
from softprompt.scoring import PromptedLM
from softprompt.serve.library import make_example
from softprompt.tasks import saved_task
from softprompt.tasks import get_task


PROMPTS = {  # name: (task, init, seed)
    "sst2-vocab": ("sst2", "vocab", 0),
    "sst2-labels": ("sst2", "labels", 1),
    "cola": ("cola", "vocab", 2),
    "mrpc": ("mrpc", "labels", 3),
}
ENSEMBLES = {"sst2-ensemble": {"prompts": ["sst2-vocab", "sst2-labels"], "combine": "mean"}}


def build_library(lm, root: Path, length: int) -> None:
    emb = lm.model.get_input_embeddings().weight
    for name, (task_name, init, seed) in PROMPTS.items():
        task = get_task(task_name)
        prompt = make_prompt(length, init, emb, lm.tokenizer, seed=seed, labels=list(task.verbalizer.values()))
        save_prompt(root / name, SavedPrompt(prompt, lm.identity, task.meta(), init=init))
    (root / "ensembles.json").write_text(json.dumps(ENSEMBLES))


def make_requests(n: int, seed: int) -> list[tuple[str, dict]]:
    """`n` (served name, input fields) pairs, names at random, inputs from each task's dev set."""
    rng = random.Random(seed)
    pools = {task: get_task(task).load("dev") for task in {t for t, _, _ in PROMPTS.values()}}
    names = list(PROMPTS) + list(ENSEMBLES)
    out = []
    for _ in range(n):
        name = rng.choice(names)
        task = PROMPTS[ENSEMBLES[name]["prompts"][0] if name in ENSEMBLES else name][0]
        out.append((name, dict(rng.choice(pools[task]).fields)))
    return out


def offline_answers(lm, root: Path, requests) -> list[str]:
    """What `evaluate.predict` answers for each request (ensembles combined as the server does)."""
    plm = PromptedLM(lm)
    members = {name: ENSEMBLES[name]["prompts"] if name in ENSEMBLES else [name] for name, _ in requests}
    answers: dict[str, dict[int, tuple[str, list[float]]]] = {}  # prompt -> request index -> (label, scores)
    for prompt in PROMPTS:
        saved = load_prompt(root / prompt)
        task = saved_task(saved.task)
        idx = [i for i, (name, _) in enumerate(requests) if prompt in members[name]]
        preds, scores = predict(
            plm, saved.weight, task, [make_example(task, requests[i][1]) for i in idx], batch_size=32
        )
        answers[prompt] = {i: (p, s) for i, p, s in zip(idx, preds, scores)}
    out = []
    for i, (name, fields) in enumerate(requests):
        if name not in ENSEMBLES:
            out.append(answers[name][i][0])
            continue
        task = saved_task(load_prompt(root / members[name][0]).task)
        outputs = [([answers[m][i][0]], [answers[m][i][1]]) for m in members[name]]
        preds, _ = combine_predictions(task, [make_example(task, fields)], outputs, ENSEMBLES[name]["combine"])
        out.append(preds[0])
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    root: Path, max_batch: int, max_wait_ms: float, model: str | None, threads: int
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "softprompt",
        "serve",
        "--library",
        str(root),
        "--port",
        str(port),
        "--max-batch",
        str(max_batch),
        "--max-wait-ms",
        str(max_wait_ms),
        "--queue-size",
        "4096",
        "--threads",
        str(threads),
    ]
    if model:
        cmd += ["--model", model]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not start in 300 s")


async def load(url: str, requests, clients: int) -> dict:
    """Send `requests` from `clients` concurrent clients; per request (status, label, latency)."""
    queue: asyncio.Queue = asyncio.Queue()
    for i, r in enumerate(requests):
        queue.put_nowait((i, r))
    results: dict[int, tuple[int, str | None, float]] = {}

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            i, (name, fields) = queue.get_nowait()
            start = time.perf_counter()
            try:
                reply = await http.post("/classify", json={"task": name, "input": fields})
                label = reply.json()["results"][0]["label"] if reply.status_code == 200 else None
                results[i] = (reply.status_code, label, time.perf_counter() - start)
            except httpx.HTTPError:
                results[i] = (0, None, time.perf_counter() - start)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        await http.post("/classify", json={"task": requests[0][0], "input": requests[0][1]})  # warm up
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - start
        metrics = (await http.get("/metrics")).text
    return {"results": results, "wall": wall, "metrics": metrics}


def _metric(text: str, name: str) -> float:
    return float(next(l.split()[-1] for l in text.splitlines() if l.startswith(name + " ")))


def summarise(run: dict, requests, expected: list[str]) -> dict:
    res = run["results"]
    ok = [i for i, (status, _, _) in res.items() if status == 200]
    lat = sorted(res[i][2] for i in ok)
    pct = lambda q: 1000 * lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")
    rows = _metric(run["metrics"], "softprompt_batch_rows_sum")
    batches = _metric(run["metrics"], "softprompt_batch_rows_count")
    return {
        "throughput": len(ok) / run["wall"],
        "p50": pct(0.50),
        "p99": pct(0.99),
        "rows_per_batch": rows / batches if batches else float("nan"),
        "model_s": _metric(run["metrics"], "softprompt_batch_seconds_sum"),
        "errors": sum(1 for status, _, _ in res.values() if status != 200),
        "lost": len(requests) - len(res),
        "same": sum(1 for i in ok if res[i][1] == expected[i]),
        "wall": run["wall"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--prompt-length", type=int, default=20)
    parser.add_argument("--model", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads, here and in the server (1: fastest on a busy 2-core machine)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="softprompt-serve-load-") as tmp:
        root = Path(tmp)
        lm = load_model(args.model)
        build_library(lm, root, args.prompt_length)
        requests = make_requests(args.requests, args.seed)
        t0 = time.perf_counter()
        expected = offline_answers(lm, root, requests)
        print(f"offline predict: {len(requests)} answers in {time.perf_counter() - t0:.1f} s", flush=True)
        del lm
        modes = {"mixed-task batching": (args.max_batch, args.max_wait_ms), "one at a time": (1, 0.0)}
        summaries = {}
        for mode, (max_batch, wait) in modes.items():
            proc, url = start_server(root, max_batch, wait, args.model, args.threads)
            try:
                summaries[mode] = summarise(asyncio.run(load(url, requests, args.clients)), requests, expected)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
            print(f"{mode}: done in {summaries[mode]['wall']:.1f} s", flush=True)
    print_table(summaries, modes, args, len(requests))


def print_table(summaries: dict, modes: dict, args, n: int) -> None:
    names = list(summaries)
    rows = [
        ("max batch / max wait", lambda m, s: f"{modes[m][0]} / {modes[m][1]:g} ms"),
        ("requests (clients)", lambda m, s: f"{n} ({args.clients})"),
        ("throughput (req/s)", lambda m, s: f"{s['throughput']:.2f}"),
        ("p50 latency (ms)", lambda m, s: f"{s['p50']:.0f}"),
        ("p99 latency (ms)", lambda m, s: f"{s['p99']:.0f}"),
        ("rows per batch", lambda m, s: f"{s['rows_per_batch']:.1f}"),
        ("model busy (s of wall)", lambda m, s: f"{s['model_s']:.1f} of {s['wall']:.1f}"),
        ("errors / lost", lambda m, s: f"{s['errors']} / {s['lost']}"),
        ("answers = offline predict", lambda m, s: f"{s['same']}/{n}"),
    ]
    width = max(len(r[0]) for r in rows) + 2
    print()
    print("".join([" " * width] + [f"{m:>22}" for m in names]))
    for label, cell in rows:
        print(f"{label:<{width}}" + "".join(f"{cell(m, summaries[m]):>22}" for m in names))
    base = summaries[names[-1]]["throughput"]
    print(f"{'speed-up':<{width}}" + "".join(f"{summaries[m]['throughput'] / base:>21.2f}x" for m in names))
    print(f"\n{os.cpu_count()} CPU core(s); a shared machine: timings are noisy.")


if __name__ == "__main__":
    main()
