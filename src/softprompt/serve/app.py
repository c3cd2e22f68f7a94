"""The HTTP API: many prompts over one frozen model.

    POST /classify   task (or prompt, or ensemble) + one or many inputs -> label and scores
    POST /generate   task + input(s) -> greedy text
    GET  /prompts    what is served: prompts (task, labels, dev metrics), ensembles, skipped
    GET  /health     liveness
    GET  /metrics    Prometheus text
    /docs, /openapi.json

Answers are those of `softprompt.evaluate.predict` for the same prompt and input: the same
task formatting, tokenisation, label ranking and ensemble combination, computed in a
mixed-task batch (scheduler.py). Bad requests get a 4xx with a message, never a 500.

Limits and guards: the body is capped (`max_body_bytes`, 413) before it is parsed; every list
and string of a request has a ceiling (422); a request waits at most `deadline_s` (504); the
Host header must name the server (`allowed_hosts`, 421: DNS-rebinding protection for a
keyless loopback server); tokenisation and library rescans run on a worker thread, never on
the event loop; a prompt that cannot run fails only its own rows, with a message naming it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response

from softprompt.batching import Encoder
from softprompt.ensemble import combine_members, softmax
from softprompt.evaluate import rank
from softprompt.models.loading import LoadedModel
from softprompt.scoring import PromptedLM
from softprompt.serve.library import Library, ServedPrompt, ensemble_mismatch, make_example, public_message
from softprompt.serve.metrics import ServeMetrics
from softprompt.serve.scheduler import PromptFailed, QueueFull, Row, Scheduler
from softprompt.serve.guard import BodyAndHostGuard, api_key_check
from softprompt.serve.schemas import (
    LOOPBACK_HOSTS,
    Classification,
    ClassifyRequest,
    ClassifyResponse,
    GenerateRequest,
    GenerateResponse,
    Generation,
    MemberLabel,
    Request_,
)
from softprompt.serve.web import web_router


class Server:
    """What the endpoints share: model, library, scheduler, tokeniser, limits, metrics, and
    the one worker thread for blocking request work (library rescans, tokenising, decoding)."""

    def __init__(
        self,
        plm: PromptedLM,
        library: Library,
        scheduler: Scheduler,
        metrics: ServeMetrics,
        max_inputs: int,
        max_input_chars: int,
        max_tokens: int,
        rescan_s: float,
        deadline_s: float = 30.0,
    ) -> None:
        self.plm, self.library, self.scheduler, self.metrics = plm, library, scheduler, metrics
        self.encoder = Encoder(plm.lm.tokenizer, plm.lm.is_encoder_decoder)
        self.max_inputs, self.max_input_chars, self.max_tokens, self.rescan_s = (
            max_inputs,
            max_input_chars,
            max_tokens,
            rescan_s,
        )
        self.deadline_s = deadline_s
        self._scanned = 0.0
        self.worker: ThreadPoolExecutor | None = None

    async def off_loop(self, fn, *args):
        """Run blocking `fn(*args)` on the worker thread (one thread: the tokeniser is not shared between threads)."""
        if self.worker is None:
            self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="softprompt-prep")
        return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *args)

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._scanned >= self.rescan_s:
            self._scanned = now
            self.library.refresh()

    def targets(self, req: Request_) -> tuple[str, list[ServedPrompt], str | None]:
        """(name, member prompts, combination) a request asks for; 404/400 when it cannot be answered."""
        self.refresh()
        if req.prompts:
            missing = [p for p in req.prompts if p not in self.library.scan.prompts]
            if missing:
                raise HTTPException(404, f"unknown prompt(s) {', '.join(missing)} (GET /prompts lists them)")
            members, method = [self.library.scan.prompts[p] for p in req.prompts], "mean"
            if reason := ensemble_mismatch(members):
                raise HTTPException(400, f"these prompts cannot form an ensemble: {reason}")
            name = req.task or members[0].task.name
        else:
            try:
                members, method = self.library.resolve(req.task)
            except KeyError:
                raise HTTPException(
                    404, f"unknown task, prompt or ensemble {req.task!r} (GET /prompts lists them)"
                ) from None
            name = req.task
        return name, members, (req.combine or method) if len(members) > 1 else None

    def examples(self, req: Request_, members: list[ServedPrompt]):
        """Per input, per member: the formatted example's input ids. 413/422 on bad inputs."""
        items = req.items()
        if len(items) > self.max_inputs:
            raise HTTPException(413, f"{len(items)} inputs in one request; at most {self.max_inputs}")
        if len(items) * len(members) > self.scheduler.queue_size:
            raise HTTPException(
                413, f"{len(items)} inputs x {len(members)} prompts exceed the queue size {self.scheduler.queue_size}"
            )
        out = []
        for n, item in enumerate(items):
            texts = [item] if isinstance(item, str) else list(item.values())
            if not any(t.strip() for t in texts):
                raise HTTPException(422, f"input {n} is empty")
            if sum(len(t) for t in texts) > self.max_input_chars:
                raise HTTPException(
                    413, f"input {n} has {sum(len(t) for t in texts)} characters; at most {self.max_input_chars}"
                )
            try:
                out.append([(m, make_example(m.task, item)) for m in members])
            except ValueError as err:
                raise HTTPException(422, f"input {n}: {err}") from None
        return out

    def classify_rows(self, req: ClassifyRequest):
        """On the worker thread: (name, members, method, label words, per-input members, rows)."""
        name, members, method = self.targets(req)
        if req.labels is None and not members[0].task.is_classification:
            raise HTTPException(400, f"{name!r} is a generation task: use POST /generate (or give 'labels' to rank)")
        per_input = self.examples(req, members)
        enc = self.encoder
        if req.labels is not None:
            words = list(req.labels)
            targets = [enc.target_ids(w) for w in words]
            if not all(targets):
                raise HTTPException(422, "a word of 'labels' has no tokens")
            rows = [Row(m, enc.task_input_ids(m.task, ex), targets) for row in per_input for m, ex in row]
        else:
            words = list(members[0].task.labels)
            rows = [
                Row(m, enc.task_input_ids(m.task, ex), [enc.target_ids(w) for w in m.task.candidates(ex)])
                for row in per_input
                for m, ex in row
            ]
        return name, members, method, words, per_input, rows

    def generate_rows(self, req: GenerateRequest):
        """On the worker thread: (name, members, per-input members, rows)."""
        name, members, _ = self.targets(req)
        budget = req.max_tokens or members[0].task.max_new_tokens
        if budget > self.max_tokens:
            raise HTTPException(422, f"max_tokens {budget}: at most {self.max_tokens}")
        per_input = self.examples(req, members)
        rows = [Row(m, self.encoder.task_input_ids(m.task, ex), None, budget) for row in per_input for m, ex in row]
        return name, members, per_input, rows

    async def submit(self, rows: list[Row]) -> list:
        try:
            return await asyncio.wait_for(self.scheduler.submit(rows), self.deadline_s)
        except QueueFull as err:
            raise HTTPException(503, f"server busy: {err}; retry later", headers={"Retry-After": "1"}) from None
        except asyncio.TimeoutError:
            raise HTTPException(
                504, f"no answer within the deadline of {self.deadline_s:g} s; retry later or send fewer inputs"
            ) from None
        except PromptFailed as err:
            raise HTTPException(err.status, public_message(str(err), self.library.root)) from None


