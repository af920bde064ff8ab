"""Chat, shared by every front door (SSE, WebSocket, the OpenAI API): start an answer on the
bus, then follow its events (live on core NATS; from OLYMPUS_REPLY when a client resumes),
telling the generator when the client leaves or comes back."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from gateway.errors import BadRequest, Invalid, NotFound, TooLarge, Unavailable, from_info
from gateway.models import ChatAnswer, ChatRequest
from gateway.nats_client import NatsClient
from gateway.settings import GatewaySettings
from olympus import telemetry
from schemas import subjects
from schemas.messages import (
    CHAT_EXPAND,
    ChatEvent,
    ChatSpec,
    ChatTurn,
    Expand,
    GenerationOptions,
    QueryEmbed,
    QueryGenerate,
    SearchMode,
)

TERMINAL = ("done", "error")


def check_input(text: str, settings: GatewaySettings) -> None:
    """A question or search text: not blank, not over the limit (every route taking one)."""
    if len(text) > settings.max_query_chars:
        raise TooLarge(f"input is longer than the limit of {settings.max_query_chars} characters")
    if not text.strip():
        raise Invalid("input is empty")


def spec_of(body: ChatRequest, remember: bool) -> ChatSpec:
    return ChatSpec(
        options=GenerationOptions(
            max_tokens=body.max_tokens, temperature=body.temperature, top_p=body.top_p
        ),
        remember=remember,
    )


async def start(
    nats_client: NatsClient,
    settings: GatewaySettings,
    tenant: str,
    text: str,
    chat: ChatSpec,
    *,
    session_id: str | None = None,
    retrieval: bool = True,
    top_k: int = 5,
    mode: SearchMode = "hybrid",
    collection: str | None = None,
    doc_ids: list[str] | None = None,
    expand: Expand = CHAT_EXPAND,
    history: list[ChatTurn] | None = None,
) -> str:
    """Hand the question to the pipeline; its request id once the generator has accepted it.

    Raises a domain error (``gateway.errors``) when a stage refuses it or is down.
    """
    check_input(text, settings)
    request_id = uuid.uuid4().hex
    deadline = time.time() + settings.request_timeout_s
    if history:
        chat = chat.model_copy(update={"history": history})
    subject = subjects.first_stage(mode, retrieval)
    message: QueryGenerate | QueryEmbed
    if not retrieval:
        message = QueryGenerate(
            request_id=request_id,
            tenant=tenant,
            session_id=session_id,
            input=text,
            chat=chat,
            retrieval=False,
            deadline=deadline,
        )
    else:
        message = QueryEmbed(
            request_id=request_id,
            tenant=tenant,
            input=text,
            top_k=top_k,
            mode=mode,
            collection=collection,
            doc_ids=doc_ids,
            session_id=session_id,
            expand=expand,
            deadline=deadline,
            chat=chat,
        )
    # One CHAIN span per answer: opened here, ended when its stream ends (``events``). Made
    # current while the request is handed on, so every stage's spans join its trace.
    span = _open_span(request_id, text, session_id, retrieval)
    try:
        with trace.use_span(span, end_on_exit=False):
            accepted = await nats_client.start_chat(subject, message, request_id)
    except BaseException as exc:
        _close_span(request_id, error=str(exc))
        raise
    if accepted.error is not None:
        _close_span(request_id, error=accepted.error.message)
        raise from_info(accepted.error)
    return request_id


async def ask(
    nats_client: NatsClient,
    settings: GatewaySettings,
    tenant: str,
    session_id: str,
    body: ChatRequest,
) -> str:
    """A chat in a session (SSE or WebSocket): remembered, with the caller's retrieval choices."""
    return await start(
        nats_client,
        settings,
        tenant,
        body.input,
        spec_of(body, remember=True),
        session_id=session_id,
        top_k=body.top_k,
        mode=body.mode,
        collection=body.collection,
        doc_ids=body.doc_ids,
        expand=body.expand,
    )


_spans: dict[str, tuple[Span, float]] = {}
SPAN_UNFOLLOWED_S = 120.0


