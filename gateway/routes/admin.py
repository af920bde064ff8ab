"""A tenant's API keys, managed with an ``admin`` key of that tenant (the ``olympus keys``
command manages every tenant's, on the machine that holds the key file)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, status
from pydantic import BaseModel, Field

from gateway.deps import AdminKeyDep
from gateway.errors import BadRequest, Conflict, NotFound
from gateway.models import AUTHENTICATED, problems
from olympus.keys import KeyExists, KeyInfo, KeyStore, Scope, parse_duration

router = APIRouter(prefix="/admin", tags=["admin"], responses=problems(*AUTHENTICATED))
KeyName = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class KeyList(BaseModel):
    keys: list[KeyInfo]


class NewKey(BaseModel):
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    scope: Scope = "read"
    expires: str | None = Field(
        default=None, pattern=r"^[1-9][0-9]{0,5}[dhms]$", description="lifetime: 30d, 12h, 15m, 90s"
    )


class CreatedKey(KeyInfo):
    key: str = Field(description="the key itself: shown this once, never stored")


def _keys(request: Request) -> KeyStore:
    return request.app.state.keys


@router.get("/keys", response_model=KeyList)
async def list_keys(request: Request, key: AdminKeyDep) -> KeyList:
    """The tenant's keys: names, scopes and dates, never the keys themselves."""
    infos = _keys(request).describe(tenant=key.tenant)
    return KeyList(keys=infos)


@router.post(
    "/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=CreatedKey,
    responses=problems(409),
)
async def create_key(request: Request, body: NewKey, key: AdminKeyDep) -> CreatedKey:
    """A new key of the caller's tenant; the response is the only place it is ever shown."""
    store = _keys(request)
    try:
        lifetime = parse_duration(body.expires) if body.expires else None
        secret = store.create(key.tenant, body.scope, body.name, lifetime)
    except KeyExists as exc:
        raise Conflict(str(exc)) from exc
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    made = store.lookup(secret)
    assert made is not None
    info = next(i for i in store.describe(key.tenant) if i.name == made.name)
    return CreatedKey(key=secret, **info.model_dump())


@router.delete("/keys/{name}", responses=problems(404))
async def revoke_key(request: Request, name: KeyName, key: AdminKeyDep) -> dict[str, str]:
    """Revoke one of the tenant's keys: refused at once by every gateway sharing the key file."""
    if not _keys(request).revoke(name, tenant=key.tenant):
        raise NotFound(f"no key named {name!r}")
    return {"name": name, "status": "revoked"}
