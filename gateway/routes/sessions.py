"""Sessions: their context, and retrieval-only queries over the tenant's documents."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter

from gateway.conversation import check_input
from gateway.deps import ApiKeyDep, NatsDep, SettingsDep, WriteKeyDep
from gateway.errors import from_info
from gateway.models import (
    AUTHENTICATED,
    ContextRequest,
    ContextResponse,
    QueryRequest,
    QueryResponse,
    RetrievedDocument,
    SessionId,
    problems,
)
from olympus import telemetry
from schemas import subjects
from schemas.messages import (
    ContextAdd,
    ContextClear,
    ContextGet,
    ContextReply,
    QueryEmbed,
    RetrieveReply,
)

router = APIRouter(
    prefix="/mcp/{session_id}", tags=["sessions"], responses=problems(*AUTHENTICATED)
)


def _context(session_id: str, reply: ContextReply) -> ContextResponse:
    return ContextResponse(session_id=session_id, context=[i.content for i in reply.items])


@router.post("/add_context", response_model=ContextResponse)
async def add_context(
    body: ContextRequest, key: WriteKeyDep, nats_client: NatsDep, session_id: SessionId
) -> ContextResponse:
    """Remember a piece of context for this session (kept across restarts)."""
    reply = await nats_client.request(
        subjects.RPC_CONTEXT_ADD,
        ContextAdd(tenant=key.tenant, session_id=session_id, content=body.content),
        ContextReply,
    )
    return _context(session_id, reply)


@router.get("/get_context", response_model=ContextResponse)
async def get_context(
    key: ApiKeyDep, nats_client: NatsDep, session_id: SessionId
) -> ContextResponse:
    """The session's context, oldest first."""
    reply = await nats_client.request(
        subjects.RPC_CONTEXT_GET, ContextGet(tenant=key.tenant, session_id=session_id), ContextReply
    )
    return _context(session_id, reply)


@router.delete("/clear_context", response_model=ContextResponse)
async def clear_context(
    key: WriteKeyDep, nats_client: NatsDep, session_id: SessionId
) -> ContextResponse:
    """Forget the session: its context and its conversation history."""
    reply = await nats_client.request(
        subjects.RPC_CONTEXT_CLEAR,
        ContextClear(tenant=key.tenant, session_id=session_id),
        ContextReply,
    )
    return _context(session_id, reply)


@router.post(
    "/query",
    response_model=QueryResponse,
)
async def query(
    body: QueryRequest,
    key: ApiKeyDep,
    nats_client: NatsDep,
    settings: SettingsDep,
    session_id: SessionId,
) -> QueryResponse:
    """Retrieve the passages that best match ``input`` (dense, bm25 or hybrid), best first."""
    check_input(body.input, settings)
    request = QueryEmbed(
        request_id=uuid.uuid4().hex,
        tenant=key.tenant,
        input=body.input,
        top_k=body.top_k,
        mode=body.mode,
        collection=body.collection,
        doc_ids=body.doc_ids,
        session_id=session_id,
        unique_documents=body.unique_documents,
        expand=body.expand,
        deadline=time.time() + settings.request_timeout_s,
    )
    with telemetry.span(
        "olympus.query",
        "CHAIN",
        **{"input.value": telemetry.cut(body.input), "session.id": session_id},
    ) as span:
        # bm25 goes to H.A.D.E.S. at once: a query without a vector is a QueryRetrieve as it is
        stage = subjects.first_stage(body.mode)
        reply = await nats_client.request(stage, request, RetrieveReply)
        telemetry.set_attributes(span, {"output.value": f"{len(reply.hits)} passages"})
    if reply.error is not None:
        raise from_info(reply.error)
    return QueryResponse(
        session_context=[i.content for i in reply.session_context],
        retrieved_documents=[RetrievedDocument(**h.model_dump()) for h in reply.hits],
    )
