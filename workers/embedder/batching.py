"""Coalesce the chunks of many documents in flight into length-sorted batches for the model.

Each document's handler awaits ``embed``; its texts are tokenized as they arrive and wait in a
pool. Whenever one of the ``lanes`` (threads running the model) is free, the next batch is cut
from everything waiting: the oldest text with the texts nearest to it in token count, so a
batch pads little and nothing waits behind a stream of newcomers.

Questions have a lane of their own besides, so a question never waits for a batch of chunks
to finish: during a 2,000-document upload on 2 cores a dense query's p50 was 237 ms while it
waited for the batches running, 80 ms with its own lane, which shares the cores with them
meanwhile (bench/under_ingest.py). Questions also jump the queue for the other lanes.

Cutting a batch only when a lane is free lets the pool fill while the lanes work: cutting
every text in sight into batches as it arrived padded SciFact's chunks to 15% more tokens than
they hold; from the pool, 5% (bench/ingest.py).

On a CPU, lanes of one torch thread each beat one lane of all the threads: a single forward
pass split over both cores of a 2-core machine waits at every operator for the slower core, and
the slower core is the one the indexer, NATS or the gateway just took (bench/ingest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from olympus import metrics

Tokens = Sequence[int]
INLINE_CHARS = 8192
"""Texts up to this many characters in all (a question, a document's few chunks) are tokenized
on the event loop, which costs less than a thread hop; longer requests in a thread."""


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (in tokens), longest first: a batch pads
    to its longest member, so sorting keeps padding (wasted compute) small."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def nearest_window(lengths: Sequence[int], batch_size: int) -> list[int]:
    """``batch_size`` indices including 0 (the oldest) whose lengths are closest to its, so the
    batch pads least: of the windows holding it in length order, the one wasting least."""
    if len(lengths) <= batch_size:
        return list(range(len(lengths)))
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    at = order.index(0)
    best: list[int] = []
    best_waste = -1
    for start in range(max(0, at - batch_size + 1), min(at, len(order) - batch_size) + 1):
        window = order[start : start + batch_size]
        waste = lengths[window[-1]] * batch_size - sum(lengths[i] for i in window)
        if best_waste < 0 or waste < best_waste:
            best, best_waste = window, waste
    return best


Lane = Literal["query", "bulk", "document"]


@dataclass
class _Request:
    tokens: list[list[int]]
    future: asyncio.Future[np.ndarray]
    out: np.ndarray
    remaining: int = field(init=False)

    def __post_init__(self) -> None:
        self.remaining = len(self.tokens)


@dataclass
class _Waiting:
    """Texts waiting for a lane, oldest first: each is (request, index of the text in it)."""

    texts: list[tuple[_Request, int]] = field(default_factory=list)

    def add(self, request: _Request) -> None:
        self.texts.extend((request, i) for i in range(len(request.tokens)))

    def cut(self, batch_size: int) -> list[tuple[_Request, int]]:
        lengths = [len(r.tokens[i]) for r, i in self.texts]
        chosen = set(nearest_window(lengths, batch_size))
        batch = [t for k, t in enumerate(self.texts) if k in chosen]
        self.texts = [t for k, t in enumerate(self.texts) if k not in chosen]
        return sorted(batch, key=lambda t: len(t[0].tokens[t[1]]), reverse=True)


class EmbeddingBatcher:
    def __init__(
        self,
        tokenize: Callable[[Sequence[str]], list[list[int]]],
        embed_tokens: Callable[[Sequence[Tokens]], np.ndarray],
        dims: int,
        batch_size: int,
        lanes: int = 1,
    ) -> None:
        self._tokenize = tokenize
        self._embed_tokens = embed_tokens
        self._dims = dims
        self._batch_size = batch_size
        self._queries: list[_Request] = []
        self._documents = _Waiting()
        self._bulk = _Waiting()
        self._bulk_turn = False
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="encoder")
        self._asker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="questions")
        self._tokenizer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenizer")
        self._free_lanes = lanes
        self._asking = False  # the questions' own lane is running a pass
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
        self._asker.shutdown(wait=False, cancel_futures=True)
        self._tokenizer.shutdown(wait=False, cancel_futures=True)

    async def embed(self, texts: Sequence[str], *, lane: Lane = "document") -> np.ndarray:
        """``texts``' vectors. Three lanes: ``query`` (one question a person waits for: it goes
        before everything, all waiting questions in one pass), ``bulk`` (texts a client asked
        for, /v1/embeddings) and ``document`` (chunks being ingested). Bulk and documents take
        turns, a batch at a time, and every batch lets the waiting questions go first: nobody's
        large request holds up anyone's question."""
        if not texts:
            return np.zeros((0, self._dims), dtype=np.float32)
        loop = asyncio.get_running_loop()
        if sum(map(len, texts)) <= INLINE_CHARS:
            tokens = self._tokenize(texts)
        else:
            tokens = await loop.run_in_executor(self._tokenizer, self._tokenize, texts)
        request = _Request(tokens, loop.create_future(), np.zeros((len(texts), self._dims), "f4"))
        if lane == "query":
            self._queries.append(request)
        else:
            (self._bulk if lane == "bulk" else self._documents).add(request)
        metrics.EMBEDDED_TEXTS.labels("chunk" if lane == "document" else lane).inc(len(texts))
        self._wakeup.set()
        try:
            return await request.future
        except asyncio.CancelledError:
            # Whoever asked is gone (a deleted document, a client that hung up): what of its
            # texts still waits is not encoded for nobody. A batch already running finishes.
            self._forget(request)
            raise

    def _forget(self, request: _Request) -> None:
        if request in self._queries:
            self._queries.remove(request)
        for pool in (self._documents, self._bulk):
            pool.texts = [t for t in pool.texts if t[0] is not request]

    async def _run(self) -> None:
        while True:
            # Cleared before looking: whatever arrives or finishes from here on sets it again.
            self._wakeup.clear()
            if self._queries and not self._asking:
                self._asking = True
                self._launch(self._answer_queries(self._take_queries(), own_lane=True))
            # The work is taken now, not when its task first runs: else the next turn would see
            # the same texts still waiting and send another lane after them with nothing to do.
            while self._free_lanes and (self._queries or self._documents.texts or self._bulk.texts):
                self._free_lanes -= 1
                if self._queries:
                    self._launch(self._answer_queries(self._take_queries(), own_lane=False))
                else:
                    self._launch(self._deliver(self._next_batch()))
            await self._wakeup.wait()

    def _launch(self, work: Coroutine[None, None, None]) -> None:
        task = asyncio.create_task(work)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    def _lane_freed(self) -> None:
        self._free_lanes += 1
        self._wakeup.set()

    def _next_batch(self) -> list[tuple[_Request, int]]:
        first, second = (self._bulk, self._documents)[:: 1 if self._bulk_turn else -1]
        self._bulk_turn = not self._bulk_turn
        return (first if first.texts else second).cut(self._batch_size)

    async def _deliver(self, batch: list[tuple[_Request, int]]) -> None:
        try:
            vectors = await self._encode(
                [r.tokens[i] for r, i in batch], [r for r, _ in batch], self._executor
            )
        finally:
            self._lane_freed()
        if vectors is None:
            return
        for (request, index), vector in zip(batch, vectors, strict=True):
            request.out[index] = vector
            request.remaining -= 1
            if request.remaining == 0 and not request.future.done():
                request.future.set_result(request.out)

    def _take_queries(self) -> list[_Request]:
        waiting, self._queries = (
            self._queries[: self._batch_size],
            self._queries[self._batch_size :],
        )
        return waiting

    async def _answer_queries(self, waiting: list[_Request], *, own_lane: bool) -> None:
        # The questions waiting go through the model together, in one forward pass.
        tokens: list[Tokens] = [t for r in waiting for t in r.tokens]
        try:
            vectors = await self._encode(
                tokens, waiting, self._asker if own_lane else self._executor
            )
        finally:
            if own_lane:
                self._asking = False
                self._wakeup.set()
            else:
                self._lane_freed()
        if vectors is None:
            return
        start = 0
        for request in waiting:
            end = start + len(request.tokens)
            if not request.future.done():
                request.future.set_result(vectors[start:end])
            start = end

    async def _encode(
        self, batch: list[Tokens], owners: list[_Request], lane: ThreadPoolExecutor
    ) -> np.ndarray | None:
        loop = asyncio.get_running_loop()
        metrics.EMBED_BATCH.observe(len(batch))
        try:
            with metrics.EMBED_SECONDS.time():
                return await loop.run_in_executor(lane, self._embed_tokens, batch)
        except Exception as exc:  # the model failed: every waiting owner gets the error
            for owner in owners:
                if not owner.future.done():
                    owner.future.set_exception(exc)
            return None
