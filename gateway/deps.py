"""Dependencies the routes share, defined once as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.bus import GatewayBus
from gateway.settings import GatewaySettings
from olympus.keys import ApiKey, KeyStore

_bearer = HTTPBearer(auto_error=False, description="An Olympus API key")


def get_bus(request: Request) -> GatewayBus:
    return request.app.state.bus


def get_settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    keys: KeyStore = request.app.state.keys
    key = keys.verify(credentials.credentials) if credentials else None
    if key is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a valid API key is required: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return key


def check_input(text: str, settings: GatewaySettings) -> None:
    """A question or search text: not blank, not over the limit (every route taking one)."""
    if len(text) > settings.max_query_chars:
        raise HTTPException(
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            f"input is longer than the limit of {settings.max_query_chars} characters",
        )
    if not text.strip():
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "input is empty")


ApiKeyDep = Annotated[ApiKey, Depends(require_api_key)]
BusDep = Annotated[GatewayBus, Depends(get_bus)]
SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
