"""Coalesce the chunks of many documents in flight into length-sorted batches for the model.

Each document's handler awaits ``embed``; one loop takes everything waiting, sorts it by length
and runs it through the model a batch at a time on each of ``lanes`` threads. Queries jump the
queue between batches, so a question waits for at most one batch of ingest work.

On a CPU, lanes of one torch thread each beat one lane of all the threads: a single forward
pass split over both cores of a 2-core machine waits at every operator for the slower core, and
the slower core is the one the indexer, NATS or the gateway just took (bench/ingest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from olympus import metrics


def length_batches(texts: Sequence[str], batch_size: int) -> list[list[int]]:
    """Indices of ``texts`` grouped into batches of similar length, longest first: a batch pads
    to its longest text, so sorting keeps padding (wasted compute) small."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


Lane = Literal["query", "bulk", "document"]


@dataclass
class _Request:
    texts: Sequence[str]
    future: asyncio.Future[np.ndarray]
    out: np.ndarray
    remaining: int = field(init=False)

    def __post_init__(self) -> None:
        self.remaining = len(self.texts)


class EmbeddingBatcher:
    def __init__(
        self,
        embed_batch: Callable[[Sequence[str]], np.ndarray],
        dims: int,
        batch_size: int,
        pool_texts: int = 512,
        lanes: int = 1,
    ) -> None:
        self._embed_batch = embed_batch
        self._dims = dims
        self._batch_size = batch_size
        self._pool_texts = pool_texts
        self._queries: asyncio.Queue[_Request] = asyncio.Queue()
        self._documents: asyncio.Queue[_Request] = asyncio.Queue()
        self._bulk: asyncio.Queue[_Request] = asyncio.Queue()
        self._bulk_turn = False
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="encoder")
        self._lanes = asyncio.Semaphore(lanes)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="embedding-batcher")

    async def stop(self) -> None:
        for task in [self._task, *self._in_flight]:
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def embed(self, texts: Sequence[str], *, lane: Lane = "document") -> np.ndarray:
        """``texts``' vectors. Three lanes: ``query`` (one question a person waits for: it goes
        before everything, all waiting questions in one pass), ``bulk`` (texts a client asked
        for, /v1/embeddings) and ``document`` (chunks being ingested). Bulk and documents take
        turns, a batch at a time, and every batch lets the waiting questions go first: nobody's
        large request holds up anyone's question."""
        if not texts:
            return np.zeros((0, self._dims), dtype=np.float32)
        loop = asyncio.get_running_loop()
        request = _Request(texts, loop.create_future(), np.zeros((len(texts), self._dims), "f4"))
        queue = {"query": self._queries, "bulk": self._bulk, "document": self._documents}[lane]
        queue.put_nowait(request)
        metrics.EMBEDDED_TEXTS.labels("chunk" if lane == "document" else lane).inc(len(texts))
        self._wakeup.set()
        return await request.future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self._drain_queries()
            first, second = (self._bulk, self._documents)[:: 1 if self._bulk_turn else -1]
            self._bulk_turn = not self._bulk_turn
            pool = self._take(first) or self._take(second)
            if not pool:
                continue
            items = [(r, i) for r in pool for i in range(len(r.texts))]
            for positions in length_batches([r.texts[i] for r, i in items], self._batch_size):
                await self._drain_queries()
                await self._lanes.acquire()  # the lane is given back when its batch is done
                task = asyncio.create_task(self._deliver([items[p] for p in positions]))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
            if any(not q.empty() for q in (self._documents, self._bulk, self._queries)):
                self._wakeup.set()

    async def _deliver(self, batch: list[tuple[_Request, int]]) -> None:
        try:
            vectors = await self._encode([r.texts[i] for r, i in batch], [r for r, _ in batch])
        finally:
            self._lanes.release()
        if vectors is None:
            return
        for (request, index), vector in zip(batch, vectors, strict=True):
            request.out[index] = vector
            request.remaining -= 1
            if request.remaining == 0 and not request.future.done():
                request.future.set_result(request.out)

    def _take(self, queue: asyncio.Queue[_Request]) -> list[_Request]:
        pool: list[_Request] = []
        count = 0
        while not queue.empty() and count < self._pool_texts:
            request = queue.get_nowait()
            pool.append(request)
            count += len(request.texts)
        return pool

    async def _drain_queries(self) -> None:
        # Every question waiting goes through the model together, in one forward pass.
        while not self._queries.empty():
            waiting: list[_Request] = []
            while not self._queries.empty() and len(waiting) < self._batch_size:
                waiting.append(self._queries.get_nowait())
            texts = [t for r in waiting for t in r.texts]
            async with self._lanes:
                vectors = await self._encode(texts, waiting)
            if vectors is None:
                continue
            start = 0
            for request in waiting:
                end = start + len(request.texts)
                if not request.future.done():
                    request.future.set_result(vectors[start:end])
                start = end

    async def _encode(self, texts: list[str], owners: list[_Request]) -> np.ndarray | None:
        loop = asyncio.get_running_loop()
        metrics.EMBED_BATCH.observe(len(texts))
        try:
            with metrics.EMBED_SECONDS.time():
                return await loop.run_in_executor(self._executor, self._embed_batch, texts)
        except Exception as exc:  # the model failed: every waiting owner gets the error
            for owner in owners:
                if not owner.future.done():
                    owner.future.set_exception(exc)
            return None
