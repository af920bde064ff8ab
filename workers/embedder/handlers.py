"""The embedder's work, free of the broker: documents in, embedded chunks out; queries too."""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Protocol

import structlog

from olympus import telemetry
from olympus.logging import get_logger
from schemas import subjects
from schemas.formats import content_problem, media_type_of
from schemas.ids import chunk_id, content_hash, index_msg_id, model_fingerprint, status_msg_id
from schemas.messages import (
    MAX_ERROR_CHARS,
    MAX_STATUS_CHANGES,
    ChunkPayload,
    EmbedReply,
    EmbedRequest,
    ErrorInfo,
    FoundLink,
    IndexDelete,
    IndexStatus,
    IndexUpsert,
    IngestDocument,
    Message,
    QueryEmbed,
    QueryRetrieve,
    RetrieveReply,
    StatusChange,
)
from workers.embedder.batching import EmbeddingBatcher
from workers.embedder.chunking import Chunker
from workers.embedder.extract import Extracted, ExtractionError, Reader, ReadLimits
from workers.embedder.links import found_links, markdown_links, mentions
from workers.embedder.models import Model

log = get_logger("olympus.embedder")


class Publisher(Protocol):
    async def __call__(self, subject: str, message: Message, msg_id: str | None = None) -> None:
        """Publish durably (JetStream); ``msg_id`` lets the stream drop a repeat."""


class IngestHandler:
    def __init__(
        self,
        chunker: Chunker,
        batcher: EmbeddingBatcher,
        publish: Publisher,
        model_name: str,
        max_chunks: int,
        reader: Reader | None = None,
        statuses: Statuses | None = None,
        max_links: int = 200,
        model_identity: str = "",
    ) -> None:
        self.max_links = max_links
        self.reader = reader or Reader(ReadLimits())
        self.statuses = statuses or Statuses(publish)
        self.chunker = chunker
        self.batcher = batcher
        self.publish = publish
        self.model_name = model_name
        self.model_identity = model_identity or model_name
        self.max_chunks = max_chunks
        # One thread parses and chunks: more would only fight the encoder's threads for cores.
        self._parser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parser")
        # The upserts being worked on, by document: a newer message for one abandons them.
        self._working: dict[tuple[str, str], dict[int, asyncio.Task[str]]] = {}
        self.next: Model | None = None  # the model a live reindex embeds with besides

    def use(self, current: Model, following: Model | None) -> None:
        """Embed with ``current`` from now on, and with ``following`` besides (a live
        reindex, ``workers.embedder.models``); work under way finishes with what it began."""
        self.chunker, self.batcher, self.next = current.chunker, current.batcher, following
        self.model_name, self.model_identity = current.encoder.name, current.identity

    async def handle(self, doc: IngestDocument, version: int) -> str:
        """Process one ingest message; ``version`` is its stream sequence. Returns the outcome.

        A delete, or a newer upsert, of a document this worker is still embedding abandons that
        work ("abandoned"): nothing of it is published, and what of its chunks still waits for
        the model is not encoded. (On another replica the older work runs on, and H.A.D.E.S.
        refuses its late write: the same outcome, later.) An unexpected error propagates, so the
        message is retried; once it has failed for good, H.A.D.E.S. marks the document failed
        from its dead letter.
        """
        structlog.contextvars.bind_contextvars(doc_id=doc.doc_id, collection=doc.collection)
        key = (doc.tenant, doc.doc_id)
        for older, work in self._working.get(key, {}).items():
            if older < version:
                work.cancel()
        if doc.op == "delete":
            return await self._delete(doc, version)
        work = asyncio.ensure_future(self._upsert(doc, version))
        self._working.setdefault(key, {})[version] = work
        try:
            return await work
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the worker is stopping: the message goes back
            log.info("abandoned: a newer message for the document came", version=version)
            return "abandoned"
        finally:
            versions = self._working[key]
            versions.pop(version, None)
            if not versions:
                del self._working[key]

    async def _delete(self, doc: IngestDocument, version: int) -> str:
        await self.publish(
            subjects.INDEX_DELETE,
            IndexDelete(
                tenant=doc.tenant, collection=doc.collection, doc_id=doc.doc_id, version=version
            ),
            msg_id=index_msg_id(doc.doc_id, "delete", version),
        )
        return "deleted"

    async def _upsert(self, doc: IngestDocument, version: int) -> str:
        # The models this document is embedded with, whatever a reindex changes meanwhile
        chunker, batcher, following = self.chunker, self.batcher, self.next
        name, identity = self.model_name, self.model_identity
        await self._status(doc, version, "processing")
        try:
            data = _decode_content(doc)
            digest = content_hash(data)
            media_type = media_type_of(doc.filename, doc.media_type)
            if media_type is None:
                raise ExtractionError(f"unsupported file type: {doc.filename!r}")
            problem = content_problem(media_type, data)  # a producer's, the gateway checked
            if problem is not None:
                raise ExtractionError(problem)
            extracted = await self.reader.read(data, media_type)
            texts = await asyncio.get_running_loop().run_in_executor(
                self._parser, self._chunk, chunker, extracted
            )
            links, dropped = await asyncio.get_running_loop().run_in_executor(
                self._parser, self._links, extracted
            )
        except ExtractionError as exc:
            await self._status(doc, version, "failed", error=str(exc))
            return "failed"
        started = time.perf_counter()
        ids = [chunk_id(doc.tenant, doc.doc_id, i, text) for i, text in enumerate(texts)]
        with telemetry.span("olympus.embed", "EMBEDDING", **{"olympus.doc_id": doc.doc_id}) as span:
            if following is None:
                vectors, beside = await batcher.embed(texts), None
            else:
                vectors, beside = await asyncio.gather(
                    batcher.embed(texts), following.batcher.embed(texts)
                )
            _describe_embedding(span, name, ids, texts, vectors)
        log.info("embedded", chunks=len(texts), s=round(time.perf_counter() - started, 3))
        chunks = [
            ChunkPayload(
                chunk_id=ident,
                position=i,
                text=text,
                vector=vectors[i].tolist(),
                next_vector=beside[i].tolist() if beside is not None else None,
            )
            for i, (ident, text) in enumerate(zip(ids, texts, strict=True))
        ]
        await self.publish(
            subjects.INDEX_UPSERT,
            IndexUpsert(
                tenant=doc.tenant,
                collection=doc.collection,
                doc_id=doc.doc_id,
                filename=doc.filename,
                media_type=media_type,
                metadata=doc.metadata,
                version=version,
                content_hash=digest,
                model=identity,
                next_model=following.identity if following is not None else "",
                chunks=chunks,
                relations=doc.relations,
                links=links,
                links_dropped=dropped,
            ),
            msg_id=index_msg_id(doc.doc_id, "upsert", version),
        )
        return "embedded"

    def _chunk(self, chunker: Chunker, extracted: Extracted) -> list[str]:
        texts = chunker.split(extracted.text, markdown=extracted.markdown)
        if not texts:
            raise ExtractionError("no text found in the document")
        if len(texts) > self.max_chunks:
            raise ExtractionError(
                f"the document has {len(texts)} chunks, more than the limit of {self.max_chunks}"
            )
        return texts

    def _links(self, extracted: Extracted) -> tuple[list[FoundLink], int]:
        marked = markdown_links(extracted.text) if extracted.markdown else []
        found, dropped = found_links(
            [*extracted.links, *marked, *mentions(extracted.text)], self.max_links
        )
        if dropped:
            log.info("links beyond the cap not kept", kept=len(found), dropped=dropped)
        return found, dropped

    async def _status(
        self,
        doc: IngestDocument,
        version: int,
        status: Literal["processing", "failed"],
        error: str | None = None,
    ) -> None:
        change = StatusChange(
            collection=doc.collection,
            doc_id=doc.doc_id,
            filename=doc.filename,
            version=version,
            status=status,
            error=error[:MAX_ERROR_CHARS] if error else None,
        )
        # "processing" may arrive late or not at all (the "indexed" that follows overrides it);
        # "failed" must be recorded before the message is let go, or the document would wait
        # for ever.
        await self.statuses.record(doc.tenant, change, wait=status == "failed")


