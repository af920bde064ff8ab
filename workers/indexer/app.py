"""Wiring only: the indexer's subscribers and publishers. The work is in handlers.py."""

from __future__ import annotations

from collections.abc import Callable

from faststream import FastStream
from faststream.nats import NatsRouter
from faststream.nats.annotations import JsClient
from threadpoolctl import threadpool_limits

from hades import DocumentGraph, VectorIndex
from olympus import delivery
from olympus.settings import CommonSettings
from olympus.worker import Worker
from schemas import subjects
from schemas.messages import (
    Accepted,
    ContextAdd,
    ContextClear,
    ContextGet,
    ContextReply,
    DeadLetter,
    DocumentChunks,
    DocumentChunksGet,
    DocumentEvent,
    DocumentGet,
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
    QueryGenerate,
    QueryRetrieve,
    ReindexBegin,
    ReindexCancel,
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
    RetrieveReply,
)
from workers.indexer.handlers import Indexer
from workers.indexer.settings import IndexerSettings
from workers.indexer.stores import open_stores


def create_app(
    common: CommonSettings | None = None,
    settings: IndexerSettings | None = None,
    stores: Callable[[], tuple[VectorIndex, DocumentGraph]] | None = None,
) -> FastStream:
    """The indexer; ``stores`` opens other stores than the settings name (a test's)."""
    common = common or CommonSettings()
    settings = settings or IndexerSettings()

    async def start(worker: Worker[Indexer]) -> Indexer:
        async def emit(event: DocumentEvent) -> None:
            await worker.broker.publish(
                event,
                subjects.event_subject(event.status),
                stream=subjects.EVENTS_STREAM.name,
            )

        # One BLAS thread. The exact search's products are small, and OpenBLAS' other threads
        # spin after each, taking a core from the embedder, the gateway and NATS for nothing:
        # on 2 cores a dense search used 10.6 ms of CPU for 5.8 ms, 6.1 for 5.9 with one thread.
        threadpool_limits(1, user_api="blas")
        vectors, graph = stores() if stores else open_stores(common, settings)
        indexer = Indexer(
            vectors,
            graph,
            emit,
            write_batch=settings.write_batch,
            flush_idle_s=settings.flush_idle_s,
            flush_rows=settings.flush_rows,
            history_turns=settings.history_turns,
            similar_documents=settings.similar_documents,
            graph_weight=settings.graph_weight,
        )
        indexer.start()
        worker.log.info("indexer ready", graph=settings.graph_backend, dims=settings.dims)
        return indexer

    async def stop(indexer: Indexer) -> None:
        await indexer.stop()

    worker = Worker(subjects.INDEXER, common, start, stop)
    worker.broker.include_router(router(worker, settings.concurrency))
    return worker.app()


