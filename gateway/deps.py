"""Dependencies the routes share, defined once as ``Annotated`` aliases.

A route takes the key it needs: ``ApiKeyDep`` (any valid key: reading, searching, asking),
``WriteKeyDep`` (changing documents and session context) or ``AdminKeyDep`` (the tenant's keys).
Each also counts the request against the key's rate limit, and a failed authentication against
the client's address.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.errors import Forbidden, Unauthorized
from gateway.limits import Limits
from gateway.nats_client import NatsClient
from gateway.settings import GatewaySettings
from olympus.keys import ApiKey, KeyStore, Scope

_bearer = HTTPBearer(auto_error=False, description="An Olympus API key")


# async, though they only read app.state: FastAPI runs a plain ``def`` dependency on a worker
# thread, two thread hops on every request.
async def get_bus(request: Request) -> NatsClient:
    return request.app.state.bus


async def get_settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


async def authenticate(keys: KeyStore, limits: Limits, secret: str, address: str) -> ApiKey:
    """The key ``secret`` names, counted against its rate limit; Unauthorized or RateLimited."""
    await limits.check_address(address)
    key = keys.verify(secret) if secret else None
    if key is None:
        await limits.failed(address)
        raise Unauthorized("a valid API key is required: Authorization: Bearer <key>")
    await limits.hit(key.key_id)
    return key


def require(scope: Scope) -> Callable[..., Awaitable[ApiKey]]:
    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> ApiKey:
        address = request.client.host if request.client else "unknown"
        secret = credentials.credentials if credentials else ""
        key = await authenticate(request.app.state.keys, request.app.state.limits, secret, address)
        if not key.allows(scope):
            raise Forbidden(f"this key's scope is {key.scope!r}; this needs {scope!r}")
        return key

    return dependency


ApiKeyDep = Annotated[ApiKey, Depends(require("read"))]
WriteKeyDep = Annotated[ApiKey, Depends(require("write"))]
AdminKeyDep = Annotated[ApiKey, Depends(require("admin"))]
NatsDep = Annotated[NatsClient, Depends(get_bus)]
SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