class Statuses:
    """Status changes published together, one message per tenant for whatever changed within
    ``delay_s``: a status message per document cost the bus and H.A.D.E.S. as much as the
    document's chunks did (bench/ingest.py)."""

    def __init__(self, publish: Publisher, delay_s: float = 0.25) -> None:
        self.publish = publish
        self.delay_s = delay_s
        self._waiting: dict[str, list[tuple[StatusChange, asyncio.Future[None]]]] = {}
        self._flushing: asyncio.Task[None] | None = None

    async def record(self, tenant: str, change: StatusChange, *, wait: bool) -> None:
        """Publish ``change`` with the others soon; with ``wait``, return once it is published
        (raising what the publish raised)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(tenant, []).append((change, future))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush_soon())
        if wait:
            await future
        else:
            future.add_done_callback(_log_failure)

    async def close(self) -> None:
        """Publish what waits, now (the worker is stopping)."""
        if self._flushing is not None:
            self._flushing.cancel()
            self._flushing = None
        await self._flush()

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.delay_s)
        self._flushing = None
        await self._flush()

    async def _flush(self) -> None:
        waiting, self._waiting = self._waiting, {}
        for tenant, items in waiting.items():
            for start in range(0, len(items), MAX_STATUS_CHANGES):
                part = items[start : start + MAX_STATUS_CHANGES]
                changes = [change for change, _ in part]
                try:
                    await self.publish(
                        subjects.INDEX_STATUS,
                        IndexStatus(tenant=tenant, changes=changes),
                        msg_id=status_msg_id([(c.doc_id, c.status, c.version) for c in changes]),
                    )
                except Exception as exc:
                    for _, future in part:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for _, future in part:
                    if not future.done():
                        future.set_result(None)


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("a status change was not published", error=str(future.exception()))


EMBEDDINGS_IN_SPAN = 8  # texts shown per EMBEDDING span; the count and every id always are


def _describe_embedding(
    span: Any, model: str, ids: list[str], texts: list[str], vectors: Any
) -> None:
    if not span.is_recording():  # tracing off or not sampled: build nothing
        return
    attributes: dict[str, Any] = {
        "embedding.model_name": model,
        "olympus.embedding.dims": int(vectors.shape[1]) if len(vectors) else 0,
        "olympus.embedding.count": len(texts),
        "olympus.embedding.ids": ids,
    }
    with_vectors = telemetry.settings().embedding_vectors
    for i, text in enumerate(texts[:EMBEDDINGS_IN_SPAN]):
        attributes[f"embedding.embeddings.{i}.embedding.text"] = telemetry.cut(text)
        if with_vectors:
            attributes[f"embedding.embeddings.{i}.embedding.vector"] = vectors[i].tolist()
    telemetry.set_attributes(span, attributes)


def _decode_content(doc: IngestDocument) -> bytes:
    if doc.encoding == "utf-8":
        return doc.content.encode("utf-8")
    try:
        return base64.b64decode(doc.content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ExtractionError(f"content is not valid base64: {exc}") from exc


class QueryHandler:
    def __init__(
        self, batcher: EmbeddingBatcher, model_name: str, tokenizer: Any, model_identity: str = ""
    ) -> None:
        self.batcher = batcher
        self.model_name = model_name
        self.model_identity = model_identity or model_name
        self.tokenizer = tokenizer
        self.next: Model | None = None  # the model a live reindex embeds with besides

    def use(self, current: Model, following: Model | None) -> None:
        """As ``IngestHandler.use``."""
        self.batcher, self.tokenizer = current.batcher, current.encoder.tokenizer
        self.next = following
        self.model_name, self.model_identity = current.encoder.name, current.identity

    async def embed(self, request: EmbedRequest) -> EmbedReply:
        """Texts embedded as documents are (``/v1/embeddings``); with ``request.model``, by
        that model: the embedder's own, or the one a live reindex moves it to."""
        batcher, tokenizer = self.batcher, self.tokenizer
        name, identity = self.model_name, self.model_identity
        if request.model and not _names(request.model, identity):
            if self.next is None or not _names(request.model, self.next.identity):
                message = f"this embedder does not run {request.model}"
                return EmbedReply(error=ErrorInfo(code="unavailable", message=message))
            batcher, tokenizer = self.next.batcher, self.next.encoder.tokenizer
            name, identity = self.next.encoder.name, self.next.identity
        vectors = await batcher.embed(request.inputs, lane="bulk")
        counted = await asyncio.to_thread(tokenizer, request.inputs)  # off the event loop
        tokens = sum(len(ids) for ids in counted["input_ids"])
        return EmbedReply(model=name, identity=identity, vectors=vectors.tolist(), tokens=tokens)

    async def handle(self, query: QueryEmbed) -> QueryRetrieve | RetrieveReply | None:
        """The query with its vector to pass on; an error answer; None if nobody waits."""
        if query.deadline < time.time():
            log.info("dropped expired query", request_id=query.request_id)
            return None
        structlog.contextvars.bind_contextvars(
            request_id=query.request_id, session_id=query.session_id
        )
        batcher, name, identity, following = (
            self.batcher, self.model_name, self.model_identity, self.next
        )  # fmt: skip
        if query.mode in subjects.VECTORLESS_MODES:
            return QueryRetrieve(**query.model_dump())
        try:
            with telemetry.span("olympus.embed_query", "EMBEDDING") as span:
                if following is None:
                    vectors, beside = await batcher.embed([query.input], lane="query"), None
                else:  # the index may switch to it while this question is on its way
                    vectors, beside = await asyncio.gather(
                        batcher.embed([query.input], lane="query"),
                        following.batcher.embed([query.input], lane="query"),
                    )
                _describe_embedding(span, name, [query.request_id], [query.input], vectors)
        except Exception as exc:
            log.exception("query embedding failed", request_id=query.request_id)
            return RetrieveReply(error=ErrorInfo(code="internal", message=str(exc)))
        return QueryRetrieve(
            **query.model_dump(),
            vector=vectors[0].tolist(),
            model=identity,
            next_vector=beside[0].tolist() if beside is not None else None,
            next_model=following.identity if following is not None else "",
        )


def _names(asked: str, identity: str) -> bool:
    """``asked`` is ``identity``: the same weights (``name@fingerprint``), or the same name."""
    fingerprint = model_fingerprint(asked)
    return fingerprint == model_fingerprint(identity) if fingerprint else asked == identity
