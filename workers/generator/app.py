"""Wiring only: the generator's broker, subscribers and publishers. The work is in handlers.py."""

from __future__ import annotations

from faststream import FastStream
from faststream.nats import NatsMessage

from olympus import bus as olympus_bus
from olympus import metrics
from olympus.logging import configure, get_logger
from olympus.settings import CommonSettings
from schemas import bus
from schemas.messages import (
    Accepted,
    ChatControl,
    ChatEvent,
    HealthPing,
    HealthReply,
    IndexTurn,
    QueryGenerate,
)
from workers.generator.handlers import ChatHandler
from workers.generator.settings import GeneratorSettings

common = CommonSettings()
settings = GeneratorSettings()
policy = olympus_bus.DeliveryPolicy.from_settings(common)
broker = olympus_bus.worker_broker(common, policy)
app = FastStream(broker)
log = get_logger("olympus.generator")
handler: ChatHandler | None = None


async def send_event(event: ChatEvent) -> None:
    # Core publish on the raw connection: the OLYMPUS_REPLY stream captures it without a round
    # trip per token, and no span is made per token (the LLM span covers them all).
    await broker.connection.publish(
        bus.reply_subject(event.request_id), event.model_dump_json().encode()
    )


async def keep_turn(turn: IndexTurn) -> None:
    await broker.publish(
        turn,
        bus.INDEX_TURN,
        headers={bus.HEADER_MSG_ID: f"turn:{turn.turn.request_id}"},
        stream=bus.INDEX_STREAM.name,
    )


@app.on_startup
async def start() -> None:
    global handler
    configure(bus.GENERATOR, common.log_level, common.log_format)
    metrics.serve(common.metrics_port, common.metrics_host)
    # Heavy imports here, not at module level: the gateway imports this module for AsyncAPI.
    from workers.generator.engine import Engine
    from workers.generator.handlers import Defaults
    from workers.generator.model import load

    await olympus_bus.prepare_streams(common)
    model, tokenizer, device, name = load(
        settings.model,
        settings.models_dir or common.data_dir / "models",
        device=settings.device,
        dtype=settings.dtype,
        quantization=settings.quantization,
        threads=settings.threads,
    )
    window = getattr(model.config, "max_position_embeddings", settings.context_tokens)
    engine = Engine(model, tokenizer, device, settings.max_batch)
    engine.start()
    handler = ChatHandler(
        engine,
        Defaults(
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            context_tokens=min(settings.context_tokens, window),
            cancel_grace_s=settings.cancel_grace_s,
        ),
        send_event,
        keep_turn,
        name,
    )
    log.info(
        "generator ready",
        model=name,
        device=device,
        dtype=str(model.dtype),
        context_tokens=min(settings.context_tokens, window),
        max_batch=settings.max_batch,
    )


@app.after_shutdown
async def stop() -> None:
    if handler is not None:
        await handler.stop()
        handler.engine.stop()


def _handler() -> ChatHandler:
    if handler is None:
        raise RuntimeError("the generator has not started")
    return handler


@broker.subscriber(bus.QUERY_GENERATE, queue=bus.GENERATOR, max_workers=64)
async def on_generate(body: QueryGenerate) -> Accepted:
    return await _handler().accept(body)


# No queue group: every generator hears every control. No automatic reply either: to a probe
# only the generator holding the answer replies, so the others must stay silent.
@broker.subscriber(bus.QUERY_CONTROL, no_reply=True)
async def on_control(body: ChatControl, msg: NatsMessage) -> None:
    if _handler().control(body) and msg.reply_to:
        await msg.raw_message.respond(b"")


@broker.subscriber(bus.health_subject(bus.GENERATOR))
async def on_health(body: HealthPing) -> HealthReply:
    return HealthReply(service=bus.GENERATOR, ok=handler is not None)


# What the generator publishes, declared for the AsyncAPI document.
broker.publisher(bus.REPLY_ALL, schema=ChatEvent, title="olympus.reply.<request_id>")
broker.publisher(bus.INDEX_TURN, schema=IndexTurn, title=bus.INDEX_TURN)
