"""API keys: random tokens, stored only as SHA-256 hashes in the data folder; a key maps to a
tenant. (Keys are 256-bit random, so a fast hash is safe here; passwords would need a slow one.)
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

KEY_PREFIX = "oly_"


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    tenant: str


class KeyStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = -1.0
        self._by_hash: dict[str, ApiKey] = {}

    def _load(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._by_hash, self._mtime = {}, -1.0
            return
        if mtime == self._mtime:
            return
        entries = json.loads(self.path.read_text())["keys"]
        self._by_hash = {e["hash"]: ApiKey(e["id"], e["tenant"]) for e in entries}
        self._mtime = mtime

    def verify(self, key: str) -> ApiKey | None:
        """The key's tenant, or None. A key created since the last look is found too."""
        found = self._by_hash.get(_hash(key))
        if found is None:
            self._load()
            found = self._by_hash.get(_hash(key))
        return found

    def is_empty(self) -> bool:
        self._load()
        return not self._by_hash

    def create(self, tenant: str) -> str:
        """Make a key for ``tenant``; the plain key is returned once and never stored."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        entries = json.loads(self.path.read_text())["keys"] if self.path.exists() else []
        entries.append(
            {
                "id": secrets.token_hex(4),
                "tenant": tenant,
                "hash": _hash(key),
                "created_at": time.time(),
            }
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"keys": entries}, indent=2))
        os.chmod(tmp, 0o600)
        tmp.replace(self.path)
        return key