def router(worker: Worker[Indexer], concurrency: int) -> NatsRouter:
    policy = worker.policy
    r = NatsRouter()
    r.publisher(subjects.EVENTS_ALL, schema=DocumentEvent, title=subjects.EVENTS_ALL)
    r.publisher(subjects.QUERY_GENERATE, schema=QueryGenerate, title=subjects.QUERY_GENERATE)

    @r.subscriber(
        subjects.INDEX_UPSERT,
        **policy.durable(subjects.INDEX_STREAM, subjects.DURABLE_INDEXER_UPSERT, concurrency),
    )
    async def on_upsert(body: IndexUpsert) -> None:
        await worker.runtime.upsert(body)

    @r.subscriber(
        subjects.INDEX_DELETE,
        **policy.durable(subjects.INDEX_STREAM, subjects.DURABLE_INDEXER_DELETE, concurrency),
    )
    async def on_delete(body: IndexDelete, js: JsClient) -> None:
        await worker.runtime.delete(body)
        # Its dead letters hold the document's text: they are erased with it.
        await delivery.forget_letters(js, body.tenant, body.doc_id)

    @r.subscriber(
        subjects.INDEX_STATUS,
        **policy.durable(subjects.INDEX_STREAM, subjects.DURABLE_INDEXER_STATUS, concurrency),
    )
    async def on_status(body: IndexStatus) -> None:
        await worker.runtime.status(body)

    @r.subscriber(
        subjects.DLQ_DOCUMENTS,
        **policy.durable(subjects.DLQ_STREAM, subjects.DURABLE_INDEXER_LETTERS, concurrency),
        title=subjects.DLQ_DOCUMENTS,
        description="Dead letters that name a document: the document is marked failed with the "
        "letter's error (the letter stays, for a retry).",
    )
    async def on_dead_letter(body: DeadLetter) -> None:
        await worker.runtime.dead_letter(body)

    @r.subscriber(
        subjects.INDEX_TURN,
        **policy.durable(subjects.INDEX_STREAM, subjects.DURABLE_INDEXER_TURN, concurrency),
    )
    async def on_turn(body: IndexTurn) -> None:
        await worker.runtime.add_turn(body)

    @r.subscriber(subjects.QUERY_RETRIEVE, queue=subjects.INDEXER, max_workers=concurrency)
    async def on_retrieve(body: QueryRetrieve) -> RetrieveReply | Accepted | None:
        if body.chat is None:
            return await worker.runtime.retrieve(body)
        outcome = await worker.runtime.for_generation(body)
        if isinstance(outcome, QueryGenerate):
            return await delivery.hand_on(worker.broker, subjects.QUERY_GENERATE, outcome)
        if outcome is None:
            return Accepted(error=ErrorInfo(code="expired", message="the request expired"))
        return Accepted(error=outcome.error)

    @r.subscriber(subjects.RPC_HISTORY_GET, queue=subjects.INDEXER)
    async def on_history(body: HistoryGet) -> HistoryReply:
        return await worker.runtime.history(body)

    @r.subscriber(subjects.RPC_DOCUMENT_GET, queue=subjects.INDEXER)
    async def on_document_get(body: DocumentGet) -> DocumentReply:
        return await worker.runtime.get_document(body)

    @r.subscriber(subjects.RPC_DOCUMENT_CHUNKS, queue=subjects.INDEXER)
    async def on_document_chunks(body: DocumentChunksGet) -> DocumentChunks:
        return await worker.runtime.document_chunks(body)

    @r.subscriber(subjects.RPC_DOCUMENT_LIST, queue=subjects.INDEXER)
    async def on_document_list(body: DocumentList) -> DocumentPage:
        return await worker.runtime.list_documents(body)

    @r.subscriber(subjects.RPC_DOCUMENT_STATS, queue=subjects.INDEXER)
    async def on_document_stats(body: DocumentStats) -> DocumentStatsReply:
        return await worker.runtime.stats(body)

    @r.subscriber(subjects.RPC_CONTEXT_ADD, queue=subjects.INDEXER)
    async def on_context_add(body: ContextAdd) -> ContextReply:
        return await worker.runtime.add_context(body)

    @r.subscriber(subjects.RPC_CONTEXT_GET, queue=subjects.INDEXER)
    async def on_context_get(body: ContextGet) -> ContextReply:
        return await worker.runtime.get_context(body)

    @r.subscriber(subjects.RPC_CONTEXT_CLEAR, queue=subjects.INDEXER)
    async def on_context_clear(body: ContextClear) -> ContextReply:
        return await worker.runtime.clear_context(body)

    @r.subscriber(subjects.RPC_RELATION_PUT, queue=subjects.INDEXER)
    async def on_relation_put(body: RelationPut) -> RelationReply:
        return await worker.runtime.put_relation(body)

    @r.subscriber(subjects.RPC_RELATION_DELETE, queue=subjects.INDEXER)
    async def on_relation_delete(body: RelationDelete) -> RelationReply:
        return await worker.runtime.delete_relation(body)

    @r.subscriber(subjects.RPC_RELATION_LIST, queue=subjects.INDEXER)
    async def on_relation_list(body: RelationList) -> RelationPage:
        return await worker.runtime.list_relations(body)

    @r.subscriber(subjects.RPC_RELATION_GRAPH, queue=subjects.INDEXER)
    async def on_relation_graph(body: GraphGet) -> GraphReply:
        return await worker.runtime.graph_around(body)

    @r.subscriber(subjects.RPC_RELATION_RELATED, queue=subjects.INDEXER)
    async def on_relation_related(body: RelatedGet) -> RelatedReply:
        return await worker.runtime.related(body)

    # A live olympus reindex: the admin's subjects, not the gateway's (schemas.subjects).
    @r.subscriber(subjects.REINDEX_BEGIN, queue=subjects.INDEXER)
    async def on_reindex_begin(body: ReindexBegin) -> ReindexReply:
        return await worker.runtime.reindex_begin(body)

    @r.subscriber(subjects.REINDEX_PAGE, queue=subjects.INDEXER)
    async def on_reindex_page(body: ReindexPage) -> ReindexPageReply:
        return await worker.runtime.reindex_page(body)

    @r.subscriber(subjects.REINDEX_WRITE, queue=subjects.INDEXER)
    async def on_reindex_write(body: ReindexWrite) -> ReindexReply:
        return await worker.runtime.reindex_write(body)

    @r.subscriber(subjects.REINDEX_SWITCH, queue=subjects.INDEXER)
    async def on_reindex_switch(body: ReindexSwitch) -> ReindexReply:
        return await worker.runtime.reindex_switch(body)

    @r.subscriber(subjects.REINDEX_DROP_OLD, queue=subjects.INDEXER)
    async def on_reindex_drop_old(body: ReindexDropOld) -> ReindexReply:
        return await worker.runtime.reindex_drop_old(body)

    @r.subscriber(subjects.REINDEX_CANCEL, queue=subjects.INDEXER)
    async def on_reindex_cancel(body: ReindexCancel) -> ReindexReply:
        return await worker.runtime.reindex_cancel(body)

    return r
