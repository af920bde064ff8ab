"""Wiring only: the embedder's subscribers and publishers. The work is in handlers.py."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from faststream import FastStream
from faststream.nats import NatsMessage, NatsRouter

from olympus import delivery
from olympus.settings import CommonSettings
from olympus.worker import Worker
from schemas import subjects
from schemas.messages import (
    EmbedReply,
    EmbedRequest,
    IndexDelete,
    IndexStatus,
    IndexUpsert,
    IngestDocument,
    Message,
    QueryEmbed,
    QueryRetrieve,
)
from workers.embedder.handlers import IngestHandler, QueryHandler
from workers.embedder.models import POLL_S, Model, Models, MoveReader
from workers.embedder.settings import EmbedderSettings


@dataclass
class Runtime:
    ingest: IngestHandler
    query: QueryHandler
    models: Models
    watch: asyncio.Task[None] | None = None

    def use(self) -> None:
        """Hand the handlers the models to embed with (``workers.embedder.models``)."""
        self.ingest.use(self.models.current, self.models.next)
        self.query.use(self.models.current, self.models.next)


def create_app(
    common: CommonSettings | None = None, settings: EmbedderSettings | None = None
) -> FastStream:
    common = common or CommonSettings()
    settings = settings or EmbedderSettings()

    async def start(worker: Worker[Runtime]) -> Runtime:
        # Heavy imports here: building the app (for AsyncAPI, or a wiring test) loads no model.
        from workers.embedder.batching import EmbeddingBatcher
        from workers.embedder.chunking import Chunker
        from workers.embedder.encoder import (
            Encoder,
            default_model_path,
            fingerprint,
            pick_device,
            pick_lanes,
        )
        from workers.embedder.extract import Reader, ReadLimits

        async def publish(subject: str, message: Message, msg_id: str | None = None) -> None:
            headers = {subjects.HEADER_MSG_ID: msg_id} if msg_id else None
            await worker.broker.publish(
                message, subject, headers=headers, stream=subjects.INDEX_STREAM.name
            )

        device = pick_device(settings.device)
        lanes, threads = pick_lanes(settings.lanes, device, settings.threads)

        async def load(path: str) -> Model:
            encoder = await asyncio.to_thread(
                Encoder,
                path,
                device=device,
                dtype=settings.dtype,
                batch_size=settings.batch_size,
                threads=threads,
            )
            chunker = Chunker(
                encoder.tokenizer,
                settings.chunk_tokens or encoder.max_length,
                settings.chunk_overlap,
            )
            batcher = EmbeddingBatcher(
                encoder.tokenize, encoder.embed_tokens, encoder.dims, encoder.batch_size,
                lanes=lanes,
            )  # fmt: skip
            batcher.start()
            worker.log.info(
                "model loaded",
                model=encoder.identity,
                device=encoder.device,
                dtype=str(encoder.dtype),
                lanes=lanes,
                threads_per_lane=threads,
                dims=encoder.dims,
                chunk_tokens=chunker.capacity + 2,
            )
            return Model(encoder, batcher, chunker)

        own = settings.model or default_model_path()
        models = Models(own, fingerprint(own), load)
        # Before the first message: an embedder started after olympus reindex switched the
        # index embeds with the new model from its first chunk.
        watcher = await delivery.connect(common, "model-move")
        read_move = MoveReader(watcher.jetstream())
        await models.follow(await read_move())
        current = models.current
        limits = ReadLimits(
            memory_bytes=settings.read_memory_mb << 20,
            timeout_s=settings.read_timeout_s,
            inflated_bytes=settings.max_inflated_mb << 20,
        )
        encoder = current.encoder
        runtime = Runtime(
            ingest=IngestHandler(
                current.chunker,
                current.batcher,
                publish,
                encoder.name,
                settings.max_chunks_per_document,
                Reader(limits, settings.readers),
                max_links=settings.max_links_per_document,
                model_identity=encoder.identity,
            ),
            query=QueryHandler(current.batcher, encoder.name, encoder.tokenizer, encoder.identity),
            models=models,
        )
        runtime.use()

        async def watch() -> None:
            try:
                while True:
                    await asyncio.sleep(POLL_S)
                    try:
                        if await models.follow(await read_move()):
                            runtime.use()
                    except Exception as exc:  # the bus is away for a moment: read it again
                        worker.log.warning("cannot read the model move", error=str(exc))
            finally:
                await watcher.close()

        runtime.watch = asyncio.create_task(watch(), name="model-move")
        return runtime

    async def stop(runtime: Runtime) -> None:
        if runtime.watch is not None:
            runtime.watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runtime.watch
        await runtime.ingest.statuses.close()
        runtime.ingest.reader.close()

    def running(runtime: Runtime) -> list[str]:
        following = runtime.models.next
        return [runtime.models.current.identity, *([following.identity] if following else [])]

    worker = Worker(subjects.EMBEDDER, common, start, stop, models=running)
    worker.broker.include_router(router(worker, settings))
    return worker.app()


def check_owner(subject: str, body: IngestDocument) -> None:
    """A document is its subject's tenant's: one whose body says otherwise is dead-lettered."""
    owner = subjects.ingest_owner(subject)
    if owner != (body.tenant, body.collection):
        expected = subjects.ingest_subject(body.tenant, body.collection)
        raise delivery.PermanentError(
            f"published on {subject}, but the message is for tenant {body.tenant!r}, "
            f"collection {body.collection!r}: publish it on {expected}"
        )


def router(worker: Worker[Runtime], settings: EmbedderSettings) -> NatsRouter:
    policy = worker.policy
    r = NatsRouter()

    @r.subscriber(
        subjects.INGEST_ALL,
        **policy.durable(
            subjects.INGEST_STREAM, subjects.DURABLE_EMBEDDER_INGEST, settings.concurrency, fetch=16
        ),
        title="olympus.ingest.<tenant>.<collection>",
        description="Documents to parse, chunk and embed, upserts and deletes. The subject's "
        "tenant and collection must be the message's: a producer's credential may publish only "
        "its own tenant's subjects, so the subject, not the body, says whose document it is.",
    )
    async def on_ingest(body: IngestDocument, message: NatsMessage) -> None:
        check_owner(message.raw_message.subject, body)
        await worker.runtime.ingest.handle(
            body, version=message.raw_message.metadata.sequence.stream
        )

    @r.subscriber(
        subjects.QUERY_EMBED,
        queue=subjects.EMBEDDER,
        no_reply=True,
        max_workers=settings.concurrency,
    )
    async def on_query(body: QueryEmbed, message: NatsMessage) -> None:
        if not message.reply_to:
            return
        outcome = await worker.runtime.query.handle(body)
        if isinstance(outcome, QueryRetrieve) and body.chat is None:
            # H.A.D.E.S. answers the gateway directly: one hop fewer on the way back.
            await worker.broker.publish(outcome, subjects.QUERY_RETRIEVE, reply_to=message.reply_to)
        elif isinstance(outcome, QueryRetrieve):
            # A chat: the answer streams elsewhere; the caller learns whether it was handed on.
            accepted = await delivery.hand_on(worker.broker, subjects.QUERY_RETRIEVE, outcome)
            await worker.broker.publish(accepted, message.reply_to)
        elif outcome is not None:  # an error answer goes straight back to whoever asked
            await worker.broker.publish(outcome, message.reply_to)

    @r.subscriber(subjects.RPC_EMBED, queue=subjects.EMBEDDER, max_workers=settings.concurrency)
    async def on_embed(body: EmbedRequest) -> EmbedReply:
        return await worker.runtime.query.embed(body)

    # What the embedder publishes, declared for the AsyncAPI document.
    r.publisher(subjects.INDEX_UPSERT, schema=IndexUpsert, title=subjects.INDEX_UPSERT)
    r.publisher(subjects.INDEX_DELETE, schema=IndexDelete, title=subjects.INDEX_DELETE)
    r.publisher(subjects.INDEX_STATUS, schema=IndexStatus, title=subjects.INDEX_STATUS)
    r.publisher(subjects.QUERY_RETRIEVE, schema=QueryRetrieve, title=subjects.QUERY_RETRIEVE)
    return r
