"""Requests that arrive together are scored together.

Scoring one row costs mostly fixed per-call work (building frames, the feature code's pandas calls,
the trees' per-call overhead), not the row: eight concurrent single-row requests scored one by one
take about eight times one call, scored in one frame about one. The batcher adds no timed wait:
a request that finds the scorer idle is scored as soon as the requests already received with it
have reached the queue (a few turns of the event loop, no sleep); requests that arrive while a
batch is being scored are all taken by the next one. Only requests that started on the same served
model share a batch (a swap never mixes versions), and each request keeps its own request id,
answer and log rows. Rows are independent through the whole path (features, encoder, trees), so a
row's probability is the same alone or in a batch.

Why a worker thread rather than the event loop: scoring a small batch on the loop itself was
measured slower on this shared machine (the same CPU per request, two to three times the wall
time: every one of the trees' GIL-free calls hands the GIL back and forth), so every batch is
scored in one worker thread while the loop keeps reading requests.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

#: Loop turns a batch may wait for requests already received to reach the queue (each turn lets
#: the loop read its sockets, the next one runs the new requests' handlers up to ``submit``).
GATHER_TURNS = 8


@dataclass
class _Job:
    served: Any
    rows: list[dict]
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Batcher:
    """One scorer task; ``score(served, [rows, ...]) -> [result, ...]`` runs in a worker thread."""

    def __init__(self, score: Callable[[Any, list[list[dict]]], list[Any]], max_rows: int = 256) -> None:
        self.score, self.max_rows = score, max_rows
        # One scorer thread of its own: batches are scored one at a time (the loop waits for each),
        # and a plain executor hands work over with less CPU than the shared AnyIO thread pool.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorer")
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None

    async def submit(self, served: Any, rows: list[dict]) -> Any:
        """The result of scoring ``rows`` with ``served`` (possibly together with other requests)."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._run())
        job = _Job(served, rows)
        await self._queue.put(job)
        return await job.done

    async def _gather(self) -> None:
        """Let the requests already received reach the queue (no timed wait: stops at the first
        two loop turns that bring none)."""
        assert self._queue is not None
        seen = self._queue.qsize()
        for _ in range(GATHER_TURNS // 2):
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            if self._queue.qsize() == seen:
                return
            seen = self._queue.qsize()

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            first = await self._queue.get()
            if len(first.rows) < self.max_rows:
                await self._gather()
            jobs, size, later = [first], len(first.rows), []
            while not self._queue.empty() and size < self.max_rows:
                job = self._queue.get_nowait()
                if job.served is first.served:
                    jobs.append(job)
                    size += len(job.rows)
                else:
                    later.append(job)
            for job in later:  # another model: scored in the next round
                self._queue.put_nowait(job)
            try:
                results = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self.score, first.served, [job.rows for job in jobs])
            except Exception as exc:  # every request of the batch gets the error
                for job in jobs:
                    if not job.done.done():
                        job.done.set_exception(exc)
                continue
            for job, result in zip(jobs, results):
                job.done.set_result(result)

    async def close(self) -> None:
        """Stop the scorer task (and its thread)."""
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False)
