"""The two store contracts of H.A.D.E.S. and the records that cross them.

Both interfaces are synchronous: the indexer calls them from its single store thread, which is
also what keeps Milvus Lite safe (concurrent writes corrupt its write-ahead log).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from schemas.messages import (
    ChunkText,
    ContextItem,
    Direction,
    DocumentInfo,
    DocumentStatus,
    GraphNode,
    Relation,
    SearchMode,
    SessionTurn,
)

STATUS_RANK: dict[str, int] = {"queued": 0, "processing": 1, "indexed": 2, "failed": 2}


@dataclass(frozen=True)
class ChunkRecord:
    chunk_id: str
    tenant: str
    collection: str
    doc_id: str
    position: int
    text: str
    vector: Sequence[float]


@dataclass(frozen=True)
class DocumentWrite:
    """One document version with all its chunks and the relations it brings (declared with it,
    found in it); written as a whole, replacing the old version's chunks and those relations."""

    tenant: str
    document: DocumentInfo
    chunks: Sequence[ChunkRecord]
    relations: Sequence[Relation] = ()


@dataclass(frozen=True)
class SearchQuery:
    tenant: str
    mode: SearchMode
    top_k: int
    text: str = ""
    vector: Sequence[float] | None = None
    collection: str | None = None
    doc_ids: Sequence[str] | None = None
    unique_documents: bool = False


@dataclass(frozen=True)
class VectorHit:
    chunk_id: str
    doc_id: str
    collection: str
    position: int
    score: float


class VectorIndex(Protocol):
    """Chunk vectors with dense, BM25 and hybrid search, always filtered by tenant.

    It keeps no text: the graph is where a chunk's text lives (and is erased), so a hit names
    its chunk and the indexer reads the text from the graph (``DocumentGraph.chunk_texts``).
    """

    dims: int
    model: str | None
    """The embedding model whose vectors it holds (``name@fingerprint``); None until claimed."""
    seals_while_writing: bool
    """Searches read unsealed rows slowly, so the writer seals every so many rows instead of
    only when writes pause (Milvus Lite; a Milvus server searches them natively and limits
    how often it may be asked to flush)."""

    @property
    def next(self) -> VectorIndex | None:
        """While a live ``olympus reindex`` runs: the next model's vectors, filled beside these
        (``begin_next``) until they take their place (``promote_next``)."""

    def claim_model(self, model: str) -> None:
        """Record ``model`` as the one whose vectors this index holds (its first write)."""

    def begin_next(self, model: str, dims: int) -> None:
        """Make (or keep, if it is ``model``'s) ``next``, an empty index of ``dims``."""

    def cancel_next(self) -> None:
        """Drop ``next`` and what it holds."""

    def promote_next(self) -> str:
        """``next`` takes this index's place; returns where the old vectors are kept."""

    def drop_kept(self) -> list[str]:
        """Drop the earlier models' vectors reindexes kept; their names."""

    def present(self, tenant: str, doc_ids: Collection[str]) -> dict[str, int]:
        """How many chunks of each of these documents the index holds (absent: none)."""

    def upsert(self, chunks: Sequence[ChunkRecord]) -> None:
        """Insert or overwrite by ``chunk_id``; writing the same chunk twice keeps one row."""

    def delete_chunks(self, tenant: str, chunk_ids: Collection[str]) -> None:
        """Remove these chunks of ``tenant`` (unknown ids are ignored)."""

    def delete_document(self, tenant: str, doc_id: str) -> None:
        """Remove every chunk of the document."""

    def search(self, query: SearchQuery) -> list[VectorHit]:
        """Best first. Scores grow with relevance. Only ``query.tenant``'s chunks."""

    def nearest_documents(
        self, tenant: str, vectors: Sequence[Sequence[float]], top_k: int
    ) -> list[list[VectorHit]]:
        """For each vector, what a dense ``search`` with ``unique_documents`` finds: ``tenant``'s
        ``top_k`` documents nearest to it, each by its best chunk. One call for all of them."""

    def count(self, tenant: str, doc_id: str | None = None) -> int:
        """How many chunks ``tenant`` has (in one document, if given), read consistently."""

    def flush(self) -> None:
        """Seal what was written so searches stay fast (Milvus: one segment per flush)."""

    def close(self) -> None:
        """Release the store; what was written stays written."""


