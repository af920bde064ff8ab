"""The generator's work, free of the broker: accept a request, stream its answer, remember it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from olympus import telemetry
from olympus.logging import get_logger
from schemas.messages import (
    Accepted,
    ChatControl,
    ChatEvent,
    ChatEventKind,
    ErrorCode,
    ErrorInfo,
    IndexTurn,
    QueryGenerate,
    SessionTurn,
    Usage,
)
from workers.generator import prompt as prompting
from workers.generator.backend import Backend, Job, Piece

log = get_logger("olympus.generator")
EventSink = Callable[[ChatEvent], Awaitable[None]]
TurnSink = Callable[[IndexTurn], Awaitable[None]]


@dataclass(frozen=True)
class Defaults:
    max_new_tokens: int
    temperature: float
    top_p: float
    context_tokens: int
    cancel_grace_s: float
    style: prompting.Style = prompting.STYLE


class ChatHandler:
    def __init__(
        self,
        engine: Backend,
        defaults: Defaults,
        send: EventSink,
        keep_turn: TurnSink,
        model: str = "",
    ) -> None:
        self.engine = engine
        self.defaults = defaults
        self.send = send
        self.keep_turn = keep_turn
        self.model = model or engine.model
        self._tasks: set[asyncio.Task[None]] = set()
        self._answering: set[str] = set()  # request ids accepted and not yet finished
        self._detached: dict[str, asyncio.TimerHandle] = {}

    async def accept(self, request: QueryGenerate) -> Accepted:
        """Check and queue the request; its answer streams from a task of its own."""
        if request.deadline < time.time():
            log.info("dropped expired request", request_id=request.request_id)
            return _refused("expired", "the request expired before it reached the generator")
        options = request.chat.options
        max_new = options.max_tokens or self.defaults.max_new_tokens
        budget = self.defaults.context_tokens - max_new
        if budget < 64:
            return _refused("bad_request", f"max_tokens={max_new} leaves no room for a prompt")
        try:
            # Off the event loop: a long history takes a while to encode, and other answers'
            # tokens must keep flowing meanwhile.
            prompt = await asyncio.to_thread(
                prompting.build, request, self.engine.tokenizer, budget, self.defaults.style
            )
        except prompting.PromptTooLong as exc:
            return _refused("bad_request", str(exc))
        rid = request.request_id
        task = asyncio.create_task(self._answer(request, prompt, max_new))
        self._tasks.add(task)
        self._answering.add(rid)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._answering.discard(rid))
        return Accepted(request_id=rid)

    def control(self, message: ChatControl) -> bool:
        """Act on a control message; whether this generator is working on that answer."""
        rid = message.request_id
        if message.action == "probe":
            return rid in self._answering
        timer = self._detached.pop(rid, None)
        if timer is not None:
            timer.cancel()
        if message.action == "cancel":
            self.engine.cancel(rid)
        elif message.action == "detach":
            loop = asyncio.get_running_loop()
            self._detached[rid] = loop.call_later(
                self.defaults.cancel_grace_s, self._cancel_detached, rid
            )
        return rid in self._answering

    def _cancel_detached(self, request_id: str) -> None:
        self._detached.pop(request_id, None)
        if self.engine.cancel(request_id):
            log.info("cancelled an answer nobody reads", request_id=request_id)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _answer(self, request: QueryGenerate, prompt: prompting.Prompt, max_new: int) -> None:
        structlog.contextvars.bind_contextvars(
            request_id=request.request_id, session_id=request.session_id
        )
        with telemetry.span("olympus.generate", "LLM") as span:
            # Built only for a span that is kept: with tracing off the prompt is not walked.
            if span.is_recording():
                telemetry.set_attributes(
                    span, _llm_input(request, prompt, max_new, self.model, self.engine.system)
                )
            ended = await self._stream(request, prompt, max_new)
            if ended is not None:
                answer, piece = ended
                prompt_tokens = piece.prompt_tokens or len(prompt.ids)
                log.info(
                    "answered",
                    finish_reason=piece.finish_reason,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=piece.completion_tokens,
                )
                telemetry.set_attributes(
                    span,
                    {
                        "output.value": telemetry.cut(answer),
                        "llm.output_messages.0.message.role": "assistant",
                        "llm.output_messages.0.message.content": telemetry.cut(answer),
                        "llm.token_count.prompt": prompt_tokens,
                        "llm.token_count.completion": piece.completion_tokens,
                        "llm.token_count.total": prompt_tokens + piece.completion_tokens,
                        "olympus.finish_reason": piece.finish_reason,
                        "olympus.error": piece.error,
                    },
                )

    async def _stream(
        self, request: QueryGenerate, prompt: prompting.Prompt, max_new: int
    ) -> tuple[str, Piece] | None:
        """Send the answer's events; the answer and its last piece, or None if it broke."""
        seq = 0

        async def send(event: ChatEventKind, **fields: Any) -> None:
            nonlocal seq
            await self.send(
                ChatEvent(
                    request_id=request.request_id,
                    tenant=request.tenant,
                    seq=seq,
                    event=event,
                    model=request.chat.model,
                    **fields,
                )
            )
            seq += 1

        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[Piece] = asyncio.Queue()
        options = request.chat.options
        job = Job(
            request_id=request.request_id,
            prompt_ids=prompt.ids,
            messages=prompt.messages,
            max_new_tokens=max_new,
            emit=lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece),
            temperature=self.defaults.temperature
            if options.temperature is None
            else options.temperature,
            top_p=self.defaults.top_p if options.top_p is None else options.top_p,
            deadline=request.deadline,
        )
        try:
            await send("sources", sources=prompt.sources, dropped_passages=prompt.dropped_passages)
            self.engine.submit(job)
            parts: list[str] = []
            while True:
                piece = await pieces.get()
                if piece.text:
                    parts.append(piece.text)
                    await send("token", text=piece.text)
                if piece.finish_reason is not None:
                    break
            answer = "".join(parts)
            if piece.finish_reason == "error":
                await send(
                    "error",
                    error=ErrorInfo(code=piece.code, message=piece.error or "failed"),
                    finish_reason="error",
                    text=answer,
                )
                return answer, piece
            cited = prompting.cited(answer, prompt.sources)
            if request.chat.remember and request.session_id and piece.finish_reason != "cancelled":
                await self.keep_turn(
                    IndexTurn(
                        tenant=request.tenant,
                        session_id=request.session_id,
                        turn=SessionTurn(
                            request_id=request.request_id,
                            question=request.input,
                            answer=answer,
                            sources=[s for s in prompt.sources if s.n in cited],
                        ),
                    )
                )
            await send(
                "done",
                text=answer,
                cited=cited,
                finish_reason=piece.finish_reason,
                usage=Usage(
                    prompt_tokens=piece.prompt_tokens or len(prompt.ids),
                    completion_tokens=piece.completion_tokens,
                    total_tokens=(piece.prompt_tokens or len(prompt.ids)) + piece.completion_tokens,
                ),
                timings=_timings(request, job, piece.completion_tokens),
            )
            return answer, piece
        except asyncio.CancelledError:
            self.engine.cancel(request.request_id)
            raise
        except Exception as exc:
            log.exception("answer failed", request_id=request.request_id)
            self.engine.cancel(request.request_id)
            await send(
                "error", error=ErrorInfo(code="internal", message=str(exc)), finish_reason="error"
            )
            return None


