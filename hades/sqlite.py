"""``DocumentGraph`` on SQLite: the embedded default (WAL, synchronous=FULL).

Edges are stored the way ArangoDB stores them (``_from``/``_to`` handles such as
``documents/<id>``), and traversals are recursive CTEs, so both backends read alike.
"""

from __future__ import annotations

import itertools
import json
import secrets
import sqlite3
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hades.protocols import DocumentWrite, newer
from schemas.messages import (
    ChunkText,
    ContextItem,
    Direction,
    DocumentInfo,
    DocumentStatus,
    GraphNode,
    Relation,
    SessionTurn,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    tenant TEXT NOT NULL, doc_id TEXT NOT NULL, collection TEXT NOT NULL,
    filename TEXT NOT NULL, status TEXT NOT NULL, version INTEGER NOT NULL,
    chunk_count INTEGER NOT NULL DEFAULT 0, error TEXT, content_hash TEXT, media_type TEXT,
    metadata TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (tenant, doc_id)
);
CREATE INDEX IF NOT EXISTS documents_by_collection ON documents (tenant, collection, status);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, doc_id TEXT NOT NULL,
    position INTEGER NOT NULL, text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks (tenant, doc_id, position);
CREATE TABLE IF NOT EXISTS edges (
    _from TEXT NOT NULL, _to TEXT NOT NULL, kind TEXT NOT NULL, tenant TEXT NOT NULL,
    PRIMARY KEY (_from, kind, _to)
);
CREATE INDEX IF NOT EXISTS edges_by_target ON edges (_to);
CREATE TABLE IF NOT EXISTS deletions (
    tenant TEXT NOT NULL, doc_id TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (tenant, doc_id)
);
CREATE TABLE IF NOT EXISTS session_context (
    id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, session_id TEXT NOT NULL,
    content TEXT NOT NULL, at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS context_by_session ON session_context (tenant, session_id, id);
CREATE TABLE IF NOT EXISTS session_turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, session_id TEXT NOT NULL,
    request_id TEXT NOT NULL, turn TEXT NOT NULL, UNIQUE (tenant, request_id)
);
CREATE INDEX IF NOT EXISTS turns_by_session ON session_turns (tenant, session_id, id);
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS relations (
    tenant TEXT NOT NULL, relation_id TEXT NOT NULL, source TEXT NOT NULL, target TEXT,
    kind TEXT NOT NULL, origin TEXT NOT NULL, weight REAL NOT NULL, target_ref TEXT,
    ref_kind TEXT, created_at REAL NOT NULL,
    PRIMARY KEY (tenant, relation_id)
);
CREATE INDEX IF NOT EXISTS relations_from ON relations (tenant, source);
CREATE INDEX IF NOT EXISTS relations_to ON relations (tenant, target);
CREATE INDEX IF NOT EXISTS relations_waiting ON relations (tenant, ref_kind, target_ref)
    WHERE target IS NULL;