def create_app(
    lm: LoadedModel | PromptedLM,
    library_dir: Path,
    *,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    queue_size: int = 1024,
    api_key: str | None = None,
    max_inputs: int = 64,
    max_input_chars: int = 8000,
    max_tokens: int = 256,
    rescan_s: float = 0.5,
    max_body_bytes: int = 1 << 20,
    deadline_s: float = 30.0,
    allowed_hosts: Sequence[str] | None = LOOPBACK_HOSTS,
) -> FastAPI:
    """The server app over an already loaded model (tests inject a tiny one).

    Args:
        lm: The frozen model (or a PromptedLM over it).
        library_dir: Folder of prompt folders (see library.py).
        max_batch, max_wait_ms, queue_size: Batching (see scheduler.py).
        api_key: If set, /classify, /generate, /prompts and /metrics need header X-API-Key.
            An empty key is refused (ValueError): it must not silently turn auth off.
        max_inputs, max_input_chars, max_tokens: Per-request limits (413/422 beyond).
        rescan_s: Check the library folder for changes at most this often (per request).
        max_body_bytes: Largest request body (413 beyond, before it is parsed).
        deadline_s: Longest a request waits for the model (504 beyond).
        allowed_hosts: Host header names (port aside) the server answers to (421 otherwise);
            None answers any (for a server beyond loopback, behind its API key).
    """
    if api_key is not None and not api_key.strip():
        raise ValueError("api_key is empty: give a real key, or None for no key")
    plm = lm if isinstance(lm, PromptedLM) else PromptedLM(lm)
    metrics = ServeMetrics()
    library = Library(Path(library_dir), plm.lm.identity, plm.lm.device)
    scheduler = Scheduler(plm, max_batch, max_wait_ms, queue_size, on_batch=metrics.observe_batch)
    server = Server(plm, library, scheduler, metrics, max_inputs, max_input_chars, max_tokens, rescan_s, deadline_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await scheduler.start()
        yield
        await scheduler.stop()
        if server.worker is not None:
            server.worker.shutdown(wait=True)
            server.worker = None

    app = FastAPI(
        title="softprompt",
        description="Soft prompts over one frozen model: mixed-task batched classification and generation.",
        lifespan=lifespan,
    )
    app.state.server = server
    guarded = [Depends(api_key_check(api_key))]

    @app.middleware("http")
    async def count(request: Request, call_next):
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.url.path if request.url.path in _ROUTES else "other"
            metrics.observe_request(route, status, time.perf_counter() - start)

    app.add_middleware(BodyAndHostGuard, max_body_bytes=max_body_bytes, allowed_hosts=allowed_hosts)

    @app.post("/classify", response_model=ClassifyResponse, dependencies=guarded)
    async def classify(req: ClassifyRequest) -> ClassifyResponse:
        """Rank the task's labels (or the request's `labels`) for each input: one prompt's answer,
        or an ensemble's combined answer."""
        name, members, method, words, per_input, rows = await server.off_loop(server.classify_rows, req)
        answers = iter(await server.submit(rows))
        results = [
            _classification(words, [(m, next(answers)) for m, _ in row], method, req.length_normalize)
            for row in per_input
        ]
        return ClassifyResponse(task=name, prompts=[m.name for m in members], combine=method, results=results)

    @app.post("/generate", response_model=GenerateResponse, dependencies=guarded)
    async def generate(req: GenerateRequest) -> GenerateResponse:
        """Greedy text for each input (an ensemble answers by majority vote)."""
        name, members, per_input, rows = await server.off_loop(server.generate_rows, req)
        answers = await server.submit(rows)
        decode = plm.lm.tokenizer.decode
        texts = await server.off_loop(lambda: [decode(a, skip_special_tokens=True).strip() for a in answers])
        texts = iter(texts)
        results = []
        for row in per_input:
            row_texts = [next(texts) for _ in row]
            text, _ = combine_members(None, row_texts, None, "vote")
            results.append(
                Generation(
                    text=text,
                    members=[{"prompt": m.name, "text": t} for (m, _), t in zip(row, row_texts)]
                    if len(row) > 1
                    else None,
                )
            )
        return GenerateResponse(task=name, prompts=[m.name for m in members], results=results)

    @app.get("/prompts", dependencies=guarded)
    async def prompts() -> dict:
        """Served prompts (task, labels, dev metrics), ensembles, request names, skipped folders
        (paths relative to the library)."""
        await server.off_loop(server.refresh)
        scan = library.scan
        return {
            "model": plm.lm.identity.to_dict(),
            "prompts": [p.info() for p in scan.prompts.values()],
            "ensembles": {e.name: {"prompts": list(e.prompts), "combine": e.method} for e in scan.ensembles.values()},
            "names": library.names(),
            "skipped": scan.skipped,
        }

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "ok",
            "model": plm.lm.identity.name,
            "prompts": len(library.scan.prompts),
            "queue": scheduler.waiting,
        }

    @app.get("/metrics", dependencies=guarded)
    async def prometheus() -> Response:
        metrics.queue.set(scheduler.waiting)
        metrics.prompts.set(len(library.scan.prompts))
        return Response(metrics.exposition(), media_type=metrics.content_type)

    app.include_router(web_router(server, guarded))  # the page at / and its /web/ data (web.py)
    return app