class DocumentGraph(Protocol):
    """Documents, chunks, their edges (``has_chunk``, ``next``), the relations between
    documents, and session context.

    Versions order the writes of one document: a write or status older than what is stored (or
    than the document's deletion) is ignored and reported as such.
    """

    def accepts(self, tenant: str, doc_id: str, version: int, status: DocumentStatus) -> bool:
        """Would a write of ``status`` at ``version`` apply (not stale, not deleted later)?"""

    def put_documents(self, writes: Sequence[DocumentWrite]) -> None:
        """Store documents (status ``indexed``) with their chunks and edges, atomically."""

    def set_statuses(
        self, tenant: str, documents: Sequence[DocumentInfo]
    ) -> list[DocumentInfo | None]:
        """Record status changes, in order, in one write; for each the document as it now is,
        or None where the change was stale (an older version, an earlier step) and ignored."""

    def delete_document(self, tenant: str, doc_id: str, version: int) -> DocumentInfo | None:
        """Remove the document, its chunks and edges; remember the deletion's version."""

    def get_document(self, tenant: str, doc_id: str) -> DocumentInfo | None:
        """The document of ``tenant`` with this id, None if there is none."""

    def get_documents(self, tenant: str, doc_ids: Collection[str]) -> dict[str, DocumentInfo]:
        """Those of the documents that exist, by id (for labelling search hits)."""

    def tenants(self) -> list[str]:
        """Every tenant that holds a document, in order (``olympus reindex`` walks them all)."""

    def list_documents(
        self,
        tenant: str,
        collection: str | None = None,
        status: DocumentStatus | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[DocumentInfo], int]:
        """A page of the tenant's documents, newest first, and how many match in all."""

    def chunk_ids(self, tenant: str, doc_id: str) -> list[str]:
        """The document's chunks in order, following ``has_chunk`` edges."""

    def chunk_texts(self, tenant: str, chunk_ids: Collection[str]) -> dict[str, str]:
        """The text of each of these chunks the graph holds for ``tenant``, by chunk id."""

    def secret(self, name: str) -> bytes:
        """A random 32-byte key kept in the store under ``name``, made the first time it is
        asked for (the vector index seals its BM25 terms with one)."""

    def chunks(self, tenant: str, doc_id: str) -> list[ChunkText]:
        """The document's chunks with their text, in order."""

    def following_chunks(self, tenant: str, chunk_id: str, depth: int) -> list[str]:
        """Up to ``depth`` chunks after this one, following ``next`` edges (a traversal)."""

    def neighbour_chunks(self, tenant: str, chunk_id: str) -> list[tuple[str, int]]:
        """The chunks just before and after this one (its ``next`` edges, both ways), as
        (chunk_id, position)."""

    # --- relations between documents: every one inside one tenant -----------------------------
    def put_relation(self, tenant: str, relation: Relation) -> Relation | None:
        """Keep a relation between two of the tenant's documents (the same id again replaces
        it); None when either document does not exist."""

    def delete_relation(self, tenant: str, relation_id: str) -> bool:
        """Remove one relation; False when the tenant has no relation of that id."""

    def relations(self, tenant: str, doc_id: str) -> list[Relation]:
        """Every relation from or to the document, pending ones included, oldest first."""

    def replace_similar(self, tenant: str, doc_id: str, relations: Sequence[Relation]) -> None:
        """The document's ``similar`` relations become these (targets that are gone skipped)."""

    def traverse(
        self,
        tenant: str,
        doc_id: str,
        depth: int,
        direction: Direction = "any",
        kinds: Collection[str] | None = None,
    ) -> tuple[list[GraphNode], list[Relation]]:
        """The documents within ``depth`` hops of this one (following relations out of a
        document, into it, or either way; of ``kinds`` only, if given), each once with its
        fewest hops, so cycles end; and the relations of those kinds between them. Empty when
        the document does not exist."""

    def counts_by_status(self, tenant: str | None = None) -> dict[str, int]:
        """Documents per status, of one tenant or of all (for metrics and ``olympus status``)."""

    def add_context(self, tenant: str, session_id: str, content: str) -> list[ContextItem]:
        """Append to the session's context; the whole context after it, oldest first."""

    def get_context(self, tenant: str, session_id: str) -> list[ContextItem]:
        """The session's context, oldest first (empty for an unknown session)."""

    def clear_context(self, tenant: str, session_id: str) -> int:
        """Forget the session: its context and its turns."""

    def add_turn(self, tenant: str, session_id: str, turn: SessionTurn) -> None:
        """Keep a question and its answer; the same ``request_id`` twice is kept once."""

    def get_turns(self, tenant: str, session_id: str, limit: int) -> list[SessionTurn]:
        """The session's last ``limit`` turns, oldest first."""

    def close(self) -> None:
        """Release the store; what was written stays written."""


def newer(version: int, status: str, current_version: int, current_status: str) -> bool:
    """Does (version, status) come after what is stored? Shared by every graph backend."""
    return (version, STATUS_RANK.get(status, 0)) > (
        current_version,
        STATUS_RANK.get(current_status, 0),
    )