def _llm_input(
    request: QueryGenerate, prompt: prompting.Prompt, max_new: int, model: str, system: str
) -> dict[str, Any]:
    """OpenInference LLM span attributes: the model, its parameters, the prompt messages."""
    options = request.chat.options
    attributes: dict[str, Any] = {
        "llm.model_name": model,
        "llm.system": system,
        "llm.invocation_parameters": {
            "max_new_tokens": max_new,
            "temperature": options.temperature,
            "top_p": options.top_p,
        },
        "input.value": telemetry.cut(request.input),
        "session.id": request.session_id,
        "olympus.request_id": request.request_id,
        "olympus.passages": len(prompt.sources),
        "olympus.dropped_passages": prompt.dropped_passages,
    }
    for i, message in enumerate(prompt.messages):
        attributes[f"llm.input_messages.{i}.message.role"] = message["role"]
        attributes[f"llm.input_messages.{i}.message.content"] = telemetry.cut(message["content"])
    return attributes


def _timings(request: QueryGenerate, job: Job, tokens: int) -> dict[str, float]:
    now = time.perf_counter()
    first = job.first_token_at or now
    timings = {
        "queue_and_prefill_ms": (first - job.submitted_at) * 1000,
        "generation_ms": (now - first) * 1000,
        "tokens_per_s": tokens / (now - first) if now > first else 0.0,
    }
    if request.retrieval_ms is not None:
        timings["retrieval_ms"] = request.retrieval_ms
    return {k: round(v, 2) for k, v in timings.items()}


def _refused(code: ErrorCode, message: str) -> Accepted:
    return Accepted(error=ErrorInfo(code=code, message=message))
