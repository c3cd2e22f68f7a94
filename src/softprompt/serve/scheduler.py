"""Mixed-task batching: concurrent requests for different prompts share one forward pass.

Requests are split into rows (one input under one prompt); rows wait in a bounded asyncio
queue. A collector coroutine takes the oldest row and gathers more until `max_batch` rows
or until that row has waited `max_wait_ms`, then hands the batch to the one model thread.
While the model runs, new rows queue up and form the next batch. In the batch each row
carries its own prompt (`PromptedLM.score_rows` / `generate_rows`), so one pass answers
rows of many tasks, and each row's answer is what the model gives it alone. A batch whose
inputs differ much in length is cut into a few passes of similar lengths where the padding
saved outweighs the fixed cost of a pass (`split_by_length`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from softprompt.scoring import PromptedLM
from softprompt.serve.library import ServedPrompt


class QueueFull(Exception):
    """The queue has no room for a request's rows."""


class PromptFailed(Exception):
    """One prompt could not answer a row: it raised on the model (`status` 500) or gave
    non-finite scores (422). Only that prompt's rows fail; the rest of the batch is answered."""

    def __init__(self, prompt: str, reason: str, status: int = 500) -> None:
        super().__init__(f"prompt {prompt!r} {reason}")
        self.prompt, self.reason, self.status = prompt, reason, status


@dataclass
class Row:
    """One input under one prompt: rank `candidates` (token-id lists), or generate
    `max_new_tokens` greedily when `candidates` is None."""

    prompt: ServedPrompt
    input_ids: list[int]
    candidates: list[list[int]] | None = None
    max_new_tokens: int = 0


@dataclass
class _Item:
    row: Row
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


class Scheduler:
    """Gathers rows into batches and runs them on one model thread.

    Args:
        plm: The prompted frozen model.
        max_batch: Most rows in one forward pass (1 = one at a time).
        max_wait_ms: Longest a row waits for others to join its batch.
        queue_size: Most rows waiting; a request that does not fit is refused (QueueFull).
        on_batch: Called (rows, seconds) after each batch, for metrics.
        pass_cost_tokens: Fixed cost of a forward pass in tokens of one row (CPU: ~30),
            weighed against padding when a batch is cut by input length; 0 never cuts.
    """

    def __init__(
        self,
        plm: PromptedLM,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        queue_size: int = 1024,
        on_batch: Callable[[int, float], None] | None = None,
        pass_cost_tokens: int = 32,
    ) -> None:
        self.plm = plm
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.queue_size = queue_size
        self.on_batch = on_batch
        self.pass_cost_tokens = pass_cost_tokens
        self.queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.queue_size)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="softprompt-model")
        self._task = asyncio.create_task(self._collect())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    @property
    def waiting(self) -> int:
        return self.queue.qsize() if self.queue is not None else 0

    async def submit(self, rows: list[Row]) -> list:
        """Queue `rows` and wait for their answers: per row, `score_rows` output (ranking)
        or generated token ids. Raises QueueFull at once if they do not all fit."""
        if self.queue is None:
            raise RuntimeError("scheduler not started")
        if self.queue.maxsize - self.queue.qsize() < len(rows):
            raise QueueFull(f"{self.queue.qsize()} rows waiting, room for {self.queue.maxsize}")
        loop = asyncio.get_running_loop()
        items = [_Item(row, loop.create_future()) for row in rows]
        for item in items:
            self.queue.put_nowait(item)
        return list(await asyncio.gather(*(i.future for i in items)))

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = batch[0].enqueued + self.max_wait
            while len(batch) < self.max_batch:
                if not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            batch = [i for i in batch if not i.future.done()]  # requests cancelled meanwhile
            if not batch:
                continue
            rows = [i.row for i in batch]
            try:
                results = await loop.run_in_executor(self._executor, self._run, rows)
            except Exception:  # noqa: BLE001 - one prompt (or a bug) broke the pass: find out whose
                results = await loop.run_in_executor(self._executor, self._run_each_prompt, rows)
            for item, result in zip(batch, results):
                if item.future.done():
                    continue
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)

    def _run_each_prompt(self, rows: list[Row]) -> list:
        """After a failed pass: the rows again, one prompt at a time, so a prompt that cannot
        run fails its own rows (PromptFailed naming it) and the others are answered."""
        out: list = [None] * len(rows)
        groups: dict[int, list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(id(row.prompt), []).append(i)
        for idx in groups.values():
            try:
                answers = self._run([rows[i] for i in idx])
            except Exception as err:  # noqa: BLE001
                name = rows[idx[0]].prompt.name
                answers = [PromptFailed(name, f"failed on the model ({type(err).__name__}: {err})")] * len(idx)
            for i, answer in zip(idx, answers):
                out[i] = answer
        return out

    def _run(self, rows: list[Row]) -> list:
        """On the model thread: one ranking pass over the ranking rows, one greedy decode
        over the generation rows, each row with its own prompt."""
        start = time.perf_counter()
        plm = self.plm
        for row in rows:
            if row.prompt.prepared is None:  # once per served prompt
                row.prompt.prepared = plm.prepare(row.prompt.weight)
        out: list = [None] * len(rows)
        ranked = [i for i, r in enumerate(rows) if r.candidates is not None]
        cost = self.pass_cost_tokens
        groups = split_by_length([len(rows[i].input_ids) for i in ranked], cost) if cost else [list(range(len(ranked)))]
        for group in groups:
            sel = [rows[ranked[g]] for g in group]
            prompts, inputs = [r.prompt.prepared for r in sel], [r.input_ids for r in sel]
            scores = plm.score_rows(prompts, inputs, [r.candidates for r in sel])
            for g, s, r in zip(group, scores, sel):
                finite = all(math.isfinite(float(v)) for v, _ in s)
                out[ranked[g]] = (
                    s
                    if finite
                    else PromptFailed(r.prompt.name, "gives non-finite (NaN or inf) scores for this input", 422)
                )
        generated = [i for i, r in enumerate(rows) if r.candidates is None]
        if generated:
            sel = [rows[i] for i in generated]
            longest = max(r.max_new_tokens for r in sel)
            ids = plm.generate_rows([r.prompt.prepared for r in sel], [r.input_ids for r in sel], longest)
            # Greedy decoding is per row, so a shorter budget is a prefix of the longer run.
            for i, r, g in zip(generated, sel, ids):
                out[i] = g[: r.max_new_tokens]
        if self.on_batch is not None:
            self.on_batch(len(rows), time.perf_counter() - start)
        return out


def split_by_length(lengths: Sequence[int], pass_cost: int) -> list[list[int]]:
    """Indices of `lengths` in passes of similar length, at least cost.

    A pass over n rows padded to the longest L costs `pass_cost + n * L` (in row-tokens);
    rows sorted by length are cut where that total is least (exact, O(n^2) for n rows).
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    best = [0.0] + [math.inf] * len(order)  # best[j]: least cost of the first j sorted rows
    cut = [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        longest = lengths[order[j - 1]]
        for i in range(j):
            cost = best[i] + pass_cost + (j - i) * longest
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], len(order)
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]
