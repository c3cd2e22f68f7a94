"""The page at `/` for the people who run a server, and the read-only JSON it needs beyond the API.

    GET /                    static/index.html (no key needed: it holds no data)
    GET /web/static/{file}   static/app.js, static/style.css (local files, no CDN, no build step)
    GET /web/library         per served prompt: folder size, created, has embedding/, has log.jsonl
    GET /web/similarity      both SPoT measures between every pair of served prompts' task embeddings
    GET /web/curves?run=N    loss and dev metrics of the training output folder N of the library
    GET /web/stats           requests, batch sizes, latency percentiles from the server's metrics

The /web/ data endpoints take the same API key as the API (`dependencies`); the page asks for
the key once, keeps it in sessionStorage and sends it as X-API-Key.
"""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import torch
from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from softprompt.errors import SoftPromptError
from softprompt.io import META_FILE, PROMPT_FILE, load_prompt
from softprompt.plots import read_log
from softprompt.spot.similarity import MEASURES

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css", "index.html": "text/html"}
LOG_FILE = "log.jsonl"
# The page and its files come from this server only; no inline script.
HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}


def web_router(server: Any, dependencies: list) -> APIRouter:
    """The page and its data endpoints over a `serve.app.Server` (its library, metrics, scheduler).

    Args:
        server: The app's shared state (`library`, `metrics`, `scheduler`, `refresh()`).
        dependencies: What guards data endpoints (the app's API-key check).
    """
    router = APIRouter()
    embeddings: dict[str, tuple[tuple, torch.Tensor, str]] = {}  # name -> (stamp, (P, H), source)
    last: dict = {}  # the last similarity answer, by the stamps it was computed from
    lock = threading.Lock()  # sync endpoints run in a thread pool

    @router.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=HEADERS)

    @router.get("/web/static/{name}", include_in_schema=False)
    async def static(name: str) -> FileResponse:
        if name not in STATIC_FILES:
            raise HTTPException(404, f"no static file {name!r}")
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name], headers=HEADERS)

    @router.get("/web/library", dependencies=dependencies, tags=["web"])
    def library_files() -> dict:
        """Per served prompt: bytes on disk, when its prompt file was written, whether its
        library folder has a task embedding (embedding/) and a training log (log.jsonl)."""
        server.refresh()
        root = server.library.root
        out = {}
        for name, p in server.library.scan.prompts.items():
            files = [f for f in (p.path / PROMPT_FILE, p.path / META_FILE) if f.is_file()]
            written = max((f.stat().st_mtime for f in files), default=None)
            out[name] = {
                "bytes": sum(f.stat().st_size for f in files),
                "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(written)) if written else None,
                "embedding": (root / name / "embedding" / PROMPT_FILE).is_file(),
                "log": (root / name / LOG_FILE).is_file(),
            }
        return {"prompts": out, "runs": runs(root)}

    @router.get("/web/similarity", dependencies=dependencies, tags=["web"])
    def similarity() -> dict:
        """Both SPoT measures between the task embeddings of the served prompts: a prompt's
        library folder's embedding/ (the prompt early in training), else the prompt itself."""
        server.refresh()
        prompts = server.library.scan.prompts
        with lock:
            for gone in embeddings.keys() - prompts.keys():
                del embeddings[gone]
            for name, p in prompts.items():
                stamp = (_stamp(server.library.root / name / "embedding"), p.stamp)
                if name not in embeddings or embeddings[name][0] != stamp:
                    embeddings[name] = (stamp, *_embedding(server.library.root / name, p.weight))
            names = sorted(prompts)
            key = tuple((n, embeddings[n][0]) for n in names)
            if last.get("key") != key:
                vectors = [embeddings[n][1] for n in names]
                last["key"], last["answer"] = (
                    key,
                    {
                        "names": names,
                        "source": {n: embeddings[n][2] for n in names},
                        "measures": {
                            m: [[round(f(a, b), 6) for b in vectors] for a in vectors] for m, f in MEASURES.items()
                        },
                    },
                )
            return last["answer"]

    @router.get("/web/curves", dependencies=dependencies, tags=["web"])
    def curves(run: str) -> dict:
        """Training loss and dev metrics against step from `run`/log.jsonl (`run`: a folder of
        the library, as listed by /web/library `runs`)."""
        root = server.library.root
        if run not in runs(root):
            raise HTTPException(
                404,
                f"no training output folder {run!r} with {LOG_FILE} in the library "
                f"(known: {', '.join(runs(root)) or 'none'})",
            )
        records = read_log(root / run / LOG_FILE)
        metrics = sorted({m for r in records for m, v in r.get("eval", {}).items() if _number(v)})
        return {
            "run": run,
            "loss": [[r["step"], r["loss"]] for r in records if _number(r.get("loss"))],
            "eval": {
                m: [[r["step"], r["eval"][m]] for r in records if _number(r.get("eval", {}).get(m))] for m in metrics
            },
        }

    @router.get("/web/stats", dependencies=dependencies, tags=["web"])
    def stats() -> dict:
        """Live figures from the server's Prometheus metrics: requests by endpoint and status,
        latency percentiles (estimated from the histogram buckets, as Prometheus does), batch sizes."""
        m = server.metrics
        requests: dict[str, dict[str, int]] = {}
        for s in _samples(m.requests, "_total"):
            requests.setdefault(s.labels["endpoint"], {})[s.labels["status"]] = int(s.value)
        latency = {}
        for endpoint in sorted({s.labels["endpoint"] for s in _samples(m.latency, "_count")}):
            buckets = [
                (float(s.labels["le"]), s.value)
                for s in _samples(m.latency, "_bucket")
                if s.labels["endpoint"] == endpoint
            ]
            count = next(s.value for s in _samples(m.latency, "_count") if s.labels["endpoint"] == endpoint)
            total = next(s.value for s in _samples(m.latency, "_sum") if s.labels["endpoint"] == endpoint)
            latency[endpoint] = {
                "count": int(count),
                "mean_ms": 1000 * total / count if count else None,
                **{f"p{q}_ms": _ms(quantile(buckets, q / 100)) for q in (50, 90, 99)},
            }
        batches = [(float(s.labels["le"]), s.value) for s in _samples(m.batch_rows, "_bucket")]
        batch_count = next((s.value for s in _samples(m.batch_rows, "_count")), 0)
        batch_sum = next((s.value for s in _samples(m.batch_rows, "_sum")), 0)
        seconds = next((s.value for s in _samples(m.batch_seconds, "_sum")), 0)
        previous, histogram = 0.0, []
        for le, cumulative in batches:
            histogram.append({"le": "+Inf" if math.isinf(le) else int(le), "batches": int(cumulative - previous)})
            previous = cumulative
        return {
            "requests": requests,
            "latency": latency,
            "batches": {
                "count": int(batch_count),
                "rows": int(batch_sum),
                "mean_rows": batch_sum / batch_count if batch_count else None,
                "mean_ms": 1000 * seconds / batch_count if batch_count else None,
                "histogram": histogram,
            },
            "queue": server.scheduler.waiting,
            "prompts": len(server.library.scan.prompts),
        }

    return router


