"""Dependencies the routes share, defined once as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.nats_client import NatsClient
from gateway.settings import GatewaySettings
from olympus.keys import ApiKey, KeyStore

_bearer = HTTPBearer(auto_error=False, description="An Olympus API key")


def get_bus(request: Request) -> NatsClient:
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


ApiKeyDep = Annotated[ApiKey, Depends(require_api_key)]
NatsDep = Annotated[NatsClient, Depends(get_bus)]
SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