"""
# Columns added after a release: (table, column, its definition), added where missing.
_ADDED_COLUMNS = (("documents", "links_dropped", "INTEGER NOT NULL DEFAULT 0"),)
_RELATION_COLUMNS = (
    "relation_id, source, target, kind, origin, weight, target_ref, ref_kind, created_at"
)

_DOC_COLUMNS = (
    "doc_id, collection, filename, status, chunk_count, error, version, content_hash, "
    "media_type, metadata, links_dropped, created_at, updated_at"
)


def _doc_handle(doc_id: str) -> str:
    return f"documents/{doc_id}"


def _chunk_handle(chunk_id: str) -> str:
    return f"chunks/{chunk_id}"


# A document's chunks: its has_chunk edges, each chunk found by its primary key. Joined the
# other way round ('chunks/' || c.chunk_id = e._to) SQLite scanned every chunk of the tenant for
# each call, once per indexed document: the cost that grew with the collection.
_CHUNKS_OF = (
    "FROM edges e JOIN chunks c ON c.chunk_id = substr(e._to, 8) "  # after "chunks/"
    "WHERE e._from=? AND e.kind='has_chunk' AND c.tenant=? ORDER BY c.position"
)


def _row_to_info(row: sqlite3.Row) -> DocumentInfo:
    data = dict(row)
    data["metadata"] = json.loads(data["metadata"])
    return DocumentInfo(**data)


class SqliteDocumentGraph:
    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        # Deleted rows are overwritten with zeros, not left in free pages to be read back.
        self.db.execute("PRAGMA secure_delete=ON")
        self.db.executescript(_SCHEMA)
        for table, column, definition in _ADDED_COLUMNS:
            present = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- versions -----------------------------------------------------------------------------
    def _deleted_at(self, tenant: str, doc_id: str) -> int:
        row = self.db.execute(
            "SELECT version FROM deletions WHERE tenant=? AND doc_id=?", (tenant, doc_id)
        ).fetchone()
        return int(row[0]) if row else -1

    def accepts(self, tenant: str, doc_id: str, version: int, status: DocumentStatus) -> bool:
        if version <= self._deleted_at(tenant, doc_id):
            return False
        current = self.get_document(tenant, doc_id)
        return current is None or newer(version, status, current.version, current.status)

    # --- documents ----------------------------------------------------------------------------
    def put_documents(self, writes: Sequence[DocumentWrite]) -> None:
        with self._tx() as db:
            for write in writes:
                tenant, doc = write.tenant, write.document
                self._remove_chunks(db, tenant, doc.doc_id)
                created = db.execute(
                    "SELECT created_at FROM documents WHERE tenant=? AND doc_id=?",
                    (tenant, doc.doc_id),
                ).fetchone()
                self._upsert_row(db, tenant, doc, created[0] if created else doc.created_at)
                db.executemany(
                    "INSERT INTO chunks (chunk_id, tenant, doc_id, position, text) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (chunk_id) DO UPDATE SET "
                    "tenant=excluded.tenant, doc_id=excluded.doc_id, "
                    "position=excluded.position, text=excluded.text",
                    [(c.chunk_id, tenant, c.doc_id, c.position, c.text) for c in write.chunks],
                )
                ordered = sorted(write.chunks, key=lambda c: c.position)
                edges = [
                    (_doc_handle(doc.doc_id), _chunk_handle(c.chunk_id), "has_chunk", tenant)
                    for c in ordered
                ] + [
                    (_chunk_handle(a.chunk_id), _chunk_handle(b.chunk_id), "next", tenant)
                    for a, b in itertools.pairwise(ordered)
                ]
                db.executemany(
                    "INSERT OR IGNORE INTO edges (_from, _to, kind, tenant) VALUES (?, ?, ?, ?)",
                    edges,
                )
                self._put_relations(db, tenant, doc, write.relations)

    def _put_relations(
        self,
        db: sqlite3.Connection,
        tenant: str,
        doc: DocumentInfo,
        relations: Sequence[Relation],
    ) -> None:
        """The document's declared-at-ingest and found relations become these; those that
        waited for this document now point at it."""
        db.execute(
            "DELETE FROM relations WHERE tenant=? AND source=? AND origin IN ('ingest', 'found')",
            (tenant, doc.doc_id),
        )
        for relation in relations:
            target = relation.target or self._resolve(db, tenant, doc, relation)
            self._insert_relation(db, tenant, relation.model_copy(update={"target": target}))
        url = doc.metadata.get("url") or doc.metadata.get("source")
        db.execute(
            "UPDATE relations SET target=? WHERE tenant=? AND target IS NULL AND source != ? "
            "AND ((ref_kind='doc_id' AND target_ref=?) OR (ref_kind='name' AND target_ref=?) "
            "OR (ref_kind='url' AND target_ref=?))",
            (doc.doc_id, tenant, doc.doc_id, doc.doc_id, doc.filename, url),
        )

    @staticmethod
    def _resolve(
        db: sqlite3.Connection, tenant: str, doc: DocumentInfo, relation: Relation
    ) -> str | None:
        """The document a pending relation names, if the tenant has it: by id, by filename
        (the same collection first, then the newest), or by its ``url``/``source`` metadata."""
        if relation.ref_kind == "doc_id":
            where, args = "doc_id=?", [relation.target_ref]
        elif relation.ref_kind == "name":
            where, args = "filename=?", [relation.target_ref]
        else:
            where = "(json_extract(metadata, '$.url')=? OR json_extract(metadata, '$.source')=?)"
            args = [relation.target_ref, relation.target_ref]
        row = db.execute(
            f"SELECT doc_id FROM documents WHERE tenant=? AND doc_id != ? AND {where} "  # noqa: S608
            "ORDER BY collection = ? DESC, updated_at DESC LIMIT 1",
            (tenant, doc.doc_id, *args, doc.collection),
        ).fetchone()
        return row[0] if row else None

    @staticmethod
    def _insert_relation(db: sqlite3.Connection, tenant: str, relation: Relation) -> None:
        db.execute(
            f"INSERT INTO relations (tenant, {_RELATION_COLUMNS}) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, relation_id) DO UPDATE "
            "SET target=excluded.target, weight=excluded.weight, "
            "target_ref=excluded.target_ref, ref_kind=excluded.ref_kind, "
            # declared over the API and again with the document: it stays the API's (kept)
            "origin=CASE WHEN relations.origin='api' THEN 'api' ELSE excluded.origin END",
            (
                tenant,
                relation.relation_id,
                relation.source,
                relation.target,
                relation.kind,
                relation.origin,
                relation.weight,
                relation.target_ref,
                relation.ref_kind,
                relation.created_at,
            ),
        )

    @staticmethod
    def _upsert_row(
        db: sqlite3.Connection, tenant: str, doc: DocumentInfo, created_at: float
    ) -> None:
        db.execute(
            "INSERT INTO documents (tenant, doc_id, collection, filename, status, version, "
            "chunk_count, error, content_hash, media_type, metadata, links_dropped, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (tenant, doc_id) DO UPDATE SET collection=excluded.collection, "
            "filename=excluded.filename, status=excluded.status, version=excluded.version, "
            "chunk_count=excluded.chunk_count, error=excluded.error, "
            "content_hash=COALESCE(excluded.content_hash, documents.content_hash), "
            "media_type=COALESCE(excluded.media_type, documents.media_type), "
            "metadata=excluded.metadata, links_dropped=excluded.links_dropped, "
            "updated_at=excluded.updated_at",
            (
                tenant,
                doc.doc_id,
                doc.collection,
                doc.filename,
                doc.status,
                doc.version,
                doc.chunk_count,
                doc.error,
                doc.content_hash,
                doc.media_type,
                json.dumps(doc.metadata),
                doc.links_dropped,
                created_at,
                doc.updated_at,
            ),
        )

    @staticmethod
    def _remove_chunks(db: sqlite3.Connection, tenant: str, doc_id: str) -> None:
        handles = [
            _chunk_handle(r[0])
            for r in db.execute(
                "SELECT chunk_id FROM chunks WHERE tenant=? AND doc_id=?", (tenant, doc_id)
            )
        ]
        db.execute("DELETE FROM edges WHERE _from=? AND tenant=?", (_doc_handle(doc_id), tenant))
        db.executemany(
            "DELETE FROM edges WHERE _from=? AND tenant=?", [(h, tenant) for h in handles]
        )
        db.execute("DELETE FROM chunks WHERE tenant=? AND doc_id=?", (tenant, doc_id))

    def set_statuses(
        self, tenant: str, documents: Sequence[DocumentInfo]
    ) -> list[DocumentInfo | None]:
        changed: list[str | None] = []
        with self._tx() as db:
            for document in documents:
                if not self.accepts(tenant, document.doc_id, document.version, document.status):
                    changed.append(None)
                    continue
                current = self.get_document(tenant, document.doc_id)
                if current is not None:
                    # A status change keeps what the indexed version knew until it is replaced.
                    document = document.model_copy(
                        update={
                            "chunk_count": current.chunk_count,
                            "metadata": document.metadata or current.metadata,
                            "links_dropped": current.links_dropped,
                        }
                    )
                self._upsert_row(
                    db, tenant, document, current.created_at if current else document.created_at
                )
                changed.append(document.doc_id)
        return [None if d is None else self.get_document(tenant, d) for d in changed]

    def delete_document(self, tenant: str, doc_id: str, version: int) -> DocumentInfo | None:
        with self._tx() as db:
            current = self.get_document(tenant, doc_id)
            if version <= self._deleted_at(tenant, doc_id):
                return None
            if current is not None and current.version > version:
                return None
            self._remove_chunks(db, tenant, doc_id)
            db.execute(
                "DELETE FROM relations WHERE tenant=? AND (source=? OR target=?)",
                (tenant, doc_id, doc_id),
            )
            db.execute("DELETE FROM documents WHERE tenant=? AND doc_id=?", (tenant, doc_id))
            db.execute(
                "INSERT INTO deletions (tenant, doc_id, version) VALUES (?, ?, ?) "
                "ON CONFLICT (tenant, doc_id) DO UPDATE SET version=excluded.version",
                (tenant, doc_id, version),
            )
        # The WAL still holds the pages as they were before: fold it into the file (whose
        # deleted rows are zeroed) and empty it, so the text is nowhere on disk.
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return current

    def get_document(self, tenant: str, doc_id: str) -> DocumentInfo | None:
        row = self.db.execute(
            f"SELECT {_DOC_COLUMNS} FROM documents WHERE tenant=? AND doc_id=?",  # noqa: S608
            (tenant, doc_id),
        ).fetchone()
        return _row_to_info(row) if row else None

    def get_documents(self, tenant: str, doc_ids: Collection[str]) -> dict[str, DocumentInfo]:
        ids = list(doc_ids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            f"SELECT {_DOC_COLUMNS} FROM documents "  # noqa: S608
            f"WHERE tenant=? AND doc_id IN ({marks})",
            (tenant, *ids),
        )
        return {row["doc_id"]: _row_to_info(row) for row in rows}

    def tenants(self) -> list[str]:
        rows = self.db.execute("SELECT DISTINCT tenant FROM documents ORDER BY tenant")
        return [r[0] for r in rows]

    def list_documents(
        self,
        tenant: str,
        collection: str | None = None,
        status: DocumentStatus | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[DocumentInfo], int]:
        where, args = ["tenant=?"], [tenant]
        if collection:
            where.append("collection=?")
            args.append(collection)
        if status:
            where.append("status=?")
            args.append(status)
        clause = " AND ".join(where)
        total = self.db.execute(
            f"SELECT COUNT(*) FROM documents WHERE {clause}",  # noqa: S608
            args,
        ).fetchone()[0]
        rows = self.db.execute(
            f"SELECT {_DOC_COLUMNS} FROM documents WHERE {clause} "  # noqa: S608
            "ORDER BY updated_at DESC, doc_id LIMIT ? OFFSET ?",
            (*args, limit, offset),
        )
        return [_row_to_info(r) for r in rows], int(total)

    def chunk_ids(self, tenant: str, doc_id: str) -> list[str]:
        rows = self.db.execute(
            f"SELECT c.chunk_id {_CHUNKS_OF}",
            (_doc_handle(doc_id), tenant),
        )
        return [r[0] for r in rows]

    def chunk_texts(self, tenant: str, chunk_ids: Collection[str]) -> dict[str, str]:
        ids = list(chunk_ids)
        found: dict[str, str] = {}
        for start in range(0, len(ids), 500):  # under SQLite's limit on bound parameters
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = self.db.execute(
                f"SELECT chunk_id, text FROM chunks WHERE tenant=? AND chunk_id IN ({marks})",  # noqa: S608
                (tenant, *part),
            )
            found.update((r[0], r[1]) for r in rows)
        return found

    def secret(self, name: str) -> bytes:
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO secrets (name, value) VALUES (?, ?)",
                (name, secrets.token_bytes(32)),
            )
            row = db.execute("SELECT value FROM secrets WHERE name=?", (name,)).fetchone()
        return bytes(row[0])

    def chunks(self, tenant: str, doc_id: str) -> list[ChunkText]:
        rows = self.db.execute(
            f"SELECT c.chunk_id, c.position, c.text {_CHUNKS_OF}",
            (_doc_handle(doc_id), tenant),
        )
        return [ChunkText(chunk_id=r[0], position=r[1], text=r[2]) for r in rows]

    def following_chunks(self, tenant: str, chunk_id: str, depth: int) -> list[str]:
        rows = self.db.execute(
            "WITH RECURSIVE walk(handle, depth) AS ("
            "  SELECT ?, 0"
            "  UNION ALL"
            "  SELECT e._to, walk.depth + 1 FROM edges e JOIN walk ON e._from = walk.handle"
            "  WHERE e.kind = 'next' AND e.tenant = ? AND walk.depth < ?"
            ") SELECT substr(handle, 8) FROM walk WHERE depth > 0 ORDER BY depth",
            (_chunk_handle(chunk_id), tenant, depth),
        )
        return [r[0] for r in rows]

    def neighbour_chunks(self, tenant: str, chunk_id: str) -> list[tuple[str, int]]:
        handle = _chunk_handle(chunk_id)
        rows = self.db.execute(
            "SELECT c.chunk_id, c.position FROM edges e JOIN chunks c "
            "ON c.chunk_id = substr(CASE WHEN e._from = ? THEN e._to ELSE e._from END, 8) "
            "WHERE e.kind = 'next' AND e.tenant = ? AND c.tenant = ? "
            "AND (e._from = ? OR e._to = ?) ORDER BY c.position",
            (handle, tenant, tenant, handle, handle),
        )
        return [(r[0], r[1]) for r in rows]

    # --- relations ----------------------------------------------------------------------------
    def put_relation(self, tenant: str, relation: Relation) -> Relation | None:
        with self._tx() as db:
            found = self.get_documents(tenant, {relation.source, relation.target or ""})
            if relation.source not in found or relation.target not in found:
                return None
            self._insert_relation(db, tenant, relation)
        return relation

    def delete_relation(self, tenant: str, relation_id: str) -> bool:
        with self._tx() as db:
            removed = db.execute(
                "DELETE FROM relations WHERE tenant=? AND relation_id=?", (tenant, relation_id)
            ).rowcount
        return removed > 0

    def relations(self, tenant: str, doc_id: str) -> list[Relation]:
        rows = self.db.execute(
            f"SELECT {_RELATION_COLUMNS} FROM relations "  # noqa: S608
            "WHERE tenant=? AND (source=? OR target=?) ORDER BY created_at, relation_id",
            (tenant, doc_id, doc_id),
        )
        return [Relation(**dict(r)) for r in rows]

    def replace_similar(self, tenant: str, doc_id: str, relations: Sequence[Relation]) -> None:
        with self._tx() as db:
            db.execute(
                "DELETE FROM relations WHERE tenant=? AND source=? AND origin='similar'",
                (tenant, doc_id),
            )
            present = self.get_documents(tenant, {doc_id} | {r.target or "" for r in relations})
            if doc_id not in present:
                return  # deleted meanwhile
            for relation in relations:
                if relation.target in present:
                    self._insert_relation(db, tenant, relation)

    def traverse(
        self,
        tenant: str,
        doc_id: str,
        depth: int,
        direction: Direction = "any",
        kinds: Collection[str] | None = None,
    ) -> tuple[list[GraphNode], list[Relation]]:
        kinds = sorted(set(kinds or ()))
        kind_filter = f" AND r.kind IN ({','.join('?' * len(kinds))})" if kinds else ""
        follow = {
            "out": "r.source = walk.doc",
            "in": "r.target = walk.doc",
            "any": "(r.source = walk.doc OR r.target = walk.doc)",
        }[direction]
        # UNION (not UNION ALL) keeps each (document, hops) once, and hops stop at ``depth``:
        # a cycle ends there instead of going round.
        rows = self.db.execute(
            "WITH RECURSIVE walk(doc, hops) AS ("  # noqa: S608
            "  SELECT ?, 0"
            "  UNION"
            "  SELECT CASE WHEN r.source = walk.doc THEN r.target ELSE r.source END, walk.hops + 1"
            f"  FROM walk JOIN relations r ON r.tenant = ? AND r.target IS NOT NULL AND {follow}"
            f"  WHERE walk.hops < ?{kind_filter}"
            ") SELECT d.doc_id, d.filename, d.collection, d.status, MIN(walk.hops) AS hops "
            "FROM walk JOIN documents d ON d.tenant = ? AND d.doc_id = walk.doc "
            "GROUP BY d.doc_id ORDER BY hops, d.doc_id",
            (doc_id, tenant, depth, *kinds, tenant),
        ).fetchall()
        if not rows or rows[0]["doc_id"] != doc_id:
            return [], []
        nodes = [
            GraphNode(
                doc_id=r["doc_id"],
                filename=r["filename"],
                collection=r["collection"],
                status=r["status"],
                depth=r["hops"],
            )
            for r in rows
        ]
        ids = [n.doc_id for n in nodes]
        edges: list[Relation] = []
        for start in range(0, len(ids), 400):  # under SQLite's limit on bound parameters
            part = ids[start : start + 400]
            marks = ",".join("?" * len(part))
            edges += [
                Relation(**dict(r))
                for r in self.db.execute(
                    f"SELECT {_RELATION_COLUMNS} FROM relations r "  # noqa: S608
                    f"WHERE r.tenant = ? AND r.source IN ({marks}) AND r.target IS NOT NULL"
                    f"{kind_filter}",
                    (tenant, *part, *kinds),
                )
            ]
        members = set(ids)
        edges = [e for e in edges if e.target in members]
        return nodes, sorted(edges, key=lambda e: (e.created_at, e.relation_id))

    def counts_by_status(self, tenant: str | None = None) -> dict[str, int]:
        if tenant is None:
            rows = self.db.execute("SELECT status, COUNT(*) FROM documents GROUP BY status")
        else:
            rows = self.db.execute(
                "SELECT status, COUNT(*) FROM documents WHERE tenant=? GROUP BY status", (tenant,)
            )
        return {r[0]: int(r[1]) for r in rows}

    # --- session context ----------------------------------------------------------------------
    def add_context(self, tenant: str, session_id: str, content: str) -> list[ContextItem]:
        with self._tx() as db:
            db.execute(
                "INSERT INTO session_context (tenant, session_id, content, at) VALUES (?, ?, ?, ?)",
                (tenant, session_id, content, time.time()),
            )
        return self.get_context(tenant, session_id)

    def get_context(self, tenant: str, session_id: str) -> list[ContextItem]:
        rows = self.db.execute(
            "SELECT content, at FROM session_context WHERE tenant=? AND session_id=? ORDER BY id",
            (tenant, session_id),
        )
        return [ContextItem(content=r[0], at=r[1]) for r in rows]

    def clear_context(self, tenant: str, session_id: str) -> int:
        removed = 0
        with self._tx() as db:
            for table in ("session_context", "session_turns"):
                removed += db.execute(
                    f"DELETE FROM {table} WHERE tenant=? AND session_id=?",  # noqa: S608
                    (tenant, session_id),
                ).rowcount
        return removed

    def add_turn(self, tenant: str, session_id: str, turn: SessionTurn) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO session_turns (tenant, session_id, request_id, turn) "
                "VALUES (?, ?, ?, ?)",
                (tenant, session_id, turn.request_id, turn.model_dump_json()),
            )

    def get_turns(self, tenant: str, session_id: str, limit: int) -> list[SessionTurn]:
        rows = self.db.execute(
            "SELECT turn FROM session_turns WHERE tenant=? AND session_id=? "
            "ORDER BY id DESC LIMIT ?",
            (tenant, session_id, limit),
        ).fetchall()
        return [SessionTurn.model_validate_json(r[0]) for r in reversed(rows)]

    def close(self) -> None:
        self.db.close()
