"""The gateway app: HTTP in, NATS out. Routes live in ``gateway/routes``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import errors, mcp_server
from gateway.limits import Limits, StreamSlots
from gateway.nats_client import NatsClient
from gateway.routes import admin, chat, health, openai, rag, relations, sessions
from gateway.settings import GatewaySettings
from olympus import metrics
from olympus.keys import KeyStore
from olympus.logging import configure, get_logger
from olympus.settings import CommonSettings

log = get_logger("olympus.gateway")


class BodyLimit:
    """413 for a request body over its route's limit, counted as it arrives (chunked bodies
    too): ``limit`` for every route but those ``larger`` names by method and path (uploads)."""

    def __init__(self, app: ASGIApp, limit: int, larger: dict[tuple[str, str], int]) -> None:
        self.app = app
        self.limit = limit
        self.larger = larger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get((scope["method"], scope["path"]), self.limit)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(scope, send, limit)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._reject(scope, send, limit)

    async def _reject(self, scope: Scope, send: Send, limit: int) -> None:
        message = f"request body is larger than this route's limit of {limit} bytes"
        body = (
            errors.openai_body("too_large", message)
            if scope["path"].startswith(errors.OPENAI_PREFIX)
            else {"detail": message}
        )
        await JSONResponse(body, 413)({"type": "http"}, _no_receive, send)


class HttpMetrics:
    """Counts and times every HTTP request by its route template (not its raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        recorded = False

        async def timed(message: Message) -> None:
            nonlocal recorded
            if message["type"] == "http.response.start" and not recorded:
                recorded = True
                route = getattr(scope.get("route"), "path", "unmatched")
                metrics.HTTP_SECONDS.labels(route).observe(time.perf_counter() - started)
                metrics.HTTP_REQUESTS.labels(scope["method"], route, message["status"]).inc()
            await send(message)

        await self.app(scope, receive, timed)


class _TooLarge(Exception):
    pass


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def create_app(
    common: CommonSettings | None = None, settings: GatewaySettings | None = None
) -> FastAPI:
    common = common or CommonSettings()
    settings = settings or GatewaySettings()

    configure("gateway", common.log_level, common.log_format, settings.access_log)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway_bus = NatsClient(common, settings.request_timeout_s)
        await gateway_bus.connect()
        app.state.bus = gateway_bus
        log.info("gateway ready", host=settings.host, port=settings.port)
        async with mcp_server.serving(mcp):
            yield
        await gateway_bus.close()

    app = FastAPI(
        title="Olympus",
        version="0.1.0",
        description="Self-hosted retrieval-augmented chat. The NATS contract: /asyncapi.json.",
        lifespan=lifespan,
        # FastAPI's own spans: one per request, none for dependencies/serialization (three
        # more per request), none for probes and scrapes.
        telemetry={
            "operation_spans": False,
            "exclude": lambda scope: scope.get("path") in ("/healthz", "/readyz", "/metrics"),
        },
    )
    app.state.settings = settings
    app.state.keys = KeyStore(settings.api_keys_file or common.data_dir / "api_keys.json")
    app.state.limits = Limits(settings)
    app.include_router(health.router)
    app.include_router(rag.router)
    app.include_router(relations.router)
    app.include_router(sessions.router)
    app.include_router(chat.router)
    app.include_router(chat.ws_router)
    app.include_router(openai.router)
    app.include_router(admin.router)
    mcp = mcp_server.mount(app, settings)

    errors.install(app)
    # Envelope overhead: base64 and multipart framing on top of the largest allowed file(s).
    upload = settings.max_upload_bytes * 4 // 3 + 64 * 1024
    uploads = {
        ("POST", "/rag/documents"): upload,
        ("POST", "/rag/add_document"): upload,
        ("POST", mcp_server.PATH): upload,  # add_document carries a file as base64
    }
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes, larger=uploads)
    app.add_middleware(StreamSlots, per_key=settings.max_streams_per_key)
    app.add_middleware(HttpMetrics)
    return app
