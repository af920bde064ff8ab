"""Olympus as an MCP server: the gateway's ``/mcp`` (streamable HTTP, stateless, so any gateway
replica answers any request), and through ``olympus mcp`` over stdio.

Every tool calls what the HTTP routes call, with the API key the request brought: the same
validation, the same limits, the same answers; an HTTP error becomes a tool error carrying the
same sentence. Keys are bearer tokens here too. A request without a valid one gets a 401 whose
``WWW-Authenticate`` points at the Protected Resource Metadata (RFC 9728) that
``/.well-known/oauth-protected-resource/mcp`` serves: no authorization server is named there,
because Olympus issues API keys itself (``olympus keys create``), not OAuth tokens.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, GetPromptResult, InputRequiredResult, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import conversation
from gateway.deps import authenticate
from gateway.errors import OlympusError
from gateway.models import (
    AddDocumentRequest,
    ChatRequest,
    ContextRequest,
    QueryRequest,
    RetrievedDocument,
)
from gateway.nats_client import NatsClient
from gateway.routes import rag, sessions
from gateway.settings import GatewaySettings
from olympus.keys import ApiKey
from olympus.keys import Scope as KeyScope
from schemas.messages import (
    MAX_TOP_K,
    ChunkText,
    Citation,
    DocumentInfo,
    DocumentStatus,
    Identifier,
    Metadata,
    Name,
    SearchMode,
)

PATH = "/mcp"
METADATA_PATH = "/.well-known/oauth-protected-resource" + PATH
SCOPES = ["read", "write", "admin"]
_STATE = "olympus_api_key"
_PROGRESS_EVERY_S = 0.25
_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])

INSTRUCTIONS = """\
Olympus holds the user's documents and answers from them. To find passages, call `search`;
to get an answer written from the passages with numbered citations, call `ask`. Documents are
listed by `list_documents` and read whole with `get_document` or the resource
olympus://documents/{doc_id}/chunks. Cite passages by their doc_id and filename."""

DocIdArg = Annotated[
    Identifier, Field(description="a document id, as search or list_documents give")
]
_SESSION = "any id you pick; the session keeps its context and history"
SessionArg = Annotated[Identifier, Field(description=_SESSION)]
ModeArg = Annotated[
    SearchMode,
    Field(description="hybrid (default): meaning and words; dense: meaning; bm25: words"),
]
CollectionArg = Annotated[Name | None, Field(description="only this collection")]
DocIdsArg = Annotated[
    list[Identifier] | None, Field(description="only these documents", max_length=100)
]


# --- what the tools return ----------------------------------------------------------------
class Passage(BaseModel):
    doc_id: str
    filename: str
    collection: str
    chunk_id: str
    position: int = Field(description="the passage's place in its document, from 0")
    score: float
    text: str


class SearchResult(BaseModel):
    passages: list[Passage]
    session_context: list[str] = Field(description="what the session was told to keep in mind")


class Answer(BaseModel):
    answer: str = Field(description="the answer; [n] cites sources[n-1]")
    sources: list[Citation] = Field(description="the passages the answer was written from")
    cited: list[int] = Field(description="the n of every source the answer cites")
    finish_reason: str | None = None
    request_id: str


class Documents(BaseModel):
    documents: list[DocumentInfo]
    total: int


class DocumentDetail(BaseModel):
    document: DocumentInfo
    chunks: list[ChunkText] = Field(description="its passages in order (only once it is indexed)")


class Accepted(BaseModel):
    doc_id: str
    filename: str
    collection: str
    status: str = Field(description="queued: follow it with get_document until indexed or failed")


class Deleted(BaseModel):
    doc_id: str
    status: str


class SessionContext(BaseModel):
    session_id: str
    context: list[str]


# --- the request a tool serves ----------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    key: ApiKey
    bus: NatsClient
    settings: GatewaySettings


def _call(ctx: Context, scope: KeyScope) -> Call:
    """The key the HTTP request authenticated with (checked for ``scope``), and the gateway's
    bus and settings."""
    request = ctx.request_context.request
    if not isinstance(request, Request) or _STATE not in request.scope.get("state", {}):
        raise ToolError("no API key came with this request")
    key: ApiKey = request.scope["state"][_STATE]
    if not key.allows(scope):
        raise ToolError(f"this key's scope is {key.scope!r}; this tool needs {scope!r}")
    state = request.app.state
    return Call(key, state.bus, state.settings)