def _open_span(request_id: str, text: str, session_id: str | None, retrieval: bool) -> Span:
    stale = time.monotonic() - SPAN_UNFOLLOWED_S
    for rid, (_, since) in list(_spans.items()):
        if since < stale:  # a client gone before its stream began
            _close_span(rid, error="nobody followed the answer")
    span = telemetry.tracer().start_span("olympus.chat")
    telemetry.set_attributes(
        span,
        {
            "openinference.span.kind": "CHAIN",
            "input.value": telemetry.cut(text),
            "session.id": session_id,
            "olympus.request_id": request_id,
            "olympus.retrieval": retrieval,
        },
    )
    _spans[request_id] = (span, time.monotonic())
    return span


def _close_span(request_id: str, output: str | None = None, error: str | None = None) -> None:
    entry = _spans.pop(request_id, None)
    if entry is None:
        return
    span = entry[0]
    if output is not None:
        telemetry.set_attributes(span, {"output.value": telemetry.cut(output)})
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end()


async def events(
    nats_client: NatsClient, settings: GatewaySettings, request_id: str, after: int = -1
) -> AsyncIterator[ChatEvent]:
    """The answer's events after ``after``; if the client leaves before the end, the generator
    is told, and cancels unless someone resumes within its grace period."""
    finished: ChatEvent | None = None
    try:
        async for event in nats_client.follow(
            request_id,
            first_timeout_s=settings.request_timeout_s + settings.chat_idle_timeout_s,
            idle_timeout_s=settings.chat_idle_timeout_s,
            probe_s=settings.chat_probe_s,
        ):
            if event.event in TERMINAL:
                finished = event
            if event.seq > after or event.event == "error":
                yield event
    finally:
        if finished is None:
            _close_span(request_id, error="the client left before the end")
            await nats_client.control(request_id, "detach")
        elif finished.event == "error":
            _close_span(request_id, error=finished.error.message if finished.error else "failed")
        else:
            _close_span(request_id, output=finished.text)


def parse_event_id(last_event_id: str) -> tuple[str, int]:
    """``<request_id>:<seq>`` -> (request_id, seq)."""
    request_id, _, seq = last_event_id.rpartition(":")
    if not _plausible(request_id) or not seq.isdigit():
        raise BadRequest("Last-Event-ID is not <request_id>:<n>")
    return request_id, int(seq)


async def resume(nats_client: NatsClient, tenant: str, request_id: str) -> None:
    """Check the answer is kept and the tenant's, and keep the generator going for it."""
    last = await nats_client.last_event(request_id) if _plausible(request_id) else None
    if last is None or last.tenant != tenant:
        raise NotFound("no answer to resume under that id")
    await nats_client.control(request_id, "attach")


async def collect(
    nats_client: NatsClient, settings: GatewaySettings, request_id: str
) -> ChatAnswer:
    """The whole answer, for clients that do not stream."""
    sources, dropped, last = [], 0, None
    async for event in events(nats_client, settings, request_id):
        if event.event == "sources":
            sources, dropped = event.sources, event.dropped_passages
        last = event
    if last is None or last.event == "error":
        if last is not None and last.error is not None:
            raise from_info(last.error)
        raise Unavailable("the answer failed")
    return ChatAnswer(
        request_id=request_id,
        answer=last.text,
        sources=sources,
        cited=last.cited,
        dropped_passages=dropped,
        finish_reason=last.finish_reason,
        usage=last.usage,
        timings=last.timings,
    )


_FIELDS = {
    "sources": {"sources", "dropped_passages"},
    "token": {"text"},
    "done": {"text", "cited", "finish_reason", "usage", "timings"},
    "error": {"text", "error", "finish_reason"},
}


def public(event: ChatEvent) -> dict[str, object]:
    """What a client sees of an event: the fields its kind carries, no tenant, no envelope."""
    return event.model_dump(include={"request_id", "seq", "event", "model"} | _FIELDS[event.event])


def _plausible(request_id: str) -> bool:
    return 0 < len(request_id) <= 128 and request_id.replace("-", "").replace("_", "").isalnum()
