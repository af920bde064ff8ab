"""Wiring only: the generator's subscribers and publishers. The work is in handlers.py."""

from __future__ import annotations

from faststream import FastStream
from faststream.nats import NatsMessage, NatsRouter

from olympus.settings import CommonSettings
from olympus.worker import Worker
from schemas import ids, subjects
from schemas.messages import Accepted, ChatControl, ChatEvent, IndexTurn, QueryGenerate
from workers.generator.handlers import ChatHandler
from workers.generator.settings import GeneratorSettings


def create_app(
    common: CommonSettings | None = None, settings: GeneratorSettings | None = None
) -> FastStream:
    common = common or CommonSettings()
    settings = settings or GeneratorSettings()

    async def start(worker: Worker[ChatHandler]) -> ChatHandler:
        # Heavy imports in here: building the app (for AsyncAPI, a wiring test) loads no model.
        from workers.generator import backend
        from workers.generator import prompt as prompting
        from workers.generator.handlers import Defaults

        async def send_event(event: ChatEvent) -> None:
            # Core publish on the raw connection: the OLYMPUS_REPLY stream captures it without a
            # round trip per token, and no span is made per token (the LLM span covers them).
            await worker.broker.connection.publish(
                subjects.reply_subject(event.request_id), event.model_dump_json().encode()
            )

        async def keep_turn(turn: IndexTurn) -> None:
            await worker.broker.publish(
                turn,
                subjects.INDEX_TURN,
                headers={subjects.HEADER_MSG_ID: ids.turn_msg_id(turn.turn.request_id)},
                stream=subjects.INDEX_STREAM.name,
            )

        engine = backend.create(settings, common)
        await engine.open()
        packaged = settings.backend != "openai" and not settings.model
        style = prompting.style_for(settings.prompt_passages, packaged)
        worker.log.info(
            "generator ready",
            backend=settings.backend,
            model=engine.model,
            context_tokens=engine.context_tokens,
            prompt_passages=style.passages or "as many as fit",
            **engine.describe(),
        )
        return ChatHandler(
            engine,
            Defaults(
                max_new_tokens=settings.max_new_tokens,
                temperature=settings.temperature,
                top_p=settings.top_p,
                context_tokens=engine.context_tokens,
                cancel_grace_s=settings.cancel_grace_s,
                style=style,
            ),
            send_event,
            keep_turn,
        )

    async def stop(handler: ChatHandler) -> None:
        await handler.stop()
        await handler.engine.close()

    worker = Worker(subjects.GENERATOR, common, start, stop)
    worker.broker.include_router(router(worker))
    return worker.app()


def router(worker: Worker[ChatHandler]) -> NatsRouter:
    r = NatsRouter()

    @r.subscriber(subjects.QUERY_GENERATE, queue=subjects.GENERATOR, max_workers=64)
    async def on_generate(body: QueryGenerate) -> Accepted:
        return await worker.runtime.accept(body)

    # No queue group: every generator hears every control. No automatic reply either: to a
    # probe only the generator holding the answer replies, so the others must stay silent.
    @r.subscriber(subjects.QUERY_CONTROL, no_reply=True)
    async def on_control(body: ChatControl, msg: NatsMessage) -> None:
        if worker.runtime.control(body) and msg.reply_to:
            await msg.raw_message.respond(b"")

    # What the generator publishes, declared for the AsyncAPI document.
    r.publisher(subjects.REPLY_ALL, schema=ChatEvent, title="olympus.reply.<request_id>")
    r.publisher(subjects.INDEX_TURN, schema=IndexTurn, title=subjects.INDEX_TURN)
    return r
