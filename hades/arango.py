"""``DocumentGraph`` on ArangoDB through python-arango (the production backend).

Collections ``documents``, ``chunks``, ``sessions``, ``deletions``, ``secrets``, the edge collection
``edges`` and the named graph ``olympus``. Keys are ``<tenant>:<id>``, so tenants never share a
key. Traversals are AQL (``FOR v IN 1..n OUTBOUND ... edges``).

Relations between documents are edges too (``documents`` to ``documents``, with a
``relation_id``); one still waiting for its target has no ``_to`` yet, so it waits in
``pending_relations`` until the document arrives.
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
import time
from collections.abc import Collection, Sequence
from typing import Any

from arango import ArangoClient
from arango.cursor import Cursor
from arango.exceptions import DocumentInsertError

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

_VERTICES = (
    "documents",
    "chunks",
    "sessions",
    "turns",
    "deletions",
    "secrets",
    "pending_relations",
)
_INFO_FIELDS = set(DocumentInfo.model_fields)
_RELATION_FIELDS = set(Relation.model_fields)
_EDGE_DEFINITIONS = [
    {
        "edge_collection": "edges",
        "from_vertex_collections": ["documents", "chunks"],
        "to_vertex_collections": ["chunks", "documents"],
    }
]
_DIRECTIONS = {"out": "OUTBOUND", "in": "INBOUND", "any": "ANY"}


def _key(tenant: str, ident: str) -> str:
    return f"{tenant}:{ident}"


def _info(doc: dict[str, Any]) -> DocumentInfo:
    return DocumentInfo(**{k: v for k, v in doc.items() if k in _INFO_FIELDS})


def _aql(db: Any, query: str, **bind: Any) -> list[Any]:
    cursor = db.aql.execute(query, bind_vars=bind)
    if not isinstance(cursor, Cursor):  # python-arango's async and batch modes are not used
        raise TypeError(f"expected a cursor, got {type(cursor).__name__}")
    return list(cursor)


def _relation(row: dict[str, Any]) -> Relation:
    return Relation(**{k: v for k, v in row.items() if k in _RELATION_FIELDS})


def _relation_body(tenant: str, relation: Relation) -> dict[str, Any]:
    body = relation.model_dump() | {"_key": _key(tenant, relation.relation_id), "tenant": tenant}
    body["_from"] = f"documents/{_key(tenant, relation.source)}"
    if relation.target is not None:
        body["_to"] = f"documents/{_key(tenant, relation.target)}"
    return body


def _get(db: Any, collection: str, key: str) -> dict[str, Any] | None:
    row = db.collection(collection).get(key)
    return row if isinstance(row, dict) else None


def _remove_chunks(db: Any, tenant: str, doc_id: str) -> None:
    """A document's chunks and every edge touching them."""
    _aql(
        db,
        "FOR c IN chunks FILTER c.tenant == @t AND c.doc_id == @d "
        "  FOR e IN edges FILTER e._from == c._id OR e._to == c._id REMOVE e IN edges "
        "OPTIONS { ignoreErrors: true }",
        t=tenant,
        d=doc_id,
    )
    _aql(
        db,
        "FOR c IN chunks FILTER c.tenant == @t AND c.doc_id == @d REMOVE c IN chunks",
        t=tenant,
        d=doc_id,
    )


