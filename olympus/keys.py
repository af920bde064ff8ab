"""API keys: random tokens, stored only as SHA-256 hashes in the data folder. A key belongs to one
tenant, has a name, a scope and, if it was given one, an expiry.

Scopes are ordered, each allowing what the ones before it allow:

- ``read``: search, ask and chat, read documents, session context and history;
- ``write``: also add and delete documents and change session context;
- ``admin``: also manage the tenant's keys (``/admin/keys``).

Every gateway looks at the key file's identity (inode, size, mtime) on each request and reads it
again when it changed, so a key made or revoked by ``olympus keys`` or ``/admin/keys`` counts at
once on every gateway that shares the file. A key is looked up by the SHA-256 of what was
presented: the time a lookup takes depends on that hash, never on how much of a real key a guess
got right. (Keys are 256-bit random, so a fast hash is safe here; passwords would need a slow one.)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel

from olympus.private import write_private
from schemas.messages import valid_name

KEY_PREFIX = "oly_"
Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
_KEY_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_GIVEN_KEY = re.compile(r"^oly_[A-Za-z0-9_-]{43,128}$")  # 256 bits or more, as ours
LAST_USED_EVERY_S = 60.0  # how often a gateway writes down when its keys were last used


class KeyExists(ValueError):
    """A key of that name exists already."""


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """What a key may do; never the key itself."""

    key_id: str
    tenant: str
    name: str
    scope: Scope
    created_at: float
    expires_at: float | None = None

    def allows(self, scope: Scope) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(scope)

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


class KeyInfo(BaseModel):
    """A key as ``olympus keys list`` and ``GET /admin/keys`` show it: never the secret."""

    name: str
    tenant: str
    scope: Scope
    created_at: float
    expires_at: float | None
    last_used_at: float | None


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``15m`` or ``90s`` in seconds: how long a new key lives."""
    match = re.fullmatch(r"(\d+)([dhms])", text.strip())
    if not match:
        raise ValueError(f"invalid duration {text!r}: a number and d, h, m or s (30d, 12h)")
    value = int(match.group(1)) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[match.group(2)]
    if value <= 0:
        raise ValueError("a key's lifetime must be longer than zero")
    return float(value)


class KeyStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._identity: tuple[int, int, int] | None = None
        self._by_hash: dict[str, ApiKey] = {}
        self._used: dict[str, float] = {}
        self._used_flushed = time.monotonic()

    # --- reading --------------------------------------------------------------------------
    def _entries(self) -> list[dict]:
        if not self.path.exists():
            return []
        return list(json.loads(self.path.read_text())["keys"])

    def _load(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._by_hash, self._identity = {}, None
            return
        identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        if identity == self._identity:
            return
        self._by_hash = {e["hash"]: _key_of(e) for e in self._entries()}
        self._identity = identity

    def lookup(self, key: str, now: float | None = None) -> ApiKey | None:
        """The key's grant, or None for an unknown, revoked or expired key."""
        self._load()
        found = self._by_hash.get(_hash(key))
        if found is None or found.expired(time.time() if now is None else now):
            return None
        return found

    def verify(self, key: str, now: float | None = None) -> ApiKey | None:
        """``lookup``, noting that the key was used."""
        found = self.lookup(key, now)
        if found is not None:
            self._note_use(found.key_id, time.time() if now is None else now)
        return found

    def is_empty(self) -> bool:
        self._load()
        return not self._by_hash

    def describe(self, tenant: str | None = None) -> list[KeyInfo]:
        used = self._last_used()
        return [
            KeyInfo(
                name=e.get("name", e["id"]),
                tenant=e["tenant"],
                scope=e.get("scope", "admin"),
                created_at=e.get("created_at", 0.0),
                expires_at=e.get("expires_at"),
                last_used_at=used.get(e["id"]),
            )
            for e in self._entries()
            if tenant is None or e["tenant"] == tenant
        ]

    # --- changing -------------------------------------------------------------------------
    def create(
        self,
        tenant: str,
        scope: Scope = "write",
        name: str | None = None,
        expires_in_s: float | None = None,
        key: str | None = None,
    ) -> str:
        """Make a key; the plain key is returned once and never stored. ``key`` registers one
        made elsewhere (an installer's secret) instead of a new random one: at least as strong
        (``oly_`` and 43 or more URL-safe characters)."""
        valid_name(tenant, "tenant")
        if key is not None and not _GIVEN_KEY.match(key):
            raise ValueError(
                "a given key must be 'oly_' and 43 to 128 letters, digits, '-' or '_' "
                "(e.g. oly_$(openssl rand -hex 32))"
            )
        if scope not in SCOPES:
            raise ValueError(f"invalid scope {scope!r}: one of {', '.join(SCOPES)}")
        key_id = secrets.token_hex(4)
        name = name or f"{tenant}-{key_id}"
        if not _KEY_NAME.match(name):
            raise ValueError(f"invalid key name {name!r}: 1 to 64 letters, digits, '.', '-', '_'")
        key = key or KEY_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        with self._locked():
            entries = self._entries()
            if any(e.get("name") == name for e in entries):
                raise KeyExists(f"a key named {name!r} exists already")
            entries.append(
                {
                    "id": key_id,
                    "name": name,
                    "tenant": tenant,
                    "scope": scope,
                    "hash": _hash(key),
                    "created_at": now,
                    "expires_at": now + expires_in_s if expires_in_s else None,
                }
            )
            self._write(entries)
        return key

    def revoke(self, name: str, tenant: str | None = None) -> bool:
        """Remove the key called ``name`` (of ``tenant``, when given): refused from now on."""
        with self._locked():
            entries = self._entries()
            kept = [
                e
                for e in entries
                if not (e.get("name", e["id"]) == name and tenant in (None, e["tenant"]))
            ]
            if len(kept) == len(entries):
                return False
            self._write(kept)
        return True

    def _write(self, entries: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_private(self.path, json.dumps({"keys": entries}, indent=2))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time across processes (two ``keys create`` at once keep both)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # --- when each key was last used (beside the keys: writing it must not reload them) ----
    @property
    def _used_path(self) -> Path:
        return self.path.with_name(self.path.stem + ".last_used.json")

    def _note_use(self, key_id: str, now: float) -> None:
        self._used[key_id] = now
        if time.monotonic() - self._used_flushed >= LAST_USED_EVERY_S:
            self.flush_last_used()

    def flush_last_used(self) -> None:
        if not self._used:
            return
        with self._locked():
            merged = self._last_used()
            for key_id, at in self._used.items():
                merged[key_id] = max(at, merged.get(key_id, 0.0))
            write_private(self._used_path, json.dumps(merged))
        self._used.clear()
        self._used_flushed = time.monotonic()

    def _last_used(self) -> dict[str, float]:
        try:
            stored: dict[str, float] = json.loads(self._used_path.read_text())
        except (FileNotFoundError, ValueError):
            stored = {}
        for key_id, at in self._used.items():
            stored[key_id] = max(at, stored.get(key_id, 0.0))
        return stored


def _key_of(entry: dict) -> ApiKey:
    return ApiKey(
        key_id=entry["id"],
        tenant=entry["tenant"],
        name=entry.get("name", entry["id"]),
        # Keys made before scopes existed could do everything: they keep that.
        scope=entry.get("scope", "admin"),
        created_at=entry.get("created_at", 0.0),
        expires_at=entry.get("expires_at"),
    )