async def _same(awaitable: Awaitable[_T]) -> _T:
    """What a route answers, with its refusals as tool errors carrying the same sentence."""
    try:
        return await awaitable
    except HTTPException as exc:
        raise ToolError(_sentence(exc.detail)) from None
    except OlympusError as exc:
        raise ToolError(exc.message) from None
    except ValidationError as exc:  # a message the bus would refuse: the HTTP API's 422
        raise ToolError(_sentence(exc.errors(include_url=False))) from None


def _valid(model: type[BaseModel], **fields: Any) -> Any:
    """A request model, built as the HTTP route would parse it; its refusal as a tool error."""
    try:
        return model.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise ToolError(_sentence(exc.errors(include_url=False))) from None


def _sentence(detail: Any) -> str:
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())) or 'arguments'}: {e.get('msg')}"
            for e in detail
        )
    return str(detail)


# --- the server ------------------------------------------------------------------------------
class _Server(MCPServer):
    """The SDK's server, but a prompt asked for wrongly is the client's mistake, named, as a
    misnamed tool or resource is: the SDK answered every prompt failure (an unknown name, a
    missing argument, a document that is not there) "Internal server error" and logged its
    traceback."""

    async def get_prompt(
        self, name: str, arguments: dict[str, Any] | None = None, context: Any = None
    ) -> GetPromptResult | InputRequiredResult:
        prompts = {p.name: p for p in await self.list_prompts()}
        if name not in prompts:
            raise MCPError(INVALID_PARAMS, f"no prompt {name!r}; there are {sorted(prompts)}")
        required = {a.name for a in prompts[name].arguments or () if a.required}
        if missing := sorted(required - set(arguments or {})):
            raise MCPError(INVALID_PARAMS, f"the prompt {name!r} needs {missing}")
        try:
            return await super().get_prompt(name, arguments, context)
        except ValueError as exc:  # the SDK's wrapping, twice, of whatever the prompt raised
            told: BaseException = exc
            while told.__cause__ is not None:
                told = told.__cause__
            if isinstance(told, ToolError | ResourceError):  # what a prompt of ours says
                raise MCPError(INVALID_PARAMS, str(told)) from None
            raise


