"""How much one caller may ask: requests per key, failed logins per client address, answers
streaming at once per key. Counted with the ``limits`` library (moving windows).

The windows live in ``OLYMPUS_GATEWAY_RATE_LIMIT_STORAGE``: ``memory://`` counts per gateway
process (the embedded stack has one); ``redis://host:6379`` or ``memcached://host:11211`` share
the counts between gateway replicas. Streams at once are counted on the bus (``OLYMPUS_SLOTS``),
which every replica shares already.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from limits import RateLimitItem, parse_many
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import RateLimited, openai_body
from gateway.settings import GatewaySettings
from olympus.logging import get_logger
from schemas import subjects

if TYPE_CHECKING:
    from gateway.nats_client import NatsClient

log = get_logger("olympus.gateway")


class Limits:
    def __init__(self, settings: GatewaySettings) -> None:
        uri = settings.rate_limit_storage
        storage = storage_from_string(uri if uri.startswith("async+") else f"async+{uri}")
        self.window = MovingWindowRateLimiter(storage)  # type: ignore[arg-type]
        self.per_key = parse_many(settings.rate_limit) if settings.rate_limit else []
        self.failures = parse_many(settings.auth_failure_limit)

    async def hit(self, key_id: str) -> None:
        """Count a request of ``key_id``; RateLimited once it is over any of its limits."""
        for item in self.per_key:
            if not await self.window.hit(item, "key", key_id):
                raise RateLimited(
                    f"more than {item} requests for this key: slow down",
                    retry_after_s=await self._retry_after(item, "key", key_id),
                )

    async def check_address(self, address: str) -> None:
        """RateLimited when ``address`` has failed to authenticate too often lately."""
        for item in self.failures:
            if not await self.window.test(item, "auth-failure", address):
                raise RateLimited(
                    "too many failed authentications from this address",
                    retry_after_s=await self._retry_after(item, "auth-failure", address),
                )

    async def failed(self, address: str) -> None:
        for item in self.failures:
            await self.window.hit(item, "auth-failure", address)

    async def _retry_after(self, item: RateLimitItem, *identifiers: str) -> int:
        stats = await self.window.get_window_stats(item, *identifiers)
        return max(1, math.ceil(stats.reset_time - time.time()))


class StreamSlots:
    """At most ``per_key`` answers at once per API key, through all gateways: ASGI middleware
    around the answer routes (and every MCP request: its `ask` streams), so a slot is held
    until the last byte of a stream has gone.

    A slot is a message in the memory stream ``OLYMPUS_SLOTS`` under the key's digest, deleted
    when the answer ends; one a dead gateway left behind expires after ``SLOT_LEASE_S``, and a
    live gateway renews the slots of answers that last longer. The key is recognised by a hash
    of its ``Authorization`` header, before the route checks it (an unknown key holds a slot
    only for the moment it takes to be refused).
    """

    PATHS = ("/chat", "/v1/chat/completions", "/mcp")

    def __init__(self, app: ASGIApp, per_key: int) -> None:
        self.app = app
        self.per_key = per_key
        self.renew_s = subjects.SLOT_LEASE_S / 3

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not self._answers(scope):
            await self.app(scope, receive, send)
            return
        holder = _holder(scope)
        if holder is None:
            await self.app(scope, receive, send)
            return
        bus: NatsClient = scope["app"].state.bus
        try:
            slot, streaming = await bus.take_slot(holder)
        except Exception as exc:  # no answer could be had without the bus either
            log.warning("could not take a stream slot", error=str(exc))
            await _refuse(scope, send, "unavailable", 503, "the bus did not answer: try again")
            return
        slots = [slot]
        try:
            if streaming > self.per_key:
                message = f"this key already has {self.per_key} answers streaming: wait for one"
                await _refuse(scope, send, "rate_limited", 429, message)
                return
            async with _renewing(bus, holder, slots, self.renew_s):
                await self.app(scope, receive, send)
        finally:
            with contextlib.suppress(Exception):  # the bus is gone: the slot expires by itself
                await bus.free_slot(slots[-1])

    def _answers(self, scope: Scope) -> bool:
        path: str = scope["path"]
        return path in self.PATHS[1:] or (path.startswith("/mcp/") and path.endswith(self.PATHS[0]))


@contextlib.asynccontextmanager
async def _renewing(
    bus: NatsClient, holder: str, slots: list[int], every_s: float
) -> AsyncIterator[None]:
    """While the answer lasts, replace its slot before the stream would let it expire."""

    async def renew() -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                fresh, _ = await bus.take_slot(holder)
            except Exception as exc:  # try again next time; the old slot lasts until then
                log.warning("could not renew a stream slot", error=str(exc))
                continue
            previous = slots[-1]
            slots.append(fresh)
            with contextlib.suppress(Exception):  # if it stays, it expires by itself
                await bus.free_slot(previous)

    task = asyncio.create_task(renew())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _holder(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return hashlib.sha256(value).hexdigest()
    return None


async def _refuse(scope: Scope, send: Send, code: str, status: int, message: str) -> None:
    import json

    body: dict[str, Any] = (
        openai_body(code, message) if scope["path"].startswith("/v1/") else {"detail": message}
    )
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})
