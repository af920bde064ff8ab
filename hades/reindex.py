"""Every passage the graph holds, embedded again under another model into a collection of its
own, which then takes the place of the old one (``olympus reindex``).

Vectors of two models cannot share a collection (the index refuses another model's, see
``workers.indexer``), and the ingest streams keep no document once it is processed (erasure),
so the graph is the source: its chunks are what was indexed, exactly, and re-embedding them
reads, parses and uploads nothing again. The stack is stopped meanwhile; the old collection
is kept, under ``<name>__<its model's fingerprint>``, until ``--drop-old``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from hades.milvus import MilvusVectorIndex, kept_name
from hades.protocols import ChunkRecord, DocumentGraph
from schemas.messages import DocumentInfo

PAGE = 200  # documents read from the graph at a time
BATCH = 256  # passages embedded and written at a time

Embed = Callable[[Sequence[str]], np.ndarray]  # unit vectors, one row per text


@dataclass(frozen=True)
class Reindexed:
    documents: int
    chunks: int
    kept_as: str  # where the old collection's vectors are, until --drop-old


def _documents(graph: DocumentGraph) -> Iterator[tuple[str, DocumentInfo]]:
    for tenant in graph.tenants():
        offset = 0
        while documents := graph.list_documents(tenant, limit=PAGE, offset=offset)[0]:
            offset += len(documents)
            for doc in documents:
                yield tenant, doc


def count_passages(graph: DocumentGraph) -> int:
    """How many passages ``reindex`` will embed (what its progress counts to)."""
    return sum(doc.chunk_count for _, doc in _documents(graph))


def passages(graph: DocumentGraph) -> Iterator[ChunkRecord]:
    """Every chunk of every tenant's documents, as the graph holds it (without vectors)."""
    for tenant, doc in _documents(graph):
        for chunk in graph.chunks(tenant, doc.doc_id):
            yield ChunkRecord(
                chunk.chunk_id, tenant, doc.collection, doc.doc_id, chunk.position, chunk.text, ()
            )


def reindex(
    graph: DocumentGraph,
    current: MilvusVectorIndex,
    target: MilvusVectorIndex,
    model: str,
    embed: Embed,
    progress: Callable[[int], None] = lambda n: None,
) -> Reindexed:
    """Fill ``target`` with every passage embedded by ``embed`` (``model``'s), then give it
    ``current``'s name; ``current`` is kept under ``kept_name``. ``progress`` hears how many
    passages each write added."""
    documents: set[tuple[str, str]] = set()
    batch: list[ChunkRecord] = []
    written = 0
    for record in passages(graph):
        documents.add((record.tenant, record.doc_id))
        batch.append(record)
        if len(batch) == BATCH:
            written += _write(target, batch, embed)
            progress(len(batch))
            batch = []
    if batch:
        written += _write(target, batch, embed)
        progress(len(batch))
    target.claim_model(model)
    target.flush()
    name, kept = current.name, kept_name(current.name, current.model)
    current.rename(kept)
    target.rename(name)
    return Reindexed(documents=len(documents), chunks=written, kept_as=kept)


def _write(target: MilvusVectorIndex, batch: list[ChunkRecord], embed: Embed) -> int:
    vectors = embed([r.text for r in batch]).tolist()
    target.upsert(
        [
            ChunkRecord(r.chunk_id, r.tenant, r.collection, r.doc_id, r.position, r.text, v)
            for r, v in zip(batch, vectors, strict=True)
        ]
    )
    return len(batch)