class ArangoDocumentGraph:
    def __init__(self, url: str, database: str, username: str, password: str) -> None:
        client = ArangoClient(hosts=url)
        system = client.db("_system", username=username, password=password, verify=True)
        if not system.has_database(database):
            system.create_database(database)
        self.db = client.db(database, username=username, password=password)
        for name in _VERTICES:
            if not self.db.has_collection(name):
                self.db.create_collection(name)
        if not self.db.has_collection("edges"):
            self.db.create_collection("edges", edge=True)
        if not self.db.has_graph("olympus"):
            self.db.create_graph("olympus", edge_definitions=_EDGE_DEFINITIONS)
        else:  # a graph made before relations: documents may now point at documents
            self.db.graph("olympus").replace_edge_definition(
                edge_collection="edges",
                from_vertex_collections=["documents", "chunks"],
                to_vertex_collections=["chunks", "documents"],
            )
        self.db.collection("documents").add_persistent_index(["tenant", "collection", "status"])
        self.db.collection("chunks").add_persistent_index(["tenant", "doc_id", "position"])
        self.db.collection("sessions").add_persistent_index(["tenant", "session_id", "seq"])
        self.db.collection("turns").add_persistent_index(["tenant", "session_id", "seq"])
        self.db.collection("edges").add_persistent_index(["tenant", "source"], sparse=True)
        self.db.collection("edges").add_persistent_index(["tenant", "target"], sparse=True)
        self.db.collection("pending_relations").add_persistent_index(
            ["tenant", "ref_kind", "target_ref"]
        )

    def _deleted_at(self, tenant: str, doc_id: str) -> int:
        row = _get(self.db, "deletions", _key(tenant, doc_id))
        return int(row["version"]) if row else -1

    def accepts(self, tenant: str, doc_id: str, version: int, status: DocumentStatus) -> bool:
        if version <= self._deleted_at(tenant, doc_id):
            return False
        current = self.get_document(tenant, doc_id)
        return current is None or newer(version, status, current.version, current.status)

    def put_documents(self, writes: Sequence[DocumentWrite]) -> None:
        # One stream transaction: all the writes, or (on any error) none of them.
        txn = self.db.begin_transaction(write=["documents", "chunks", "edges", "pending_relations"])
        try:
            for write in writes:
                self._put(txn, write)
        except BaseException:
            txn.abort_transaction()
            raise
        txn.commit_transaction()

    def _put(self, db: Any, write: DocumentWrite) -> None:
        tenant, doc = write.tenant, write.document
        key = _key(tenant, doc.doc_id)
        _remove_chunks(db, tenant, doc.doc_id)
        current = _get(db, "documents", key)
        body = doc.model_dump() | {"_key": key, "tenant": tenant}
        if current:
            body["created_at"] = current["created_at"]
        db.collection("documents").insert(body, overwrite=True)
        ordered = sorted(write.chunks, key=lambda c: c.position)
        db.collection("chunks").insert_many(
            [
                {
                    "_key": _key(tenant, c.chunk_id),
                    "tenant": tenant,
                    "doc_id": c.doc_id,
                    "chunk_id": c.chunk_id,
                    "position": c.position,
                    "text": c.text,
                }
                for c in ordered
            ],
            overwrite=True,
        )
        edges = [
            {
                "_from": f"documents/{key}",
                "_to": f"chunks/{_key(tenant, c.chunk_id)}",
                "kind": "has_chunk",
                "tenant": tenant,
            }
            for c in ordered
        ] + [
            {
                "_from": f"chunks/{_key(tenant, a.chunk_id)}",
                "_to": f"chunks/{_key(tenant, b.chunk_id)}",
                "kind": "next",
                "tenant": tenant,
            }
            for a, b in itertools.pairwise(ordered)
        ]
        _aql(
            db,
            "FOR e IN edges FILTER e._from == @d AND e.kind == 'has_chunk' REMOVE e IN edges",
            d=f"documents/{key}",
        )
        if edges:
            db.collection("edges").insert_many(edges)
        self._put_relations(db, tenant, doc, write.relations)

    def _put_relations(
        self, db: Any, tenant: str, doc: DocumentInfo, relations: Sequence[Relation]
    ) -> None:
        """As SQLite's: the document's ingest and found relations become these, and those that
        waited for it point at it now."""
        for collection in ("edges", "pending_relations"):
            _aql(
                db,
                f"FOR r IN {collection} FILTER r.tenant == @t AND r.source == @d "
                f"AND r.origin IN ['ingest', 'found'] REMOVE r IN {collection}",
                t=tenant,
                d=doc.doc_id,
            )
        for relation in relations:
            target = relation.target or self._resolve(db, tenant, doc, relation)
            self._insert_relation(db, tenant, relation.model_copy(update={"target": target}))
        url = doc.metadata.get("url") or doc.metadata.get("source")
        waiting = _aql(
            db,
            "FOR r IN pending_relations FILTER r.tenant == @t AND r.source != @d AND ("
            "(r.ref_kind == 'doc_id' AND r.target_ref == @d) OR "
            "(r.ref_kind == 'name' AND r.target_ref == @name) OR "
            "(r.ref_kind == 'url' AND r.target_ref == @url)) REMOVE r IN pending_relations "
            "RETURN OLD",
            t=tenant,
            d=doc.doc_id,
            name=doc.filename,
            url=url,
        )
        for row in waiting:
            self._insert_relation(
                db, tenant, _relation(row).model_copy(update={"target": doc.doc_id})
            )

    @staticmethod
    def _resolve(db: Any, tenant: str, doc: DocumentInfo, relation: Relation) -> str | None:
        match = {
            "doc_id": "d.doc_id == @ref",
            "name": "d.filename == @ref",
            "url": "(d.metadata.url == @ref OR d.metadata.source == @ref)",
        }[relation.ref_kind or "doc_id"]
        rows = _aql(
            db,
            f"FOR d IN documents FILTER d.tenant == @t AND d.doc_id != @self AND {match} "
            "SORT d.collection == @c DESC, d.updated_at DESC LIMIT 1 RETURN d.doc_id",
            t=tenant,
            self=doc.doc_id,
            ref=relation.target_ref,
            c=doc.collection,
        )
        return rows[0] if rows else None

    @staticmethod
    def _insert_relation(db: Any, tenant: str, relation: Relation) -> None:
        body = _relation_body(tenant, relation)
        collection = "edges" if relation.target is not None else "pending_relations"
        current = _get(db, collection, body["_key"])
        if current is not None and current.get("origin") == "api":
            body["origin"] = "api"  # declared over the API and again with the document: kept
        db.collection(collection).insert(body, overwrite=True)

    def set_statuses(
        self, tenant: str, documents: Sequence[DocumentInfo]
    ) -> list[DocumentInfo | None]:
        return [self._set_status(tenant, document) for document in documents]

    def _set_status(self, tenant: str, document: DocumentInfo) -> DocumentInfo | None:
        if not self.accepts(tenant, document.doc_id, document.version, document.status):
            return None
        key = _key(tenant, document.doc_id)
        current = _get(self.db, "documents", key)
        body = document.model_dump() | {"_key": key, "tenant": tenant}
        if current:
            body["created_at"] = current["created_at"]
            body["chunk_count"] = current.get("chunk_count", 0)
            body["metadata"] = document.metadata or current.get("metadata", {})
            body["content_hash"] = document.content_hash or current.get("content_hash")
            body["links_dropped"] = current.get("links_dropped", 0)
        self.db.collection("documents").insert(body, overwrite=True)
        return self.get_document(tenant, document.doc_id)

    def delete_document(self, tenant: str, doc_id: str, version: int) -> DocumentInfo | None:
        current = self.get_document(tenant, doc_id)
        if version <= self._deleted_at(tenant, doc_id):
            return None
        if current is not None and current.version > version:
            return None
        _remove_chunks(self.db, tenant, doc_id)
        key = _key(tenant, doc_id)
        handle = f"documents/{key}"
        _aql(
            self.db,
            "FOR e IN edges FILTER e._from == @d OR e._to == @d REMOVE e IN edges",
            d=handle,
        )
        _aql(
            self.db,
            "FOR r IN pending_relations FILTER r.tenant == @t AND r.source == @d "
            "REMOVE r IN pending_relations",
            t=tenant,
            d=doc_id,
        )
        self.db.collection("documents").delete(key, ignore_missing=True)
        self.db.collection("deletions").insert(
            {"_key": key, "tenant": tenant, "doc_id": doc_id, "version": version}, overwrite=True
        )
        return current

    def get_document(self, tenant: str, doc_id: str) -> DocumentInfo | None:
        row = _get(self.db, "documents", _key(tenant, doc_id))
        return _info(row) if row else None

    def get_documents(self, tenant: str, doc_ids: Collection[str]) -> dict[str, DocumentInfo]:
        rows = _aql(
            self.db,
            "FOR d IN documents FILTER d._key IN @keys RETURN d",
            keys=[_key(tenant, d) for d in doc_ids],
        )
        return {r["doc_id"]: _info(r) for r in rows}

    def tenants(self) -> list[str]:
        return list(_aql(self.db, "FOR d IN documents COLLECT t = d.tenant SORT t RETURN t"))

    def list_documents(
        self,
        tenant: str,
        collection: str | None = None,
        status: DocumentStatus | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[DocumentInfo], int]:
        filters = (
            "FILTER d.tenant == @t AND (@c == null OR d.collection == @c) "
            "AND (@s == null OR d.status == @s)"
        )
        total = _aql(
            self.db,
            f"RETURN LENGTH(FOR d IN documents {filters} RETURN 1)",
            t=tenant,
            c=collection,
            s=status,
        )[0]
        rows = _aql(
            self.db,
            f"FOR d IN documents {filters} SORT d.updated_at DESC, d.doc_id LIMIT @o, @l RETURN d",
            t=tenant,
            c=collection,
            s=status,
            o=offset,
            l=limit,
        )
        return [_info(r) for r in rows], int(total)

    def chunk_ids(self, tenant: str, doc_id: str) -> list[str]:
        return _aql(
            self.db,
            "FOR v, e IN 1..1 OUTBOUND @start edges FILTER e.kind == 'has_chunk' "
            "SORT v.position RETURN v.chunk_id",
            start=f"documents/{_key(tenant, doc_id)}",
        )

    def chunk_texts(self, tenant: str, chunk_ids: Collection[str]) -> dict[str, str]:
        rows = _aql(
            self.db,
            "FOR c IN chunks FILTER c._key IN @keys AND c.tenant == @t RETURN [c.chunk_id, c.text]",
            keys=[_key(tenant, i) for i in chunk_ids],
            t=tenant,
        )
        return {r[0]: r[1] for r in rows}

    def secret(self, name: str) -> bytes:
        # overwrite=False: of two indexers starting at once, the first key written is kept.
        with contextlib.suppress(DocumentInsertError):
            self.db.collection("secrets").insert(
                {"_key": name, "value": secrets.token_hex(32)}, overwrite=False
            )
        row = _get(self.db, "secrets", name)
        if row is None:
            raise LookupError(f"the secret {name!r} was written but cannot be read back")
        return bytes.fromhex(row["value"])

    def chunks(self, tenant: str, doc_id: str) -> list[ChunkText]:
        rows = _aql(
            self.db,
            "FOR v, e IN 1..1 OUTBOUND @start edges FILTER e.kind == 'has_chunk' "
            "SORT v.position RETURN {chunk_id: v.chunk_id, position: v.position, text: v.text}",
            start=f"documents/{_key(tenant, doc_id)}",
        )
        return [ChunkText(**r) for r in rows]

    def following_chunks(self, tenant: str, chunk_id: str, depth: int) -> list[str]:
        if depth < 1:
            return []
        return _aql(
            self.db,
            "FOR v, e, p IN 1..@n OUTBOUND @start edges "
            "PRUNE e != null AND e.kind != 'next' FILTER e.kind == 'next' "
            "SORT LENGTH(p.edges) RETURN v.chunk_id",
            start=f"chunks/{_key(tenant, chunk_id)}",
            n=depth,
        )

    def neighbour_chunks(self, tenant: str, chunk_id: str) -> list[tuple[str, int]]:
        rows = _aql(
            self.db,
            "FOR v, e IN 1..1 ANY @start edges FILTER e.kind == 'next' AND v.tenant == @t "
            "SORT v.position RETURN [v.chunk_id, v.position]",
            start=f"chunks/{_key(tenant, chunk_id)}",
            t=tenant,
        )
        return [(r[0], r[1]) for r in rows]

    # --- relations ----------------------------------------------------------------------------
    def put_relation(self, tenant: str, relation: Relation) -> Relation | None:
        found = self.get_documents(tenant, {relation.source, relation.target or ""})
        if relation.source not in found or relation.target not in found:
            return None
        self._insert_relation(self.db, tenant, relation)
        return relation

    def delete_relation(self, tenant: str, relation_id: str) -> bool:
        key = _key(tenant, relation_id)
        removed = False
        for collection in ("edges", "pending_relations"):
            removed |= bool(self.db.collection(collection).delete(key, ignore_missing=True))
        return removed

    def relations(self, tenant: str, doc_id: str) -> list[Relation]:
        rows = _aql(
            self.db,
            "FOR r IN UNION("
            "  (FOR e IN edges FILTER e.tenant == @t AND e.relation_id != null "
            "     AND (e.source == @d OR e.target == @d) RETURN e),"
            "  (FOR p IN pending_relations FILTER p.tenant == @t AND p.source == @d RETURN p)"
            ") SORT r.created_at, r.relation_id RETURN r",
            t=tenant,
            d=doc_id,
        )
        return [_relation(r) for r in rows]

    def replace_similar(self, tenant: str, doc_id: str, relations: Sequence[Relation]) -> None:
        _aql(
            self.db,
            "FOR e IN edges FILTER e.tenant == @t AND e.source == @d AND e.origin == 'similar' "
            "REMOVE e IN edges",
            t=tenant,
            d=doc_id,
        )
        present = self.get_documents(tenant, {doc_id} | {r.target or "" for r in relations})
        if doc_id not in present:
            return
        for relation in relations:
            if relation.target in present:
                self._insert_relation(self.db, tenant, relation)

    def traverse(
        self,
        tenant: str,
        doc_id: str,
        depth: int,
        direction: Direction = "any",
        kinds: Collection[str] | None = None,
    ) -> tuple[list[GraphNode], list[Relation]]:
        if self.get_document(tenant, doc_id) is None:
            return [], []
        # Conditions on every edge of the path are applied while traversing (ArangoDB's
        # traversal prefilter): chunk edges and other kinds are never walked, and with global
        # vertex uniqueness in breadth-first order each document comes once, at its fewest hops.
        kind_filter = "AND p.edges[*].kind ALL IN @kinds " if kinds else ""
        bind: dict[str, Any] = {
            "start": f"documents/{_key(tenant, doc_id)}",
            "n": depth,
            "t": tenant,
        }
        if kinds:
            bind["kinds"] = sorted(set(kinds))
        rows = _aql(
            self.db,
            f"FOR v, e, p IN 0..@n {_DIRECTIONS[direction]} @start edges "
            "OPTIONS {order: 'bfs', uniqueVertices: 'global'} "
            f"FILTER p.edges[*].relation_id ALL != null {kind_filter}"
            "FILTER v.tenant == @t "
            "RETURN {doc_id: v.doc_id, filename: v.filename, collection: v.collection, "
            "status: v.status, depth: LENGTH(p.edges)}",
            **bind,
        )
        nodes = [GraphNode(**r) for r in rows]
        ids = [n.doc_id for n in nodes]
        edges = _aql(
            self.db,
            "FOR e IN edges FILTER e.tenant == @t AND e.relation_id != null "
            "AND e.source IN @ids AND e.target IN @ids "
            + ("AND e.kind IN @kinds " if kinds else "")
            + "SORT e.created_at, e.relation_id RETURN e",
            t=tenant,
            ids=ids,
            **({"kinds": sorted(set(kinds))} if kinds else {}),
        )
        return nodes, [_relation(e) for e in edges]

    def counts_by_status(self, tenant: str | None = None) -> dict[str, int]:
        rows = _aql(
            self.db,
            "FOR d IN documents FILTER @t == null OR d.tenant == @t "
            "COLLECT s = d.status WITH COUNT INTO n RETURN [s, n]",
            t=tenant,
        )
        return {s: int(n) for s, n in rows}

    def add_context(self, tenant: str, session_id: str, content: str) -> list[ContextItem]:
        self.db.collection("sessions").insert(
            {
                "tenant": tenant,
                "session_id": session_id,
                "content": content,
                "at": time.time(),
                "seq": time.time_ns(),
            }
        )
        return self.get_context(tenant, session_id)

    def get_context(self, tenant: str, session_id: str) -> list[ContextItem]:
        rows = _aql(
            self.db,
            "FOR s IN sessions FILTER s.tenant == @t AND s.session_id == @s SORT s.seq "
            "RETURN {content: s.content, at: s.at}",
            t=tenant,
            s=session_id,
        )
        return [ContextItem(**r) for r in rows]

    def clear_context(self, tenant: str, session_id: str) -> int:
        removed = 0
        for collection in ("sessions", "turns"):
            removed += len(
                _aql(
                    self.db,
                    f"FOR s IN {collection} FILTER s.tenant == @t AND s.session_id == @s "
                    f"REMOVE s IN {collection} RETURN 1",
                    t=tenant,
                    s=session_id,
                )
            )
        return removed

    def add_turn(self, tenant: str, session_id: str, turn: SessionTurn) -> None:
        self.db.collection("turns").insert(
            {
                "_key": _key(tenant, turn.request_id),
                "tenant": tenant,
                "session_id": session_id,
                "seq": time.time_ns(),
                "turn": turn.model_dump(mode="json"),
            },
            overwrite_mode="ignore",
        )

    def get_turns(self, tenant: str, session_id: str, limit: int) -> list[SessionTurn]:
        rows = _aql(
            self.db,
            "FOR s IN turns FILTER s.tenant == @t AND s.session_id == @s "
            "SORT s.seq DESC LIMIT @n RETURN s.turn",
            t=tenant,
            s=session_id,
            n=limit,
        )
        return [SessionTurn.model_validate(r) for r in reversed(rows)]

    def close(self) -> None:
        return None