def build() -> MCPServer:
    server: MCPServer = _Server(
        "olympus",
        title="Olympus",
        description="Search and ask the documents kept in an Olympus deployment.",
        instructions=INSTRUCTIONS,
        version="0.1.0",
        warn_on_duplicate_tools=False,
    )
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    def tool(annotations: ToolAnnotations) -> Callable[[_F], _F]:
        """A tool described by its docstring, without the source's indentation."""

        def register(fn: _F) -> _F:
            description = inspect.cleandoc(fn.__doc__ or "")
            server.add_tool(fn, description=description, annotations=annotations)
            return fn

        return register

    @tool(read_only)
    async def search(
        query: Annotated[str, Field(description="what to look for, in plain words")],
        ctx: Context,
        top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K, description="passages to return")] = 5,
        mode: ModeArg = "hybrid",
        collection: CollectionArg = None,
        doc_ids: DocIdsArg = None,
        session_id: Annotated[
            Identifier | None, Field(description=_SESSION + " (its context comes back too)")
        ] = None,
    ) -> SearchResult:
        """Find the passages of the user's documents that best match a query, best first, each
        with its document id, filename and score. Use it to look facts up; use `ask` for a
        written answer."""
        call = _call(ctx, "read")
        body = _valid(
            QueryRequest,
            input=query,
            top_k=top_k,
            mode=mode,
            collection=collection,
            doc_ids=doc_ids,
        )
        reply = await _same(
            sessions.query(body, call.key, call.bus, call.settings, session_id or "mcp")
        )
        return SearchResult(
            passages=[_passage(d) for d in reply.retrieved_documents],
            session_context=reply.session_context,
        )

    @tool(read_only)
    async def ask(
        question: Annotated[str, Field(description="the question, in the user's words")],
        ctx: Context,
        top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K, description="passages to read")] = 5,
        mode: ModeArg = "hybrid",
        collection: CollectionArg = None,
        doc_ids: DocIdsArg = None,
        session_id: Annotated[
            Identifier | None,
            Field(description="continue this conversation (its context and history)"),
        ] = None,
    ) -> Answer:
        """Answer a question from the user's documents: Olympus retrieves the passages, writes
        the answer citing them as [n], and returns it with its numbered sources. Progress
        notifications carry the answer as it is written."""
        call = _call(ctx, "read")
        body = _valid(
            ChatRequest,
            input=question,
            top_k=top_k,
            mode=mode,
            collection=collection,
            doc_ids=doc_ids,
        )
        if session_id is not None:
            started = conversation.ask(call.bus, call.settings, call.key.tenant, session_id, body)
        else:
            started = conversation.start(
                call.bus,
                call.settings,
                call.key.tenant,
                body.input,
                conversation.spec_of(body, remember=False),
                top_k=body.top_k,
                mode=body.mode,
                collection=body.collection,
                doc_ids=body.doc_ids,
            )
        request_id = await _same(started)
        return await _same(_follow(ctx, call, request_id))

    @tool(read_only)
    async def list_documents(
        ctx: Context,
        collection: CollectionArg = None,
        status: Annotated[DocumentStatus | None, Field(description="only this status")] = None,
        limit: Annotated[int, Field(ge=1, le=1000, description="at most this many")] = 50,
        offset: Annotated[int, Field(ge=0, description="skip this many (paging)")] = 0,
    ) -> Documents:
        """The user's documents, newest first: id, filename, collection, status (queued,
        processing, indexed, failed) and chunk count."""
        call = _call(ctx, "read")
        page = await _same(
            rag.list_documents(call.key, call.bus, collection, status, limit, offset)
        )
        return Documents(documents=page.items, total=page.total)

    @tool(read_only)
    async def get_document(doc_id: DocIdArg, ctx: Context) -> DocumentDetail:
        """One document: its status, error if it failed, and its passages in order once it is
        indexed."""
        call = _call(ctx, "read")
        return await _detail(call, doc_id)

    @tool(ToolAnnotations(destructive_hint=False, open_world_hint=False))
    async def add_document(
        filename: Annotated[
            str, Field(description="its name with the extension that says its type: notes.md")
        ],
        content: Annotated[str, Field(description="the text, or the file as base64")],
        ctx: Context,
        encoding: Annotated[
            Literal["utf-8", "base64"],
            Field(description="utf-8 for text; base64 for a file (PDF, DOCX...)"),
        ] = "utf-8",
        collection: Annotated[Name, Field(description="where it goes")] = "default",
        metadata: Annotated[
            Metadata | None, Field(description="your fields, kept with it and returned with it")
        ] = None,
    ) -> Accepted:
        """Add a document (or replace the one of the same filename in the collection). It is
        queued, then parsed, chunked and indexed; `get_document` says when it is searchable."""
        call = _call(ctx, "write")
        body = _valid(
            AddDocumentRequest,
            filename=filename,
            content=content,
            encoding=encoding,
            collection=collection,
            metadata=metadata,
        )
        accepted = await _same(rag.add_document(body, call.key, call.bus, call.settings))
        return Accepted(**accepted.model_dump())

    @tool(ToolAnnotations(destructive_hint=True, open_world_hint=False))
    async def delete_document(doc_id: DocIdArg, ctx: Context) -> Deleted:
        """Delete a document with its passages and vectors. It cannot be undone."""
        call = _call(ctx, "write")
        deleted = await _same(rag.delete_document(doc_id, call.key, call.bus))
        return Deleted(doc_id=deleted.doc_id, status=deleted.status)

    @tool(ToolAnnotations(idempotent_hint=False, open_world_hint=False))
    async def add_context(
        session_id: SessionArg,
        content: Annotated[str, Field(description="what the session should keep in mind")],
        ctx: Context,
    ) -> SessionContext:
        """Give a session a piece of context that its searches and answers will take into
        account (kept until clear_context)."""
        call = _call(ctx, "write")
        body = _valid(ContextRequest, content=content)
        reply = await _same(sessions.add_context(body, call.key, call.bus, session_id))
        return SessionContext(**reply.model_dump())

    @tool(read_only)
    async def get_context(session_id: SessionArg, ctx: Context) -> SessionContext:
        """The context a session keeps, oldest first."""
        call = _call(ctx, "read")
        reply = await _same(sessions.get_context(call.key, call.bus, session_id))
        return SessionContext(**reply.model_dump())

    @tool(ToolAnnotations(destructive_hint=True, open_world_hint=False))
    async def clear_context(session_id: SessionArg, ctx: Context) -> SessionContext:
        """Forget a session: its context and its conversation history."""
        call = _call(ctx, "write")
        reply = await _same(sessions.clear_context(call.key, call.bus, session_id))
        return SessionContext(**reply.model_dump())

    @server.resource(
        "olympus://documents{?collection}",
        name="documents",
        description="The documents (newest first, up to 1,000): id, filename, status",
        mime_type="application/json",
    )
    async def documents_resource(ctx: Context, collection: str = "") -> str:
        call = _resource_call(ctx)
        where = _valid(_CollectionModel, collection=collection or None).collection
        page = await _resource(rag.list_documents(call.key, call.bus, where, None, 1000, 0))
        return json.dumps([d.model_dump(mode="json") for d in page.items])

    @server.resource(
        "olympus://documents/{doc_id}",
        name="document",
        description="A document's record: status, collection, chunk count, metadata",
        mime_type="application/json",
    )
    async def document_resource(doc_id: str, ctx: Context) -> str:
        call = _resource_call(ctx)
        found = await _resource(rag.get_document(_doc_id(doc_id), call.key, call.bus))
        return found.model_dump_json()

    @server.resource(
        "olympus://documents/{doc_id}/chunks",
        name="document-text",
        description="A document's text as indexed: its passages in order",
        mime_type="text/plain",
    )
    async def chunks_resource(doc_id: str, ctx: Context) -> str:
        call = _resource_call(ctx)
        chunks = await _resource(rag.document_chunks(_doc_id(doc_id), call.key, call.bus))
        return "\n\n".join(c.text for c in chunks.chunks)

    @server.prompt(
        name="answer_with_citations",
        description="Answer a question from the documents, citing the passages used",
    )
    def answer_with_citations(
        question: Annotated[str, Field(description="the question to answer")],
        collection: Annotated[str, Field(description="search only this collection")] = "",
    ) -> list[UserMessage]:
        where = f" in the collection {collection!r}" if collection else ""
        return [
            UserMessage(
                f"Answer this question from my documents{where}: {question}\n\n"
                f"First call the `search` tool with the question{where} (top_k 8). Answer "
                "only from the passages it returns; after each sentence cite the passage it "
                "comes from as [filename, doc_id]. If the passages do not hold the answer, say "
                "so, and say what they do cover. Do not answer from memory."
            )
        ]

    @server.prompt(
        name="summarize_document",
        description="Summarize one document from its indexed text",
    )
    async def summarize_document(
        doc_id: Annotated[str, Field(description="the document, as list_documents names it")],
        ctx: Context,
        length: Annotated[str, Field(description="how long: one paragraph, 5 bullets…")] = (
            "one paragraph"
        ),
    ) -> list[UserMessage]:
        call = _resource_call(ctx)
        detail = await _detail(call, _doc_id(doc_id))
        text = "\n\n".join(c.text for c in detail.chunks)
        if not text:
            raise ToolError(f"{detail.document.filename!r} is {detail.document.status}: no text")
        return [
            UserMessage(
                f"Summarize the document {detail.document.filename!r} in {length}. Keep its "
                "own terms, names and figures; add nothing it does not say.\n\n"
                f"<document>\n{text}\n</document>"
            )
        ]

    return server


