"""Bus messages the tests publish or hand to handlers directly."""

from __future__ import annotations

import numpy as np

from schemas.ids import chunk_id
from schemas.messages import IndexUpsert


def unit_vector(seed: int, dims: int) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(dims)
    return (v / np.linalg.norm(v)).tolist()


def index_upsert(
    doc_id: str, texts: list[str], version: int, dims: int, tenant: str = "t"
) -> IndexUpsert:
    """One embedded document as the embedder sends it, its vectors seeded by its texts."""
    return IndexUpsert(
        tenant=tenant,
        collection="c",
        doc_id=doc_id,
        filename=f"{doc_id}.txt",
        media_type="text/plain",
        version=version,
        content_hash=f"h{version}",
        model="m",
        chunks=[
            {
                "chunk_id": chunk_id(tenant, doc_id, i, text),
                "position": i,
                "text": text,
                "vector": unit_vector(sum(map(ord, text)), dims),
            }
            for i, text in enumerate(texts)
        ],
    )
