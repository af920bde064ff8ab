"""Grounded chat in a session: SSE (resumable with Last-Event-ID), JSON, and WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    Header,
    HTTPException,
    Query,
    WebSocket,
    WebSocketDisconnect,
    status,
)
from pydantic import ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent

from gateway import conversation
from gateway.deps import ApiKeyDep, NatsDep, SettingsDep, authenticate
from gateway.errors import OlympusError
from gateway.models import (
    AUTHENTICATED,
    ChatAnswer,
    ChatRequest,
    HistoryResponse,
    SessionId,
    problems,
)
from gateway.nats_client import NatsClient
from gateway.settings import GatewaySettings
from schemas import subjects
from schemas.messages import HistoryGet, HistoryReply, Identifier

LastEventId = Annotated[
    str,
    Header(
        alias="Last-Event-ID",
        pattern=r"^$|^[A-Za-z0-9_-]{1,128}:[0-9]{1,9}$",
        description="resume the answer this event belongs to, after it (`<request_id>:<n>`)",
    ),
]
router = APIRouter(prefix="/mcp/{session_id}", tags=["chat"], responses=problems(*AUTHENTICATED))
ws_router = APIRouter(tags=["chat"])
_CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {}},
        "description": "SSE events `sources`, `token`…, then `done` or `error`; each has an id "
        "`<request_id>:<n>`. With `stream=false`, a ChatAnswer JSON.",
    },
    **problems(404),
}


@router.post("/chat", response_model=ChatAnswer, responses=_CHAT_RESPONSES)
async def chat_in_session(
    body: ChatRequest,
    key: ApiKeyDep,
    nats_client: NatsDep,
    settings: SettingsDep,
    session_id: SessionId,
    last_event_id: LastEventId = "",
) -> Any:
    """Ask; the answer streams token by token, grounded in the retrieved passages and citing
    them as [n]. The session remembers the conversation. Send `Last-Event-ID` to resume an
    answer after a dropped connection: the rest of the same answer, not a new one."""
    if last_event_id:
        request_id, after = conversation.parse_event_id(last_event_id)
        await conversation.resume(nats_client, key.tenant, request_id)
        return _sse(nats_client, settings, request_id, after)
    request_id = await conversation.ask(nats_client, settings, key.tenant, session_id, body)
    if not body.stream:
        return await conversation.collect(nats_client, settings, request_id)
    return _sse(nats_client, settings, request_id)


@router.get("/chat/{request_id}", responses=_CHAT_RESPONSES)
async def resume_chat(
    request_id: Identifier,
    key: ApiKeyDep,
    nats_client: NatsDep,
    settings: SettingsDep,
    session_id: SessionId,
    last_event_id: LastEventId = "",
) -> EventSourceResponse:
    """The events of an answer (all, or those after `Last-Event-ID`): what an EventSource
    reconnecting by itself asks for."""
    after = -1
    if last_event_id:
        named, after = conversation.parse_event_id(last_event_id)
        if named != request_id:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "Last-Event-ID names another answer")
    await conversation.resume(nats_client, key.tenant, request_id)
    return _sse(nats_client, settings, request_id, after)


@router.post(
    "/chat/{request_id}/cancel", status_code=status.HTTP_202_ACCEPTED, responses=problems(404)
)
async def cancel_chat(
    request_id: Identifier, key: ApiKeyDep, nats_client: NatsDep, session_id: SessionId
) -> dict[str, str]:
    """Stop generating this answer (the stop button); it ends with finish_reason cancelled."""
    await conversation.resume(nats_client, key.tenant, request_id)  # 404 unless it is the caller's
    await nats_client.control(request_id, "cancel")
    return {"request_id": request_id, "status": "cancelling"}


@router.get("/history", response_model=HistoryResponse)
async def history(
    key: ApiKeyDep,
    nats_client: NatsDep,
    session_id: SessionId,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> HistoryResponse:
    """The session's questions and answers with the sources each cited, oldest first."""
    reply = await nats_client.request(
        subjects.RPC_HISTORY_GET,
        HistoryGet(tenant=key.tenant, session_id=session_id, limit=limit),
        HistoryReply,
    )
    return HistoryResponse(session_id=session_id, turns=reply.turns)


def _sse(
    nats_client: NatsClient, settings: GatewaySettings, request_id: str, after: int = -1
) -> EventSourceResponse:
    async def stream() -> Any:
        async for event in conversation.events(nats_client, settings, request_id, after):
            yield ServerSentEvent(
                data=json.dumps(conversation.public(event)),
                event=event.event,
                id=f"{request_id}:{event.seq}",
            )

    return EventSourceResponse(
        stream(), ping=settings.sse_ping_s, headers={"X-Request-Id": request_id}
    )


@ws_router.websocket("/ws/chat/{session_id}")
async def chat_socket(websocket: WebSocket, session_id: SessionId) -> None:
    """The same chat over a WebSocket. Authenticate with `Authorization: Bearer <key>` or
    `?api_key=` (browsers cannot set headers). Send a ChatRequest as JSON; receive
    `{"event", "id", "data"}` objects; send `{"action": "stop"}` to stop the answer."""
    header = websocket.headers.get("authorization", "")
    secret = header.removeprefix("Bearer ").strip() or websocket.query_params.get("api_key", "")
    address = websocket.client.host if websocket.client else "unknown"
    try:
        key = await authenticate(
            websocket.app.state.keys, websocket.app.state.limits, secret, address
        )
    except OlympusError as exc:
        # Closing before accepting refuses the handshake: the client sees HTTP 403.
        await websocket.close(code=1008, reason=exc.message)
        return
    nats_client: NatsClient = websocket.app.state.bus
    settings: GatewaySettings = websocket.app.state.settings
    await websocket.accept()
    try:
        while True:
            raw = await websocket.receive_text()
            try:
                body = ChatRequest.model_validate_json(raw)
                request_id = await conversation.ask(
                    nats_client, settings, key.tenant, session_id, body
                )
            except ValidationError as exc:
                await _ws_error(websocket, 422, str(exc.errors(include_url=False)))
                continue
            except OlympusError as exc:
                await _ws_error(websocket, exc.status, exc.message)
                continue
            await _stream_to_socket(websocket, nats_client, settings, request_id)
    except WebSocketDisconnect:
        return


async def _stream_to_socket(
    websocket: WebSocket, nats_client: NatsClient, settings: GatewaySettings, request_id: str
) -> None:
    async def listen_for_stop() -> None:
        while True:
            with contextlib.suppress(ValueError):
                message = json.loads(await websocket.receive_text())
                if isinstance(message, dict) and message.get("action") == "stop":
                    await nats_client.control(request_id, "cancel")

    listener = asyncio.create_task(listen_for_stop())
    try:
        # A client that leaves makes send_json raise; events() then tells the generator.
        async for event in conversation.events(nats_client, settings, request_id):
            data = conversation.public(event)
            await websocket.send_json(
                {"event": event.event, "id": f"{request_id}:{event.seq}", "data": data}
            )
    finally:
        listener.cancel()
        (outcome,) = await asyncio.gather(listener, return_exceptions=True)
    if isinstance(outcome, WebSocketDisconnect):
        raise outcome


async def _ws_error(websocket: WebSocket, code: int, message: str) -> None:
    await websocket.send_json({"event": "error", "data": {"status": code, "message": message}})
