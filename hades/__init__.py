"""H.A.D.E.S., the data layer: the store interfaces and their backends.

Only the indexer worker opens the stores. ``VectorIndex`` and ``DocumentGraph`` are the two
contracts; every backend subclasses the contract test classes in
``tests/support/hades_contract.py``.
"""

from hades.protocols import (
    ChunkRecord,
    DocumentGraph,
    DocumentWrite,
    SearchQuery,
    VectorHit,
    VectorIndex,
)

__all__ = [
    "ChunkRecord",
    "DocumentGraph",
    "DocumentWrite",
    "SearchQuery",
    "VectorHit",
    "VectorIndex",
]
