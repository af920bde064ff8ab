"""H.A.D.E.S.' work, free of the broker: write and search the stores.

Every store call runs on one thread: that serialises writes (Milvus Lite corrupts its log
under concurrent writes) and lets a single writer coalesce many documents into one upsert.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import structlog
from pydantic import ValidationError

from hades import ChunkRecord, DocumentGraph, DocumentWrite, SearchQuery, VectorHit, VectorIndex
from hades import relations as rel
from olympus import telemetry
from olympus.delivery import PermanentError
from olympus.logging import get_logger
from schemas import subjects
from schemas.ids import model_fingerprint
from schemas.messages import (
    MAX_ERROR_CHARS,
    ContextAdd,
    ContextClear,
    ContextGet,
    ContextReply,
    DeadLetter,
    DocumentChunks,
    DocumentChunksGet,
    DocumentEvent,
    DocumentGet,
    DocumentInfo,
    DocumentList,
    DocumentPage,
    DocumentReply,
    DocumentStats,
    DocumentStatsReply,
    ErrorInfo,
    GraphGet,
    GraphReply,
    HistoryGet,
    HistoryReply,
    IndexDelete,
    IndexStatus,
    IndexTurn,
    IndexUpsert,
    IngestDocument,
    QueryGenerate,
    QueryRetrieve,
    ReindexBegin,
    ReindexCancel,
    ReindexDocument,
    ReindexDropOld,
    ReindexPage,
    ReindexPageReply,
    ReindexReply,
    ReindexSwitch,
    ReindexWrite,
    RelatedGet,
    RelatedReply,
    RelationDelete,
    RelationList,
    RelationPage,
    RelationPut,
    RelationReply,
    RetrievedChunk,
    RetrieveReply,
    SessionTurn,
    StatusChange,
)

log = get_logger("olympus.indexer")
T = TypeVar("T")
SIMILAR_BATCH = 16  # documents related to their similar ones per turn of the store thread
RRF_K = 60  # reciprocal rank fusion's constant (Cormack et al.), as the vector index uses
PRESENT_ROWS = 8192  # rows one ``present`` call may return, under Milvus' 16,384 a query
_NOT_FOUND = ErrorInfo(code="not_found", message="no such document")
_NO_REINDEX = ErrorInfo(code="not_found", message="no reindex of that model is under way")


_Mean = tuple[str, list[float]]  # a document's mean vector, and the model it is of


class EventPublisher(Protocol):
    async def __call__(self, event: DocumentEvent) -> None: ...


@dataclass
class _Pending:
    op: IndexUpsert | IndexDelete
    future: asyncio.Future[DocumentEvent | None]


def _documents(hits: Sequence[RetrievedChunk]) -> dict[str, Any]:
    """OpenInference ``retrieval.documents.*``: what a RETRIEVER span shows in Phoenix."""
    attributes: dict[str, Any] = {}
    for i, hit in enumerate(hits):
        prefix = f"retrieval.documents.{i}.document"
        attributes[f"{prefix}.id"] = hit.chunk_id
        attributes[f"{prefix}.score"] = hit.score
        attributes[f"{prefix}.content"] = telemetry.cut(hit.text)
        attributes[f"{prefix}.metadata"] = {
            "doc_id": hit.doc_id,
            "filename": hit.filename,
            "position": hit.position,
        }
    return attributes


def failed_document(letter: DeadLetter) -> tuple[str, StatusChange] | None:
    """The tenant and the ``failed`` status of the document version a dead letter's original
    was about: an ingest (its version is its stream sequence) or an index upsert. None for
    anything else: a delete, a chat turn, a message that was never valid, or an ingest whose
    body names another tenant than its subject (a forgery: it marks nobody's document)."""
    if letter.original_encoding != "utf-8":
        return None
    owner = subjects.ingest_owner(letter.subject)
    try:
        if owner is not None and letter.sequence is not None:
            doc = IngestDocument.model_validate_json(letter.original)
            if doc.op != "upsert" or (doc.tenant, doc.collection) != owner:
                return None
            about: IngestDocument | IndexUpsert = doc
            version, digest = letter.sequence, None
        elif letter.subject == subjects.INDEX_UPSERT:
            about = IndexUpsert.model_validate_json(letter.original)
            version, digest = about.version, about.content_hash
        else:
            return None
    except ValidationError:
        return None
    change = StatusChange(
        collection=about.collection,
        doc_id=about.doc_id,
        filename=about.filename,
        version=version,
        status="failed",
        error=f"{letter.error_type}: {letter.error}"[:MAX_ERROR_CHARS],
        content_hash=digest,
    )
    return about.tenant, change


class Indexer:
    def __init__(
        self,
        vectors: VectorIndex,
        graph: DocumentGraph,
        emit: EventPublisher,
        *,
        write_batch: int = 64,
        flush_idle_s: float = 1.0,
        flush_rows: int = 256,
        history_turns: int = 6,
        similar_documents: int = 3,
        graph_weight: float = 0.5,
    ) -> None:
        self.history_turns = history_turns
        self.similar_documents = similar_documents
        self.graph_weight = graph_weight
        # Documents written since the last seal, whose similar documents are found after it:
        # (tenant, doc_id) -> the mean of its chunks' vectors, and their model
        self._unsimilar: dict[tuple[str, str], _Mean] = {}
        self.vectors = vectors
        self.graph = graph
        self.emit = emit
        self.write_batch = write_batch
        self.flush_idle_s = flush_idle_s
        self.flush_rows = flush_rows
        self._unsealed = 0  # chunks written since the vector index last sealed them
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stores")
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._dirty = asyncio.Event()
        self._last_write = 0.0

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._writer(), name="hades-writer"),
            asyncio.create_task(self._flusher(), name="hades-flusher"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._store(self.vectors.flush)
        await self._store(self.vectors.close)
        await self._store(self.graph.close)
        self._executor.shutdown(wait=True)

    async def _store(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # --- writes: one writer, many documents per store call ------------------------------------
    async def upsert(self, op: IndexUpsert) -> DocumentEvent | None:
        structlog.contextvars.bind_contextvars(doc_id=op.doc_id, collection=op.collection)
        return await self._submit(op)

    async def delete(self, op: IndexDelete) -> DocumentEvent | None:
        return await self._submit(op)

    async def _submit(self, op: IndexUpsert | IndexDelete) -> DocumentEvent | None:
        future: asyncio.Future[DocumentEvent | None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(op, future))
        event = await future
        if event is not None:
            await self.emit(event)
        return event

    async def _writer(self) -> None:
        while True:
            group = [await self._queue.get()]
            while len(group) < self.write_batch and not self._queue.empty():
                group.append(self._queue.get_nowait())
            try:
                events = await self._store(self._apply, [p.op for p in group])
            except Exception as exc:
                if len(group) == 1:
                    group[0].future.set_exception(exc)
                    continue
                # Keep one bad document from failing the others: write them one by one.
                log.warning("group write failed; writing one by one", size=len(group))
                await self._apply_one_by_one(group)
            else:
                for pending, event in zip(group, events, strict=True):
                    if not pending.future.done():
                        pending.future.set_result(event)
            self._last_write = time.monotonic()
            self._dirty.set()
            self._unsealed += sum(len(p.op.chunks) for p in group if isinstance(p.op, IndexUpsert))
            if self.vectors.seals_while_writing and self._unsealed >= self.flush_rows:
                await self._seal()

    async def _seal(self) -> None:
        # Counted from zero before the store thread seals: whatever is written after this line
        # is queued behind the seal, so it is not in it.
        unsealed, self._unsealed = self._unsealed, 0
        try:
            await self._store(self.vectors.flush)
        except Exception as exc:  # searches slow down, but no write may wait on a seal
            self._unsealed += unsealed
            log.warning("sealing the vector index failed", error=str(exc))

    async def _apply_one_by_one(self, group: list[_Pending]) -> None:
        for pending in group:
            try:
                (event,) = await self._store(self._apply, [pending.op])
            except Exception as exc:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            else:
                if not pending.future.done():
                    pending.future.set_result(event)

    async def _flusher(self) -> None:
        # Every search reads Milvus Lite's unsealed rows one by one (each vector turned into a
        # Python list) and rebuilds their BM25 index, so they cost ~10 ms of a dense search and
        # ~20 of a BM25 search per 128. There the writer seals every ``flush_rows`` chunks, so a
        # long ingest does not slow everyone's queries more and more; this seals the rest once
        # writes pause, then relates the documents written since.
        while True:
            await self._dirty.wait()
            idle = time.monotonic() - self._last_write
            if idle < self.flush_idle_s:
                await asyncio.sleep(self.flush_idle_s - idle)
                continue
            self._dirty.clear()
            await self._seal()
            # A few documents per turn of the store thread: searches and writes that arrive
            # meanwhile wait for one batch, not for the whole pass.
            while self._unsimilar and not self._dirty.is_set():
                batch = list(itertools.islice(self._unsimilar.items(), SIMILAR_BATCH))
                for key, _ in batch:
                    del self._unsimilar[key]
                await self._store(self._find_similar, batch)

    def _find_similar(self, batch: Sequence[tuple[tuple[str, str], _Mean]]) -> None:
        """Runs on the store thread once writes pause: each document written since is related
        to its nearest documents (by the mean of its chunks' vectors), so ingest never waits
        for it. One whose vectors are of a model the index no longer holds (a live reindex
        switched it meanwhile) is left as it is. A tenant's documents are searched in one
        call: at 5,183 SciFact documents one at a time cost 25 ms of CPU each, 16 at once
        4-7 ms each."""
        by_tenant: dict[str, list[tuple[str, list[float]]]] = {}
        for (tenant, doc_id), (model, vector) in batch:
            if model == (self.vectors.model or ""):
                by_tenant.setdefault(tenant, []).append((doc_id, vector))
        for tenant, docs in by_tenant.items():
            found = self.vectors.nearest_documents(
                tenant, [vector for _, vector in docs], self.similar_documents + 1
            )
            for (doc_id, _), hits in zip(docs, found, strict=True):
                self.graph.replace_similar(
                    tenant,
                    doc_id,
                    [
                        rel.similar(doc_id, hit.doc_id, hit.score)
                        for hit in hits
                        if hit.doc_id != doc_id
                    ][: self.similar_documents],
                )

    def _apply(self, ops: Sequence[IndexUpsert | IndexDelete]) -> list[DocumentEvent | None]:
        """Runs on the store thread. Returns one event per op, None where the op was stale.

        Milvus is written before the graph, and the graph records which chunks a document has.
        So the graph says what to remove when a version replaces another, and a stale write
        (one a newer version overtook, perhaps after a crash left its vectors behind) removes
        whatever of its own the graph does not list.
        """
        events: list[DocumentEvent | None] = [None] * len(ops)
        # A later op in the same group for the same document wins; earlier ones are stale.
        latest: dict[tuple[str, str], int] = {}
        for i, op in enumerate(ops):
            key = (op.tenant, op.doc_id)
            if key not in latest or op.version >= ops[latest[key]].version:
                latest[key] = i
        winners = set(latest.values())
        writes: list[tuple[int, IndexUpsert, DocumentInfo | None]] = []
        unwanted: dict[str, set[str]] = {}
        for i, op in enumerate(ops):
            if not isinstance(op, IndexUpsert):
                continue
            op = self._in_the_index_model(op)
            listed = set(self.graph.chunk_ids(op.tenant, op.doc_id))
            new = {c.chunk_id for c in op.chunks}
            if i in winners and self.graph.accepts(op.tenant, op.doc_id, op.version, "indexed"):
                writes.append((i, op, self.graph.get_document(op.tenant, op.doc_id)))
                unwanted.setdefault(op.tenant, set()).update(listed - new)
            else:
                unwanted.setdefault(op.tenant, set()).update(new - listed)
        kept = {c.chunk_id for _, op, _ in writes for c in op.chunks}
        now = time.time()
        records = {
            i: [
                ChunkRecord(
                    c.chunk_id, op.tenant, op.collection, op.doc_id, c.position, c.text, c.vector
                )
                for c in op.chunks
            ]
            for i, op, _ in writes
        }
        self.vectors.upsert([r for rs in records.values() for r in rs])
        for tenant, ids in unwanted.items():
            self.vectors.delete_chunks(tenant, ids - kept)
        if self.vectors.next is not None:
            self._write_next(self.vectors.next, [op for _, op, _ in writes])
        documents = {
            i: DocumentInfo(
                doc_id=op.doc_id,
                collection=op.collection,
                filename=op.filename,
                status="indexed",
                chunk_count=len(op.chunks),
                version=op.version,
                content_hash=op.content_hash,
                media_type=op.media_type,
                metadata=op.metadata,
                links_dropped=op.links_dropped,
                created_at=current.created_at if current else now,
                updated_at=now,
            )
            for i, op, current in writes
        }
        self.graph.put_documents(
            [
                DocumentWrite(
                    op.tenant,
                    documents[i],
                    records[i],
                    [rel.declared(op.doc_id, r, "ingest") for r in op.relations]
                    + [rel.found(op.doc_id, link) for link in op.links],
                )
                for i, op, _ in writes
            ]
        )
        for i, op, _ in writes:
            events[i] = DocumentEvent.of(op.tenant, documents[i])
            if self.similar_documents:
                mean = _mean([c.vector for c in op.chunks])
                self._unsimilar[(op.tenant, op.doc_id)] = (self.vectors.model or "", mean)
        for i, op in enumerate(ops):
            if isinstance(op, IndexDelete) and i in winners:
                events[i] = self._apply_delete(op)
        return events

    def _in_the_index_model(self, op: IndexUpsert) -> IndexUpsert:
        """``op`` with the vectors of the model the index holds: its own, or, once a live
        ``olympus reindex`` has switched the index to the model the embedder sends beside them,
        those. Raises ``PermanentError`` when it has none of that model or size. Runs on the
        store thread, so no switch falls between choosing and writing."""
        held = self.vectors.model
        if held is None and model_fingerprint(op.model):
            self.vectors.claim_model(op.model)
        elif held is not None and not _same_model(op.model, held):
            if not (op.next_model and _same_model(op.next_model, held)):
                raise PermanentError(_other_model(held, op.model))
            if any(c.next_vector is None for c in op.chunks):
                raise PermanentError(f"chunks without vectors of {op.next_model}")
            op = op.model_copy(
                update={
                    "model": op.next_model,
                    "next_model": "",
                    "chunks": [
                        c.model_copy(update={"vector": c.next_vector, "next_vector": None})
                        for c in op.chunks
                    ],
                }
            )
        wrong = [c.chunk_id for c in op.chunks if len(c.vector) != self.vectors.dims]
        if wrong:
            raise PermanentError(
                f"{len(wrong)} vectors do not have the index's {self.vectors.dims} dimensions: "
                "the embedder's model and OLYMPUS_INDEXER_DIMS disagree"
            )
        return op

    @staticmethod
    def _write_next(following: VectorIndex, ops: Sequence[IndexUpsert]) -> None:
        """A live reindex's collection gets each written document's vectors of its model, when
        the embedder sent them; else it loses the document, which a pass of ``olympus reindex``
        then embeds (it lists what ``present`` lacks), so it never holds an older version."""
        for op in ops:
            following.delete_document(op.tenant, op.doc_id)
        following.upsert(
            [
                ChunkRecord(
                    c.chunk_id, op.tenant, op.collection, op.doc_id, c.position, c.text,
                    c.next_vector,
                )
                for op in ops
                if _identified_same(op.next_model, following.model)
                for c in op.chunks
                if c.next_vector is not None and len(c.next_vector) == following.dims
            ]
        )  # fmt: skip

    def _apply_delete(self, op: IndexDelete) -> DocumentEvent | None:
        current = self.graph.get_document(op.tenant, op.doc_id)
        if current is not None and current.version > op.version:
            return None
        self.vectors.delete_document(op.tenant, op.doc_id)
        removed = self.graph.delete_document(op.tenant, op.doc_id, op.version)
        if removed is None:
            return None
        return DocumentEvent(
            tenant=op.tenant,
            collection=removed.collection,
            doc_id=op.doc_id,
            filename=removed.filename,
            status="deleted",
            version=op.version,
        )

    # --- status -------------------------------------------------------------------------------
    async def status(self, op: IndexStatus) -> list[DocumentEvent]:
        """Record the changes (one transaction), then announce each that was not stale."""
        now = time.time()
        infos = [
            DocumentInfo(
                doc_id=change.doc_id,
                collection=change.collection,
                filename=change.filename,
                status=change.status,
                error=change.error,
                version=change.version,
                content_hash=change.content_hash,
                created_at=now,
                updated_at=now,
            )
            for change in op.changes
        ]
        stored = await self._store(self.graph.set_statuses, op.tenant, infos)
        events = [DocumentEvent.of(op.tenant, info) for info in stored if info is not None]
        for event in events:
            await self.emit(event)
        return events

    async def dead_letter(self, letter: DeadLetter) -> list[DocumentEvent]:
        """Mark the document a dead letter carries failed, with the letter's error: whatever
        way its message failed for good (an error on every try, a worker that died on it, the
        worker stopping on its last try), nobody waits on it for ever. A newer version of the
        document, or its deletion, overtakes the letter as it would any status."""
        failed = failed_document(letter)
        if failed is None:
            return []
        return await self.status(IndexStatus(tenant=failed[0], changes=[failed[1]]))

    # --- reads --------------------------------------------------------------------------------
    async def retrieve(self, query: QueryRetrieve) -> RetrieveReply | None:
        structlog.contextvars.bind_contextvars(
            request_id=query.request_id, session_id=query.session_id
        )
        if query.deadline < time.time():
            log.info("dropped expired query")
            return None
        with telemetry.span(
            "olympus.retrieve",
            "RETRIEVER",
            **{
                "input.value": telemetry.cut(query.input),
                "olympus.retrieval.mode": query.mode,
                "olympus.retrieval.top_k": query.top_k,
                "session.id": query.session_id,
            },
        ) as span:
            try:
                reply = await self._store(self._retrieve, query)
            except _OtherModel as exc:
                return RetrieveReply(error=ErrorInfo(code="unavailable", message=str(exc)))
            except ValueError as exc:
                return RetrieveReply(error=ErrorInfo(code="bad_request", message=str(exc)))
            if span.is_recording():  # the passages' attributes only for a span that is kept
                telemetry.set_attributes(span, _documents(reply.hits))
            return reply

    def _query_vector(self, query: QueryRetrieve) -> list[float] | None:
        """The question's vector of the model the index holds: during a live reindex the
        embedder sends one of each model, and either may be the index's when it switches."""
        held = self.vectors.model
        if query.vector is None or held is None or not model_fingerprint(query.model):
            return query.vector
        if _same_model(held, query.model):
            return query.vector
        if query.next_vector is not None and _identified_same(query.next_model, held):
            return query.next_vector
        raise _OtherModel(_other_model(held, query.model) + " (bm25 search still works)")

    def _search(self, query: QueryRetrieve, doc_ids: Sequence[str] | None) -> list[VectorHit]:
        return self.vectors.search(
            SearchQuery(
                tenant=query.tenant,
                mode=query.mode,
                top_k=query.top_k,
                text=query.input,
                vector=self._query_vector(query),
                collection=query.collection,
                doc_ids=doc_ids,
                unique_documents=query.unique_documents,
            )
        )

    def _retrieve(self, query: QueryRetrieve) -> RetrieveReply:
        hits = self._search(query, query.doc_ids)
        found: list[tuple[VectorHit, str]] = [(h, "search") for h in hits]
        if query.expand == "graph":
            found = self._with_related(query, hits)
        elif query.expand == "neighbours":
            found = self._with_neighbours(query.tenant, hits)
        # Only what the graph holds: a deleted document's or replaced chunk's vectors never
        # come back, and the text comes from the graph (the vector index keeps none).
        docs = self.graph.get_documents(query.tenant, {h.doc_id for h, _ in found})
        texts = self.graph.chunk_texts(query.tenant, [h.chunk_id for h, _ in found])
        context = self.graph.get_context(query.tenant, query.session_id) if query.session_id else []
        return RetrieveReply(
            hits=[
                RetrievedChunk(
                    doc_id=h.doc_id,
                    filename=docs[h.doc_id].filename,
                    collection=h.collection,
                    chunk_id=h.chunk_id,
                    position=h.position,
                    text=texts[h.chunk_id],
                    score=h.score,
                    found_by=how,  # type: ignore[arg-type]
                )
                for h, how in found
                if h.doc_id in docs and h.chunk_id in texts
            ],
            session_context=context,
        )

    def _with_neighbours(
        self, tenant: str, hits: Sequence[VectorHit]
    ) -> list[tuple[VectorHit, str]]:
        """Each hit followed by the chunks beside it (not already a hit): a passage read with
        what comes just before and after it, in the document's order."""
        seen = {h.chunk_id for h in hits}
        out: list[tuple[VectorHit, str]] = []
        for hit in hits:
            beside = [
                (VectorHit(chunk_id, hit.doc_id, hit.collection, position, hit.score), "neighbour")
                for chunk_id, position in self.graph.neighbour_chunks(tenant, hit.chunk_id)
                if chunk_id not in seen
            ]
            seen.update(h.chunk_id for h, _ in beside)
            out += [b for b in beside if b[0].position < hit.position]
            out.append((hit, "search"))
            out += [b for b in beside if b[0].position > hit.position]
        return out

    def _with_related(
        self, query: QueryRetrieve, hits: Sequence[VectorHit]
    ) -> list[tuple[VectorHit, str]]:
        """The hits, and up to half as many more: the best passages of the documents related
        to the top three hits' documents, searched with the same query. The hits down to the
        third of those documents keep their places at the top; below them everything is ranked by
        reciprocal rank fusion, the graph's list weighted ``graph_weight`` (a passage in both
        lists rises)."""
        top = list(dict.fromkeys(h.doc_id for h in hits))[:3]
        related = {
            other
            for doc_id in top
            for r in self.graph.relations(query.tenant, doc_id)
            if r.target is not None
            for other in (r.source, r.target)
            if other not in top
        }
        if query.doc_ids is not None:
            related &= set(query.doc_ids)
        if not related:
            return [(h, "search") for h in hits]
        extra = self._search(query, sorted(related))
        scores: dict[str, float] = {}
        for weight, listed in ((1.0, hits), (self.graph_weight, extra)):
            for rank, hit in enumerate(listed):
                scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + weight / (RRF_K + rank + 1)
        searched = {h.chunk_id for h in hits}
        added = [h for h in extra if h.chunk_id not in searched][: max(1, query.top_k // 2)]
        # the hits down to the first of the third top document stay as they are
        kept = next(i for i, h in enumerate(hits) if h.doc_id == top[-1]) + 1
        seeds = [(h, "search") for h in hits[:kept]]
        rest = [(h, "search") for h in hits[kept:]] + [(h, "graph") for h in added]
        rest.sort(key=lambda pair: -scores[pair[0].chunk_id])
        chosen = seeds + rest
        return [
            (
                VectorHit(
                    h.chunk_id, h.doc_id, h.collection, h.position, round(scores[h.chunk_id], 6)
                ),
                how,
            )
            for h, how in chosen
        ]

    async def get_document(self, req: DocumentGet) -> DocumentReply:
        doc = await self._store(self.graph.get_document, req.tenant, req.doc_id)
        if doc is None:
            return DocumentReply(error=ErrorInfo(code="not_found", message="no such document"))
        return DocumentReply(document=doc)

    async def document_chunks(self, req: DocumentChunksGet) -> DocumentChunks:
        return DocumentChunks(chunks=await self._store(self.graph.chunks, req.tenant, req.doc_id))

    async def list_documents(self, req: DocumentList) -> DocumentPage:
        items, total = await self._store(
            self.graph.list_documents,
            req.tenant,
            req.collection,
            req.status,
            req.limit,
            req.offset,
        )
        return DocumentPage(items=items, total=total)

    async def stats(self, req: DocumentStats) -> DocumentStatsReply:
        return DocumentStatsReply(
            by_status=await self._store(self.graph.counts_by_status, req.tenant)
        )

    async def add_context(self, req: ContextAdd) -> ContextReply:
        items = await self._store(self.graph.add_context, req.tenant, req.session_id, req.content)
        return ContextReply(items=items)

    async def get_context(self, req: ContextGet) -> ContextReply:
        return ContextReply(
            items=await self._store(self.graph.get_context, req.tenant, req.session_id)
        )

    async def for_generation(self, query: QueryRetrieve) -> QueryGenerate | RetrieveReply | None:
        """A chat request with its passages and its session's turns, ready for the generator;
        an error answer; None when it expired."""
        assert query.chat is not None
        started = time.perf_counter()
        reply = await self.retrieve(query)
        if reply is None or reply.error is not None:
            return reply
        turns: list[SessionTurn] = []
        if query.chat.remember and query.session_id:
            turns = await self._store(
                self.graph.get_turns, query.tenant, query.session_id, self.history_turns
            )
        return QueryGenerate(
            request_id=query.request_id,
            tenant=query.tenant,
            session_id=query.session_id,
            input=query.input,
            chat=query.chat,
            passages=reply.hits,
            session_context=reply.session_context,
            session_turns=turns,
            deadline=query.deadline,
            retrieval_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    # --- a live re-embedding (``olympus reindex`` against the running stack) -------------------
    async def reindex_begin(self, req: ReindexBegin) -> ReindexReply:
        if _identified_same(req.model, self.vectors.model):
            message = f"the index already holds vectors of {req.model}"
            return ReindexReply(error=ErrorInfo(code="bad_request", message=message))
        await self._store(self.vectors.begin_next, req.model, req.dims)
        log.info("reindex begun", model=req.model, dims=req.dims)
        return ReindexReply()

    async def reindex_page(self, req: ReindexPage) -> ReindexPageReply:
        if self.vectors.next is None:
            return ReindexPageReply(error=_NO_REINDEX)
        return await self._store(self._reindex_page, req)

    def _reindex_page(self, req: ReindexPage) -> ReindexPageReply:
        """The page's documents whose passages the next collection does not hold, all of them
        (a document it holds is always at its current version, see ``_write_next``)."""
        assert self.vectors.next is not None
        tenants = self.graph.tenants()
        later = [t for t in tenants if req.tenant is None or t >= req.tenant]
        if not later:
            return ReindexPageReply()
        tenant = later[0]
        offset = req.offset if tenant == req.tenant else 0
        docs, total = self.graph.list_documents(tenant, limit=req.limit, offset=offset)
        chunks = {d.doc_id: len(self.graph.chunk_ids(tenant, d.doc_id)) for d in docs}
        present: dict[str, int] = {}
        for group in _bounded(list(chunks.items()), PRESENT_ROWS):
            present |= self.vectors.next.present(tenant, group)
        missing = [
            ReindexDocument(
                tenant=tenant, doc_id=d.doc_id, version=d.version, chunks=chunks[d.doc_id]
            )
            for d in docs
            if chunks[d.doc_id] and present.get(d.doc_id, 0) != chunks[d.doc_id]
        ]
        if docs and offset + len(docs) < total:
            after: tuple[str | None, int] = (tenant, offset + len(docs))
        else:
            after = (later[1], 0) if len(later) > 1 else (None, 0)
        return ReindexPageReply(
            missing=missing, scanned=len(docs), next_tenant=after[0], next_offset=after[1]
        )

    async def reindex_write(self, req: ReindexWrite) -> ReindexReply:
        following = self.vectors.next
        if following is None or not _identified_same(req.model, following.model):
            return ReindexReply(error=_NO_REINDEX)
        if any(len(c.vector) != following.dims for c in req.chunks):
            message = f"{req.model}'s vectors have {following.dims} dimensions"
            return ReindexReply(error=ErrorInfo(code="bad_request", message=message))
        return ReindexReply(written=await self._store(self._reindex_write, following, req))

    def _reindex_write(self, following: VectorIndex, req: ReindexWrite) -> int:
        """Written only while the document is at the version its passages were read at: on the
        store thread, after every write queued before it, so nothing newer is overwritten."""
        doc = self.graph.get_document(req.tenant, req.doc_id)
        if doc is None or doc.version != req.version or following is not self.vectors.next:
            return 0
        texts = self.graph.chunk_texts(req.tenant, [c.chunk_id for c in req.chunks])
        following.upsert(
            [
                ChunkRecord(
                    c.chunk_id, req.tenant, doc.collection, req.doc_id, c.position,
                    texts[c.chunk_id], c.vector,
                )
                for c in req.chunks
                if c.chunk_id in texts
            ]
        )  # fmt: skip
        return sum(c.chunk_id in texts for c in req.chunks)

    async def reindex_switch(self, req: ReindexSwitch) -> ReindexReply:
        following = self.vectors.next
        if following is None or not _identified_same(req.model, following.model):
            return ReindexReply(error=_NO_REINDEX)
        return await self._store(self._reindex_switch)

    def _reindex_switch(self) -> ReindexReply:
        """The switch, if nothing is missing: on the store thread, so no write falls between
        the count and the switch, and every search after it reads the new vectors."""
        missing, page = 0, ReindexPage()
        while True:
            listed = self._reindex_page(page)
            missing += len(listed.missing)
            if listed.next_tenant is None:
                break
            page = ReindexPage(tenant=listed.next_tenant, offset=listed.next_offset)
        if missing:
            return ReindexReply(missing=missing)
        kept = self.vectors.promote_next()
        log.info("reindex switched", model=self.vectors.model, kept_as=kept)
        return ReindexReply(switched=True, kept_as=kept)

    async def reindex_drop_old(self, req: ReindexDropOld) -> ReindexReply:
        dropped = await self._store(self.vectors.drop_kept)
        log.info("dropped the vectors reindexes kept", collections=dropped)
        return ReindexReply(dropped=dropped)

    async def reindex_cancel(self, req: ReindexCancel) -> ReindexReply:
        if _identified_same(req.model, self.vectors.model):
            return ReindexReply(switched=True)
        await self._store(self.vectors.cancel_next)
        return ReindexReply()

    # --- relations ----------------------------------------------------------------------------
    async def put_relation(self, req: RelationPut) -> RelationReply:
        made = rel.api(req.source, req.target, req.kind, req.weight)
        kept = await self._store(self.graph.put_relation, req.tenant, made)
        if kept is None:
            return RelationReply(
                error=ErrorInfo(
                    code="not_found",
                    message=f"no document {req.source!r} or no document {req.target!r}",
                )
            )
        return RelationReply(relation=kept)

    async def delete_relation(self, req: RelationDelete) -> RelationReply:
        if not await self._store(self.graph.delete_relation, req.tenant, req.relation_id):
            return RelationReply(
                error=ErrorInfo(code="not_found", message=f"no relation {req.relation_id!r}")
            )
        return RelationReply()

    async def list_relations(self, req: RelationList) -> RelationPage:
        if await self._store(self.graph.get_document, req.tenant, req.doc_id) is None:
            return RelationPage(error=_NOT_FOUND)
        return RelationPage(items=await self._store(self.graph.relations, req.tenant, req.doc_id))

    async def graph_around(self, req: GraphGet) -> GraphReply:
        nodes, edges = await self._store(
            self.graph.traverse, req.tenant, req.doc_id, req.depth, req.direction, req.kinds
        )
        if not nodes:
            return GraphReply(error=_NOT_FOUND)
        return GraphReply(nodes=nodes, edges=edges)

    async def related(self, req: RelatedGet) -> RelatedReply:
        # one hop, either way: the documents and every relation that joins them
        nodes, edges = await self._store(self.graph.traverse, req.tenant, req.doc_id, 1)
        if not nodes:
            return RelatedReply(error=_NOT_FOUND)
        by_id = {n.doc_id: n for n in nodes}
        return RelatedReply(items=rel.rank_related(req.doc_id, edges, by_id, req.limit))

    async def add_turn(self, turn: IndexTurn) -> None:
        await self._store(self.graph.add_turn, turn.tenant, turn.session_id, turn.turn)

    async def history(self, req: HistoryGet) -> HistoryReply:
        turns = await self._store(self.graph.get_turns, req.tenant, req.session_id, req.limit)
        return HistoryReply(turns=turns)

    async def clear_context(self, req: ContextClear) -> ContextReply:
        await self._store(self.graph.clear_context, req.tenant, req.session_id)
        return ContextReply(items=[])


def _bounded(sizes: Sequence[tuple[str, int]], most: int) -> list[list[str]]:
    """The names in order, in groups whose sizes add up to at most ``most`` (one bigger alone)."""
    groups: list[list[str]] = []
    room = 0
    for name, size in sizes:
        if not groups or size > room:
            groups.append([])
            room = most
        groups[-1].append(name)
        room -= size
    return groups


def _mean(vectors: Sequence[Sequence[float]]) -> list[float]:
    """The mean of a document's chunk vectors, scaled to unit length (the index's vectors are)."""
    import numpy as np

    mean = np.asarray(vectors, dtype=np.float32).mean(axis=0)
    norm = float(np.linalg.norm(mean)) or 1.0
    return (mean / norm).tolist()  # type: ignore[no-any-return]


class _OtherModel(Exception):
    """The question's vector is of another model than the index's."""


def _identified_same(a: str, b: str | None) -> bool:
    """Both name one model by its weights (``model_fingerprint``)."""
    return bool(model_fingerprint(a)) and model_fingerprint(a) == model_fingerprint(b or "")


def _same_model(a: str, b: str) -> bool:
    """One model, by its weights (``model_fingerprint``): an older embedder's bare name, or a
    model named by a hub id, has no fingerprint and is compared with nothing."""
    return not model_fingerprint(a) or model_fingerprint(a) == model_fingerprint(b)


def _other_model(held: str, model: str) -> str:
    return (
        f"the index holds vectors of {held}, and the embedder now runs {model}: vectors of two "
        "models cannot be compared. Set OLYMPUS_EMBEDDER_MODEL back, or stop the stack and "
        "embed every passage with the new model: olympus reindex --model <its folder>"
    )
