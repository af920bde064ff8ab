"""Ids derived from content, so a redelivered message rewrites the same rows."""

from __future__ import annotations

import hashlib
from pathlib import Path


def _digest(*parts: str | bytes, length: int = 32) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\x1f")
    return h.hexdigest()[:length]


def document_id(tenant: str, collection: str, filename: str) -> str:
    """Same tenant, collection and filename: same document (a new upload replaces it)."""
    return _digest(tenant, collection, filename, length=24)


def subject_token(doc_id: str) -> str:
    """A document id as one NATS subject token (an id may hold dots; a token may not)."""
    return _digest(doc_id, length=24)


def chunk_id(tenant: str, doc_id: str, position: int, text: str) -> str:
    """A producer chooses its documents' ids: two tenants may both have a document ``readme``
    with the same text, and their chunks must still be two."""
    return _digest(tenant, doc_id, str(position), text)


def relation_id(source: str, kind: str, target: str, origin: str) -> str:
    """One relation per source, kind, target and origin: declaring it again replaces it. A
    relation declared with the document and later over the API is the same relation."""
    declared = "declared" if origin in ("ingest", "api") else origin
    return _digest(source, kind, target, declared, length=24)


def content_hash(content: str | bytes) -> str:
    return hashlib.sha256(content.encode() if isinstance(content, str) else content).hexdigest()


def ingest_msg_id(doc_id: str, op: str, content_digest: str) -> str:
    """The ``Nats-Msg-Id`` of an ingest publish: JetStream drops a repeat inside its window."""
    return f"{doc_id}:{op}:{content_digest[:32]}"


def index_msg_id(doc_id: str, step: str, version: int) -> str:
    """The ``Nats-Msg-Id`` of an index publish: one per document, step (``upsert``, ``delete``,
    or a status) and ingest version, so a redelivered ingest message publishes nothing twice."""
    return f"{doc_id}:{step}:{version}"


def status_msg_id(changes: list[tuple[str, str, int]]) -> str:
    """The ``Nats-Msg-Id`` of status changes given as (doc_id, status, version): the same
    changes published again (a retried publish, a redelivered ingest message) are dropped."""
    digest = hashlib.sha256("|".join(f"{d}:{s}:{v}" for d, s, v in changes).encode())
    return f"status:{digest.hexdigest()[:32]}"


def turn_msg_id(request_id: str) -> str:
    """The ``Nats-Msg-Id`` of a finished question and answer: each answer is remembered once."""
    return f"turn:{request_id}"


def model_identity(name: str, fingerprint: str) -> str:
    """What the embedder calls its model: ``name@fingerprint`` (the digest of its weights,
    ``weights_fingerprint``); the bare name when it has none."""
    return f"{name}@{fingerprint}" if fingerprint else name


def model_fingerprint(model: str) -> str:
    """The weights' digest in an embedding model's identity (``model_identity``); empty for a
    bare name. Two identities with the same fingerprint are one model, whatever folder each was
    loaded from."""
    return model.rpartition("@")[2] if "@" in model else ""


def weights_fingerprint(path: str) -> str:
    """Which weights these are, wherever they lie: a digest of the model's config and of the
    first MiB of each weights file (a fine-tune shares its base's config, not its weights).
    Empty for a model named by a hub id instead of a folder. Here, not beside the encoder, so
    ``olympus reindex`` names a model without importing torch."""
    folder = Path(path)
    if not folder.is_dir():
        return ""
    digest = hashlib.sha256()
    for name in ("config.json", *sorted(f.name for f in folder.iterdir() if _weights(f.name))):
        with open(folder / name, "rb") as file:
            digest.update(name.encode() + b"\0" + file.read(1 << 20))
    return digest.hexdigest()[:12]


def _weights(name: str) -> bool:
    return name.endswith((".safetensors", ".bin")) and not name.startswith("training_args")