async def _follow(ctx: Context, call: Call, request_id: str) -> Answer:
    """The answer's events to its end; progress notifications carry the text so far."""
    text, sources, last, told = "", [], None, 0.0
    tokens = 0
    async for event in conversation.events(call.bus, call.settings, request_id):
        last = event
        if event.event == "sources":
            sources = event.sources
        elif event.event == "token":
            text += event.text
            tokens += 1
            if time.monotonic() - told >= _PROGRESS_EVERY_S:
                told = time.monotonic()
                await ctx.report_progress(tokens, None, text)
    if last is None or last.event == "error":
        message = last.error.message if last is not None and last.error else "the answer failed"
        raise ToolError(message)
    return Answer(
        answer=last.text,
        sources=sources,
        cited=last.cited,
        finish_reason=last.finish_reason,
        request_id=request_id,
    )


async def _detail(call: Call, doc_id: str) -> DocumentDetail:
    document = await _same(rag.get_document(doc_id, call.key, call.bus))
    chunks: list[ChunkText] = []
    if document.status == "indexed":
        chunks = (await _same(rag.document_chunks(doc_id, call.key, call.bus))).chunks
    return DocumentDetail(document=document, chunks=chunks)


def _passage(hit: RetrievedDocument) -> Passage:
    return Passage(**hit.model_dump())


