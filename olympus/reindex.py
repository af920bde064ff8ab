"""A live ``olympus reindex``: every passage embedded again under another model while the stack
keeps answering, then the index switched over at once.

Each step goes over the bus; nothing here opens a store or loads a model:

1. The embedders are asked to load the new model beside their own (a ``ModelMove`` in the KV
   bucket ``OLYMPUS_MODEL``). From then on every chunk and every question they embed gets a
   vector of each model (``workers.embedder.models``).
2. H.A.D.E.S. opens the index's next collection (``ReindexBegin``). Every document written from
   then on gets its new vectors there too (``Indexer._write_next``).
3. Passes: the documents that collection lacks (``ReindexPage``) are read from the graph, embedded
   by the embedders under the new model and written (``ReindexWrite``). A write is refused if
   its document changed since it was read; the next pass finds it again.
4. The switch (``ReindexSwitch``) runs on H.A.D.E.S.' store thread, between two writes. If no
   document is missing, the next collection takes the index's place; else another pass runs.
5. The embedders are told to run the new model alone (``switched``).

A question on its way during the switch carries both vectors, so it is answered by whichever
collection holds the index's place when it is searched. A failed or interrupted run is undone
(``cancel``): the embedders go back to their own model and the next collection is dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.kv import KeyValue

from olympus import health
from schemas import subjects
from schemas.ids import model_fingerprint
from schemas.messages import (
    DocumentChunks,
    DocumentChunksGet,
    EmbedReply,
    EmbedRequest,
    Message,
    ModelMove,
    ReindexBegin,
    ReindexCancel,
    ReindexChunk,
    ReindexDocument,
    ReindexDropOld,
    ReindexPage,
    ReindexPageReply,
    ReindexReply,
    ReindexSwitch,
    ReindexWrite,
    Reply,
)
from workers.embedder.models import POLL_S, MoveReader

R = TypeVar("R", bound=Reply)
EMBED_BATCH = 32  # passages per embed request: the embedder's batcher pools them with others'
DOCUMENTS_AT_ONCE = 128  # documents in flight, so the embedders' lanes stay busy
WRITE_BATCH = 256  # passages per write (ReindexWrite's limit)
MAX_PASSES = 20
LOAD_TIMEOUT_S = 300.0


class ReindexError(Exception):
    """What stopped a live reindex, said for the operator."""


@dataclass(frozen=True)
class Switched:
    documents: int
    passages: int
    passes: int
    kept_as: str


@dataclass
class Report:
    """What the run tells whoever watches it (the CLI's progress bar)."""

    phase: Callable[[str], None] = lambda text: None
    total: Callable[[int], None] = lambda passages: None
    advance: Callable[[int], None] = lambda passages: None


class LiveReindex:
    def __init__(self, nc: nats.NATS, folder: str, identity: str, report: Report | None = None):
        self.nc = nc
        self.folder = folder
        self.model = identity  # name@fingerprint of the folder's weights
        self.report = report or Report()
        self._documents = 0
        self._passages = 0

    async def run(self) -> Switched:
        kv = await self.nc.jetstream().key_value(subjects.MODEL_BUCKET)
        current = (await self._ask(subjects.RPC_EMBED, _probe(), EmbedReply)).identity
        if model_fingerprint(current) == model_fingerprint(self.model):
            raise ReindexError(
                f"the embedders already run {self.model}; if the index holds another model's "
                "vectors (queries say so), stop the stack and run olympus reindex on its data"
            )
        before = await MoveReader(self.nc.jetstream(), kv)()
        if before is not None and before.phase == "building":
            raise ReindexError(
                f"a reindex to {before.to} is under way, or was interrupted: olympus reindex "
                "--cancel undoes it"
            )
        moved = [*(before.moved if before else []), model_fingerprint(current)]
        moved = list(dict.fromkeys(moved))
        building = ModelMove(
            moved=moved,
            to=self.folder,
            identity=self.model,
            phase="building",
            current=before.to if before else "",
            previous=before,
        )
        try:
            self.report.phase(f"loading {self.model} in the embedders")
            await kv.put(subjects.MODEL_KEY, building.model_dump_json().encode())
            dims = await self._loaded()
            await self._ask(subjects.REINDEX_BEGIN, ReindexBegin(model=self.model, dims=dims))
            for passes in range(1, MAX_PASSES + 1):
                await self._pass(passes)
                self.report.phase("switching")
                await self._everywhere(time.monotonic() + LOAD_TIMEOUT_S)  # one restarted?
                done: ReindexReply = await self._ask(
                    subjects.REINDEX_SWITCH, ReindexSwitch(model=self.model), wait_s=600
                )
                if done.switched:
                    break
            else:
                raise ReindexError(f"documents still changing after {MAX_PASSES} passes")
        except BaseException:
            await cancel(self.nc, kv)
            raise
        await kv.put(subjects.MODEL_KEY, _switched(building))
        return Switched(self._documents, self._passages, passes, done.kept_as)

    async def _loaded(self) -> int:
        """Wait until every embedder embeds with the new model too; its vectors' size."""
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        probe = EmbedRequest(tenant="olympus", inputs=["olympus"], model=self.model)
        while True:
            try:
                reply = await self._ask(subjects.RPC_EMBED, probe, EmbedReply)
                break
            except ReindexError:
                if time.monotonic() > deadline:
                    raise ReindexError(
                        f"no embedder runs {self.folder} after {LOAD_TIMEOUT_S:.0f} s: is it "
                        "a folder they can read? Their log says why they could not load it."
                    ) from None
                await asyncio.sleep(POLL_S / 2)
        await self._everywhere(deadline)
        return len(reply.vectors[0])

    async def _everywhere(self, deadline: float) -> None:
        """Wait until every embedder that answers runs the new model: one still without it
        would send questions and documents the index refuses once it has switched."""
        wanted = model_fingerprint(self.model)
        while True:
            answers = await health.replicas(self.nc, subjects.EMBEDDER)
            behind = [a for a in answers if wanted not in map(model_fingerprint, a.models)]
            if answers and not behind:
                return
            if time.monotonic() > deadline:
                raise ReindexError(
                    f"{len(behind)} of {len(answers)} embedders do not run {self.folder} after "
                    f"{LOAD_TIMEOUT_S:.0f} s: their log says why"
                )
            await asyncio.sleep(POLL_S / 2)

    async def _pass(self, number: int) -> None:
        """Every document the next collection lacks, embedded and written."""
        missing = await self._missing()
        self.report.phase(f"pass {number}: {len(missing)} documents")
        self.report.total(sum(d.chunks for d in missing))
        slots = asyncio.Semaphore(DOCUMENTS_AT_ONCE)

        async def one(doc: ReindexDocument) -> None:
            async with slots:
                await self._document(doc)

        work = [asyncio.ensure_future(one(doc)) for doc in missing]
        try:
            await asyncio.gather(*work)
        except BaseException:  # the others stop too, before the run is undone
            for task in work:
                task.cancel()
            await asyncio.gather(*work, return_exceptions=True)
            raise

    async def _missing(self) -> list[ReindexDocument]:
        found: list[ReindexDocument] = []
        page = ReindexPage()
        while True:
            listed = await self._ask(subjects.REINDEX_PAGE, page, ReindexPageReply)
            found += listed.missing
            if listed.next_tenant is None:
                return found
            page = ReindexPage(tenant=listed.next_tenant, offset=listed.next_offset)

    async def _document(self, doc: ReindexDocument) -> None:
        asked = DocumentChunksGet(tenant=doc.tenant, doc_id=doc.doc_id)
        chunks = (await self._ask(subjects.RPC_DOCUMENT_CHUNKS, asked, DocumentChunks)).chunks
        vectors: list[list[float]] = []
        for start in range(0, len(chunks), EMBED_BATCH):
            texts = [c.text[:8192] for c in chunks[start : start + EMBED_BATCH]]
            request = EmbedRequest(tenant=doc.tenant, inputs=texts, model=self.model)
            vectors += (await self._ask(subjects.RPC_EMBED, request, EmbedReply)).vectors
        written = 0
        for start in range(0, len(chunks), WRITE_BATCH):
            part = [
                ReindexChunk(chunk_id=c.chunk_id, position=c.position, vector=v)
                for c, v in zip(
                    chunks[start : start + WRITE_BATCH],
                    vectors[start : start + WRITE_BATCH],
                    strict=True,
                )
            ]
            write = ReindexWrite(
                model=self.model,
                tenant=doc.tenant,
                doc_id=doc.doc_id,
                version=doc.version,
                chunks=part,
            )
            written += (await self._ask(subjects.REINDEX_WRITE, write)).written
        self._documents += written > 0
        self._passages += written
        self.report.advance(doc.chunks)

    async def _ask(
        self,
        subject: str,
        message: Message,
        answer: type[R] = ReindexReply,  # type: ignore[assignment]
        wait_s: float = 120,
    ) -> R:
        return await _request(self.nc, subject, message, answer, wait_s)


async def _request(
    nc: nats.NATS,
    subject: str,
    message: Message,
    answer: type[R] = ReindexReply,  # type: ignore[assignment]
    wait_s: float = 120,
) -> R:
    """``message``'s answer, or ``ReindexError`` saying why there is none."""
    try:
        raw = await nc.request(subject, message.model_dump_json().encode(), wait_s)
    except NoRespondersError:
        service = "embedder" if subject == subjects.RPC_EMBED else "indexer"
        raise ReindexError(f"no {service} is running ({subject})") from None
    except (TimeoutError, NatsTimeout):
        raise ReindexError(f"no answer on {subject} in {wait_s:.0f} s") from None
    reply = answer.model_validate_json(raw.data)
    if reply.error is not None:
        raise ReindexError(reply.error.message)
    return reply


def _probe() -> EmbedRequest:
    return EmbedRequest(tenant="olympus", inputs=["olympus"])


def _switched(building: ModelMove) -> bytes:
    done = building.model_copy(update={"phase": "switched", "current": "", "previous": None})
    return done.model_dump_json().encode()


async def drop_old(nc: nats.NATS) -> list[str]:
    """Drop what earlier reindexes kept, through the running stack (``--drop-old``)."""
    reply: ReindexReply = await _request(nc, subjects.REINDEX_DROP_OLD, ReindexDropOld())
    return reply.dropped


async def cancel(nc: nats.NATS, kv: KeyValue | None = None) -> bool:
    """Settle on the model the index holds (``olympus reindex --cancel``, or a run that
    failed): back to how it was (the embedders on the model they ran, no next collection),
    or, if the switch happened before the run stopped (its answer lost), forward to the new
    model. Whether it had switched."""
    bucket = kv or await nc.jetstream().key_value(subjects.MODEL_BUCKET)
    move = await MoveReader(nc.jetstream(), bucket)()
    building = move if move is not None and move.phase == "building" else None
    asked = ReindexCancel(model=building.identity if building else "")
    reply: ReindexReply = await _request(nc, subjects.REINDEX_CANCEL, asked)
    if building is not None and reply.switched:
        await bucket.put(subjects.MODEL_KEY, _switched(building))
    elif building is not None and building.previous is not None:
        await bucket.put(subjects.MODEL_KEY, building.previous.model_dump_json().encode())
    elif building is not None:
        await bucket.delete(subjects.MODEL_KEY)
    return reply.switched