def runs(root: Path) -> list[str]:
    """Folders of the library holding a training log."""
    try:
        return sorted(
            e.name
            for e in os.scandir(root)
            if not e.name.startswith(".") and os.path.isfile(os.path.join(e.path, LOG_FILE))
        )
    except OSError:
        return []


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus' histogram_quantile: `buckets` are (upper bound, cumulative count), ascending,
    the last +Inf. Linear within the bucket; the highest finite bound if it lands in +Inf."""
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(upper):
                return lower
            inside = cumulative - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = upper, cumulative
    return lower


def _embedding(folder: Path, weight: torch.Tensor) -> tuple[torch.Tensor, str]:
    """(P, H) task embedding of a library folder and where it came from."""
    if (folder / "embedding" / PROMPT_FILE).is_file():
        try:
            emb = load_prompt(folder / "embedding").weight
            if emb.ndim == 2 and emb.shape[1] == weight.shape[1]:
                return emb.float(), "embedding"
        except SoftPromptError:
            pass
    return weight.detach().float().cpu(), "prompt"


def _stamp(folder: Path) -> tuple:
    try:
        st = os.stat(folder / PROMPT_FILE)
        return (st.st_size, st.st_mtime_ns)
    except OSError:
        return ()


def _samples(metric, suffix: str) -> list:
    return [s for family in metric.collect() for s in family.samples if s.name.endswith(suffix)]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 3)