def _doc_id(raw: str) -> str:
    try:
        return str(_valid(_DocIdModel, doc_id=raw).doc_id)
    except ToolError as exc:
        raise ResourceNotFoundError(f"{raw!r} is not a document id") from exc


class _DocIdModel(BaseModel):
    doc_id: Identifier


class _CollectionModel(BaseModel):
    collection: Name | None = None


def _resource_call(ctx: Context) -> Call:
    try:
        return _call(ctx, "read")
    except ToolError as exc:
        raise ResourceError(str(exc)) from None


async def _resource(awaitable: Awaitable[_T]) -> _T:
    try:
        return await awaitable
    except HTTPException as exc:
        kind = ResourceNotFoundError if exc.status_code == 404 else ResourceError
        raise kind(_sentence(exc.detail)) from None
    except OlympusError as exc:
        raise ResourceError(exc.message) from None


# --- the HTTP side ---------------------------------------------------------------------------
class KeyRequired:
    """The ``/mcp`` endpoint behind the gateway's own key check (with its rate limits and
    failed-login throttle): the key rides on the request to the tools; without one, a 401
    that names the resource metadata, as the MCP authorization spec asks."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        if _cross_origin(request):
            await JSONResponse({"detail": "cross-origin requests are refused"}, 403)(
                scope, receive, send
            )
            return
        secret = _bearer(request.headers.get("authorization", ""))
        address = request.client.host if request.client else "unknown"
        state = request.app.state
        try:
            key = await authenticate(state.keys, state.limits, secret, address)
        except OlympusError as exc:
            headers = dict(exc.headers or {})
            if exc.status == 401:
                headers["WWW-Authenticate"] = (
                    f'Bearer error="invalid_token", error_description="{exc.message}", '
                    f'resource_metadata="{_public_url(request)}{METADATA_PATH}"'
                )
            await JSONResponse({"detail": exc.message}, exc.status, headers)(scope, receive, send)
            return
        scope.setdefault("state", {})[_STATE] = key
        await self.app(scope, receive, send)


def _bearer(header: str) -> str:
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _cross_origin(request: Request) -> bool:
    """A browser page of another site (DNS rebinding included): its Origin is not this host."""
    origin = request.headers.get("origin")
    if not origin:
        return False
    return origin.split("://", 1)[-1].rstrip("/") != request.headers.get("host", "")


def _public_url(request: Request) -> str:
    settings: GatewaySettings = request.app.state.settings
    if settings.public_url:
        return settings.public_url.rstrip("/")
    return f"{request.url.scheme}://{request.url.netloc}"


async def _resource_metadata(request: Request) -> JSONResponse:
    """RFC 9728: what this protected resource is and how to present a token."""
    base = _public_url(request)
    return JSONResponse(
        {
            "resource": base + PATH,
            "resource_name": "Olympus",
            "resource_documentation": base + "/docs",
            "bearer_methods_supported": ["header"],
            "scopes_supported": SCOPES,
        },
        headers={"Cache-Control": "max-age=3600"},
    )


def mount(app: FastAPI, settings: GatewaySettings) -> MCPServer:
    """Serve the MCP server at ``/mcp`` and its resource metadata; the caller runs
    ``serving(server)`` for the app's lifetime."""
    server = build()
    server.streamable_http_app(
        streamable_http_path=PATH,
        stateless_http=True,
        # Origins are checked by KeyRequired against the request's own host (every request
        # needs a key besides), so a deployment's public name needs no list of allowed hosts.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        max_request_body_size=settings.max_upload_bytes * 4 // 3 + 64 * 1024,
    )
    endpoint = KeyRequired(StreamableHTTPASGIApp(server.session_manager))
    # POST only: stateless, there is no session to end (DELETE) and nothing to push on a
    # stream of the server's own (GET): the spec's answer to both is a 405.
    app.router.routes.append(Route(PATH, endpoint=endpoint, methods=["POST"]))
    for path in (METADATA_PATH, "/.well-known/oauth-protected-resource"):
        app.router.routes.append(Route(path, endpoint=_resource_metadata, methods=["GET"]))
    return server


@asynccontextmanager
async def serving(server: MCPServer) -> AsyncIterator[None]:
    async with server.session_manager.run():
        yield