_ROUTES = {"/classify", "/generate", "/prompts", "/health", "/metrics", "/docs", "/openapi.json"}


def _classification(
    labels: list[str], answers: list[tuple[ServedPrompt, list]], method: str | None, length_normalize: bool
) -> Classification:
    """One input's answer from its members' `score_rows` output over `labels`, ranked as `evaluate.predict` ranks."""
    ranked = [(m, *rank(per, length_normalize)) for m, per in answers]
    if len(ranked) == 1:
        _, best, values = ranked[0]
        return Classification(
            label=labels[best], scores=dict(zip(labels, values)), probabilities=dict(zip(labels, softmax(values)))
        )
    preds = [labels[best] for _, best, _ in ranked]
    label, mean = combine_members(labels, preds, [values for _, _, values in ranked], method)
    return Classification(
        label=label,
        scores=dict(zip(labels, mean)),
        probabilities=dict(zip(labels, mean)),
        votes={l: preds.count(l) for l in labels},
        members=[
            MemberLabel(prompt=m.name, label=labels[best], scores=dict(zip(labels, values)))
            for m, best, values in ranked
        ],
    )


class BackgroundServer:
    """Run an app with uvicorn in a thread on `host` (port 0: a free one), for tests,
    benchmarks and notebooks: `with BackgroundServer(app) as url: ...`."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
        self.host = host
        self.thread = None

    def __enter__(self) -> str:
        import threading

        self.thread = threading.Thread(target=self.server.run, name="softprompt-uvicorn", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://{self.host}:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
