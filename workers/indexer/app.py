"""Wiring only: the indexer's broker, subscribers and publishers. The work is in handlers.py."""

from __future__ import annotations

from faststream import FastStream

from olympus import bus as olympus_bus
from olympus import metrics
from olympus.logging import configure, get_logger
from olympus.settings import CommonSettings
from schemas import bus
from schemas.messages import (
    Accepted,
    ContextAdd,
    ContextClear,
    ContextGet,
    ContextReply,
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
    HealthPing,
    HealthReply,
    HistoryGet,
    HistoryReply,
    IndexDelete,
    IndexStatus,
    IndexTurn,
    IndexUpsert,
    QueryGenerate,
    QueryRetrieve,
    RetrieveReply,
)
from workers.indexer.handlers import Indexer
from workers.indexer.settings import IndexerSettings

common = CommonSettings()
settings = IndexerSettings()
policy = olympus_bus.DeliveryPolicy.from_settings(common)
broker = olympus_bus.worker_broker(common, policy)
app = FastStream(broker)
log = get_logger("olympus.indexer")
indexer: Indexer | None = None
events = broker.publisher(bus.EVENTS_ALL, schema=DocumentEvent, title=bus.EVENTS_ALL)
broker.publisher(bus.QUERY_GENERATE, schema=QueryGenerate, title=bus.QUERY_GENERATE)


async def emit(event: DocumentEvent) -> None:
    await broker.publish(event, bus.event_subject(event.status), stream=bus.EVENTS_STREAM.name)


def open_stores(common: CommonSettings, settings: IndexerSettings) -> tuple[object, object]:
    """The only place the stores are opened: H.A.D.E.S. holds the credentials."""
    from hades.milvus import MilvusVectorIndex

    vectors = MilvusVectorIndex(
        settings.milvus_uri or str(common.data_dir / "milvus.db"),
        settings.dims,
        collection=settings.milvus_collection,
        token=settings.milvus_token.get_secret_value() if settings.milvus_token else None,
        hybrid_candidates=settings.hybrid_candidates,
    )
    if settings.graph_backend == "arango":
        from hades.arango import ArangoDocumentGraph

        if common.environment == "production" and not settings.arango_password:
            raise ValueError("OLYMPUS_INDEXER_ARANGO_PASSWORD must be set in production")
        graph: object = ArangoDocumentGraph(
            settings.arango_url,
            settings.arango_database,
            settings.arango_user,
            settings.arango_password.get_secret_value() if settings.arango_password else "",
        )
    else:
        from hades.sqlite import SqliteDocumentGraph

        graph = SqliteDocumentGraph(settings.sqlite_path or common.data_dir / "graph.sqlite3")
    return vectors, graph


@app.on_startup
async def start() -> None:
    global indexer
    configure(bus.INDEXER, common.log_level, common.log_format)
    metrics.serve(common.metrics_port, common.metrics_host)
    await olympus_bus.prepare_streams(common)
    vectors, graph = open_stores(common, settings)
    indexer = Indexer(
        vectors,  # type: ignore[arg-type]
        graph,  # type: ignore[arg-type]
        emit,
        write_batch=settings.write_batch,
        flush_idle_s=settings.flush_idle_s,
        history_turns=settings.history_turns,
    )
    indexer.start()
    log.info("indexer ready", graph=settings.graph_backend, dims=settings.dims)


@app.after_shutdown
async def stop() -> None:
    if indexer is not None:
        await indexer.stop()


def _indexer() -> Indexer:
    if indexer is None:
        raise RuntimeError("the indexer has not started")
    return indexer


@broker.subscriber(
    bus.INDEX_UPSERT,
    **policy.durable(bus.INDEX_STREAM, bus.DURABLE_INDEXER_UPSERT, settings.concurrency),
)
async def on_upsert(body: IndexUpsert) -> None:
    await _indexer().upsert(body)


@broker.subscriber(
    bus.INDEX_DELETE,
    **policy.durable(bus.INDEX_STREAM, bus.DURABLE_INDEXER_DELETE, settings.concurrency),
)
async def on_delete(body: IndexDelete) -> None:
    await _indexer().delete(body)


@broker.subscriber(
    bus.INDEX_STATUS,
    **policy.durable(bus.INDEX_STREAM, bus.DURABLE_INDEXER_STATUS, settings.concurrency),
)
async def on_status(body: IndexStatus) -> None:
    await _indexer().status(body)


@broker.subscriber(
    bus.INDEX_TURN,
    **policy.durable(bus.INDEX_STREAM, bus.DURABLE_INDEXER_TURN, settings.concurrency),
)
async def on_turn(body: IndexTurn) -> None:
    await _indexer().add_turn(body)


@broker.subscriber(bus.QUERY_RETRIEVE, queue=bus.INDEXER, max_workers=settings.concurrency)
async def on_retrieve(body: QueryRetrieve) -> RetrieveReply | Accepted | None:
    if body.chat is None:
        return await _indexer().retrieve(body)
    outcome = await _indexer().for_generation(body)
    if isinstance(outcome, QueryGenerate):
        return await olympus_bus.hand_on(broker, bus.QUERY_GENERATE, outcome)
    if outcome is None:
        return Accepted(error=ErrorInfo(code="expired", message="the request expired"))
    return Accepted(error=outcome.error)


@broker.subscriber(bus.RPC_HISTORY_GET, queue=bus.INDEXER)
async def on_history(body: HistoryGet) -> HistoryReply:
    return await _indexer().history(body)


@broker.subscriber(bus.RPC_DOCUMENT_GET, queue=bus.INDEXER)
async def on_document_get(body: DocumentGet) -> DocumentReply:
    return await _indexer().get_document(body)


@broker.subscriber(bus.RPC_DOCUMENT_CHUNKS, queue=bus.INDEXER)
async def on_document_chunks(body: DocumentChunksGet) -> DocumentChunks:
    return await _indexer().document_chunks(body)


@broker.subscriber(bus.RPC_DOCUMENT_LIST, queue=bus.INDEXER)
async def on_document_list(body: DocumentList) -> DocumentPage:
    return await _indexer().list_documents(body)


@broker.subscriber(bus.RPC_DOCUMENT_STATS, queue=bus.INDEXER)
async def on_document_stats(body: DocumentStats) -> DocumentStatsReply:
    return await _indexer().stats(body)


@broker.subscriber(bus.RPC_CONTEXT_ADD, queue=bus.INDEXER)
async def on_context_add(body: ContextAdd) -> ContextReply:
    return await _indexer().add_context(body)


@broker.subscriber(bus.RPC_CONTEXT_GET, queue=bus.INDEXER)
async def on_context_get(body: ContextGet) -> ContextReply:
    return await _indexer().get_context(body)


@broker.subscriber(bus.RPC_CONTEXT_CLEAR, queue=bus.INDEXER)
async def on_context_clear(body: ContextClear) -> ContextReply:
    return await _indexer().clear_context(body)


@broker.subscriber(bus.health_subject(bus.INDEXER))
async def on_health(body: HealthPing) -> HealthReply:
    return HealthReply(service=bus.INDEXER, ok=indexer is not None)
