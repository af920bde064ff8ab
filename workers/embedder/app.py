"""Wiring only: the embedder's broker, subscribers and publishers. The work is in handlers.py."""

from __future__ import annotations

from dataclasses import dataclass

from faststream import FastStream
from faststream.nats import NatsMessage

from olympus import bus as olympus_bus
from olympus import metrics
from olympus.logging import configure, get_logger
from olympus.settings import CommonSettings
from schemas import bus
from schemas.messages import (
    EmbedReply,
    EmbedRequest,
    HealthPing,
    HealthReply,
    IndexDelete,
    IndexStatus,
    IndexUpsert,
    IngestDocument,
    Message,
    QueryEmbed,
    QueryRetrieve,
)
from workers.embedder.handlers import IngestHandler, QueryHandler
from workers.embedder.settings import EmbedderSettings

common = CommonSettings()
settings = EmbedderSettings()
policy = olympus_bus.DeliveryPolicy.from_settings(common)
broker = olympus_bus.worker_broker(common, policy)
app = FastStream(broker)
log = get_logger("olympus.embedder")


@dataclass
class Runtime:
    ingest: IngestHandler
    query: QueryHandler


runtime: Runtime | None = None


async def publish(subject: str, message: Message, msg_id: str | None = None) -> None:
    headers = {bus.HEADER_MSG_ID: msg_id} if msg_id else None
    await broker.publish(message, subject, headers=headers, stream=bus.INDEX_STREAM.name)


@app.on_startup
async def start() -> None:
    global runtime
    configure(bus.EMBEDDER, common.log_level, common.log_format)
    metrics.serve(common.metrics_port, common.metrics_host)
    # Heavy imports here, not at module level: the gateway imports this module for AsyncAPI.
    from workers.embedder.batching import EmbeddingBatcher
    from workers.embedder.chunking import Chunker
    from workers.embedder.model import Encoder

    await olympus_bus.prepare_streams(common)
    encoder = Encoder(
        settings.model,
        device=settings.device,
        dtype=settings.dtype,
        batch_size=settings.batch_size,
        threads=settings.threads,
    )
    chunker = Chunker(
        encoder.tokenizer, settings.chunk_tokens or encoder.max_length, settings.chunk_overlap
    )
    batcher = EmbeddingBatcher(encoder.embed_batch, encoder.dims, encoder.batch_size)
    batcher.start()
    runtime = Runtime(
        ingest=IngestHandler(
            chunker, batcher, publish, encoder.name, settings.max_chunks_per_document
        ),
        query=QueryHandler(batcher, encoder.name, encoder.tokenizer),
    )
    log.info(
        "embedder ready",
        model=encoder.name,
        device=encoder.device,
        dtype=str(encoder.dtype),
        dims=encoder.dims,
        chunk_tokens=chunker.capacity + 2,
    )


def _runtime() -> Runtime:
    if runtime is None:
        raise RuntimeError("the embedder has not started")
    return runtime


@broker.subscriber(
    bus.INGEST_ALL,
    **policy.durable(
        bus.INGEST_STREAM, bus.DURABLE_EMBEDDER_INGEST, settings.concurrency, fetch=16
    ),
    title="olympus.ingest.<collection>",
    description="Documents to parse, chunk and embed. Upserts and deletes.",
)
async def on_ingest(body: IngestDocument, message: NatsMessage) -> None:
    metadata = message.raw_message.metadata
    await _runtime().ingest.handle(
        body,
        version=metadata.sequence.stream,
        last_try=metadata.num_delivered >= policy.max_deliver,
    )


@broker.subscriber(
    bus.QUERY_EMBED, queue=bus.EMBEDDER, no_reply=True, max_workers=settings.concurrency
)
async def on_query(body: QueryEmbed, message: NatsMessage) -> None:
    if not message.reply_to:
        return
    outcome = await _runtime().query.handle(body)
    if isinstance(outcome, QueryRetrieve) and body.chat is None:
        # H.A.D.E.S. answers the gateway directly: one hop fewer on the way back.
        await broker.publish(outcome, bus.QUERY_RETRIEVE, reply_to=message.reply_to)
    elif isinstance(outcome, QueryRetrieve):
        # A chat: the answer streams elsewhere; the caller learns whether it was handed on.
        accepted = await olympus_bus.hand_on(broker, bus.QUERY_RETRIEVE, outcome)
        await broker.publish(accepted, message.reply_to)
    elif outcome is not None:  # an error answer goes straight back to whoever asked
        await broker.publish(outcome, message.reply_to)


@broker.subscriber(bus.RPC_EMBED, queue=bus.EMBEDDER, max_workers=settings.concurrency)
async def on_embed(body: EmbedRequest) -> EmbedReply:
    return await _runtime().query.embed(body)


@broker.subscriber(bus.health_subject(bus.EMBEDDER))
async def on_health(body: HealthPing) -> HealthReply:
    return HealthReply(service=bus.EMBEDDER, ok=runtime is not None)


# What the embedder publishes, declared for the AsyncAPI document.
broker.publisher(bus.INDEX_UPSERT, schema=IndexUpsert, title=bus.INDEX_UPSERT)
broker.publisher(bus.INDEX_DELETE, schema=IndexDelete, title=bus.INDEX_DELETE)
broker.publisher(bus.INDEX_STATUS, schema=IndexStatus, title=bus.INDEX_STATUS)
broker.publisher(bus.QUERY_RETRIEVE, schema=QueryRetrieve, title=bus.QUERY_RETRIEVE)
