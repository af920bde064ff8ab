"""An OpenAI-compatible API, so any OpenAI client can talk to Olympus.

``olympus-rag`` answers from the tenant's documents (retrieval, citations in ``olympus``);
``olympus-chat`` is the same model without retrieval; ``olympus-embed`` embeds. The same API
keys authenticate (``Authorization: Bearer``). Errors use OpenAI's shape.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse, ServerSentEvent

from gateway import conversation
from gateway.deps import ApiKeyDep, NatsDep, SettingsDep
from gateway.errors import BadRequest, NotFound, openai_body
from gateway.models import AUTHENTICATED, problems
from schemas import subjects
from schemas.messages import (
    MAX_HISTORY_TURNS,
    MAX_NEW_TOKENS,
    ChatSpec,
    ChatTurn,
    EmbedReply,
    EmbedRequest,
    ErrorInfo,
    GenerationOptions,
)

router = APIRouter(prefix="/v1", tags=["openai"], responses=problems(*AUTHENTICATED, openai=True))
RAG, CHAT, EMBED = "olympus-rag", "olympus-chat", "olympus-embed"
CHAT_MODELS = {RAG: "answers from your documents, citing them", CHAT: "the model alone"}
CREATED = 1_764_000_000


class Lenient(BaseModel):
    # OpenAI clients send fields we do not use (n, seed, user, ...): accept and ignore them.
    model_config = ConfigDict(extra="ignore")


class ContentPart(Lenient):
    type: str
    text: str = ""


class OpenAIMessage(Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content if p.type == "text")
        return self.content or ""


class StreamOptions(Lenient):
    include_usage: bool = False


class ChatCompletionRequest(Lenient):
    model: str
    messages: list[OpenAIMessage] = Field(min_length=1, max_length=MAX_HISTORY_TURNS * 2 + 8)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)


class EmbeddingRequest(Lenient):
    model: str
    input: str | list[str]


@router.get("/models")
async def list_models(key: ApiKeyDep) -> dict[str, Any]:
    models = [*CHAT_MODELS, EMBED]
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": CREATED, "owned_by": "olympus"} for m in models
        ],
    }


@router.post("/chat/completions", response_model=None, responses=problems(404, openai=True))
async def chat_completions(
    body: ChatCompletionRequest, key: ApiKeyDep, nats_client: NatsDep, settings: SettingsDep
) -> Any:
    if body.model not in CHAT_MODELS:
        raise NotFound(
            f"The model `{body.model}` does not exist; use one of {', '.join(CHAT_MODELS)}",
            openai_code="model_not_found",
        )
    max_tokens = body.max_completion_tokens or body.max_tokens
    if max_tokens is not None and max_tokens > MAX_NEW_TOKENS:
        raise BadRequest(
            f"max_tokens is {max_tokens}, more than the limit of {MAX_NEW_TOKENS}",
            openai_code="max_tokens_too_large",
        )
    *earlier, last = body.messages
    if last.role != "user" or not last.text.strip():
        raise BadRequest("the last message must be a non-empty user message")
    instructions = "\n".join(m.text for m in earlier if m.role in ("system", "developer"))
    history = [
        ChatTurn(role="user" if m.role == "user" else "assistant", content=m.text)
        for m in earlier
        if m.role in ("user", "assistant") and m.text
    ][-MAX_HISTORY_TURNS:]
    spec = ChatSpec(
        model=body.model,
        options=GenerationOptions(
            max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p
        ),
        instructions=instructions or None,
    )
    request_id = await conversation.start(
        nats_client,
        settings,
        key.tenant,
        last.text,
        spec,
        retrieval=body.model == RAG,
        history=history,
    )
    completion_id = f"chatcmpl-{request_id}"
    created = int(time.time())
    if not body.stream:
        answer = await conversation.collect(nats_client, settings, request_id)
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.answer},
                    "finish_reason": _finish(answer.finish_reason),
                }
            ],
            "usage": answer.usage.model_dump() if answer.usage else None,
            "olympus": {"sources": [s.model_dump() for s in answer.sources], "cited": answer.cited},
        }
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def envelope(choices: list[dict[str, Any]], **extra: Any) -> ServerSentEvent:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body.model,
            "choices": choices,
            **extra,
        }
        return ServerSentEvent(data=json.dumps(payload))

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> ServerSentEvent:
        return envelope([{"index": 0, "delta": delta, "finish_reason": finish}], **extra)

    async def stream() -> Any:
        yield chunk({"role": "assistant", "content": ""})
        async for event in conversation.events(nats_client, settings, request_id):
            if event.event == "sources":
                continue
            if event.event == "token":
                yield chunk({"content": event.text})
            elif event.event == "error":
                error = event.error or ErrorInfo(code="internal", message="the answer failed")
                body = openai_body(error.code, error.message, "generation_failed")
                yield ServerSentEvent(data=json.dumps(body))
            else:
                yield chunk({}, _finish(event.finish_reason), olympus={"cited": event.cited})
                if include_usage and event.usage:
                    yield envelope([], usage=event.usage.model_dump())
        yield ServerSentEvent(data="[DONE]")

    return EventSourceResponse(stream(), ping=settings.sse_ping_s)


@router.post("/embeddings", responses=problems(404, openai=True))
async def embeddings(
    body: EmbeddingRequest, key: ApiKeyDep, nats_client: NatsDep
) -> dict[str, Any]:
    if body.model != EMBED:
        raise NotFound(
            f"The model `{body.model}` does not exist; use {EMBED}", openai_code="model_not_found"
        )
    inputs = [body.input] if isinstance(body.input, str) else body.input
    try:
        request = EmbedRequest(tenant=key.tenant, inputs=inputs)
    except ValueError as exc:
        raise BadRequest(f"input: {exc}") from exc
    reply = await nats_client.request(subjects.RPC_EMBED, request, EmbedReply)
    return {
        "object": "list",
        "model": EMBED,
        "data": [
            {"object": "embedding", "index": i, "embedding": vector}
            for i, vector in enumerate(reply.vectors)
        ],
        "usage": {"prompt_tokens": reply.tokens, "total_tokens": reply.tokens},
    }


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"
