"""``VectorIndex`` on Milvus: a Milvus Lite folder in this process, or a Milvus server URI
(``hades.milvus_backends`` makes the calls)."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from hades.analysis import bm25_terms, sealed_terms
from hades.milvus_backends import DenseIndex, EmbeddedMilvus, Layout, MilvusBackend, ServerMilvus
from hades.protocols import ChunkRecord, SearchQuery, VectorHit
from schemas.ids import model_fingerprint

_TEXT_MAX_BYTES = 65_535
_HIT_LIMIT = 16_384  # Milvus' own cap on limit
# The collection's property naming the model its vectors came from (``claim_model``)
_MODEL_PROPERTY = "olympus.model"


def building_name(collection: str) -> str:
    """Where ``olympus reindex`` fills a collection's next vectors before they take its name."""
    return f"{collection}__building"


def kept_name(collection: str, model: str | None) -> str:
    """Where a collection's vectors go when another model's take its place."""
    return f"{collection}__{model_fingerprint(model or '') or 'unnamed'}"


def _fit(text: str, max_bytes: int = _TEXT_MAX_BYTES) -> str:
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", errors="ignore")


def _unit(vector: Sequence[float]) -> list[float]:
    """``vector`` scaled to length 1 (a zero vector as it is): the inner product of two is then
    their cosine, which the exact index computes that way (``MilvusVectorIndex._metric``)."""
    v = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(v))
    return (v / norm if norm > 0 else v).tolist()


def _quote(value: str) -> str:
    return json.dumps(value)


class MilvusVectorIndex:
    """Dense vectors (cosine: exact on Lite, HNSW on a server) and BM25 over stemmed terms,
    fused with RRF for hybrid.

    No text is stored: Milvus keeps a deleted row in its segment files until it compacts them,
    so a document's words would outlive its deletion. BM25 reads the terms sealed with
    ``term_key`` (``sealed_terms``) and the chunk texts come from the graph.

    ``dense_index`` is the dense field's Milvus index type: by default FLAT (exact) on Lite and
    HNSW on a server; an existing collection whose index differs is re-indexed on open.
    """

    def __init__(
        self,
        uri: str,
        dims: int,
        *,
        term_key: bytes,
        collection: str = "olympus_chunks",
        token: str | None = None,
        hybrid_candidates: int = 100,
        rrf_k: int = 60,
        dense_index: str | None = None,
        backend: MilvusBackend | None = None,
        beside: MilvusVectorIndex | None = None,
    ) -> None:
        # ``backend``: how Milvus is called; by default Milvus Lite's engine in this process
        # for a folder, pymilvus for a server's URI. ``beside``: another collection on the same
        # Milvus, over that index's backend (a Lite folder is opened once), which closing this
        # one leaves open.
        self.uri = uri
        self.dims = dims
        self.name = collection
        self.hybrid_candidates = hybrid_candidates
        self.rrf_k = rrf_k
        self.term_key = term_key
        self._owns_backend = beside is None
        self.milvus: MilvusBackend
        if beside is not None:
            self.milvus = beside.milvus
        elif backend is not None:
            self.milvus = backend
        elif "://" in uri:
            self.milvus = ServerMilvus(uri, token)
        else:
            self.milvus = EmbeddedMilvus(Path(uri))
        local = isinstance(self.milvus, EmbeddedMilvus)
        # Milvus Lite searches an HNSW graph with a filter as a mask and stops walking before it
        # reaches most rows a selective filter keeps: at 10k chunks a tenant holding 1% of them
        # got 24% of its true top 10, one document 7% of its chunks (bench/scale.py). So Lite
        # searches exactly (FLAT), which costs about what its HNSW does at every size measured
        # (``_metric``); past ~50k chunks a Milvus server should take over, and it keeps HNSW
        # (its search switches to brute force when a filter keeps few rows).
        self._dense_index = dense_index or ("FLAT" if local else "HNSW")
        # Milvus Lite reads unsealed rows one at a time on every search (``Indexer._flusher``).
        self.seals_while_writing = local
        if beside is None:
            self._finish_a_reindex()
        if not self.milvus.has(collection):
            self.milvus.create(collection, self._layout())
        else:
            self._use_the_dense_index()
            # Its vectors' size, whatever is configured: a live reindex may have changed it.
            self.dims = self._dims_of(collection)
        if "text" in self.milvus.fields(collection):
            raise RuntimeError(
                f"the Milvus collection {collection!r} was made by an older Olympus that kept "
                "chunk text in it: drop it, or set OLYMPUS_INDEXER_MILVUS_COLLECTION to a new "
                "name, and upload the documents again"
            )
        self.milvus.load(collection)
        self.model: str | None = self._model_of(collection)
        # Earlier models' vectors that ``olympus reindex`` kept (``<collection>__<fingerprint>``):
        # deleting a document deletes it there too, so a kept copy never outlives an erasure.
        building = building_name(collection)
        self.kept = [
            n for n in self.milvus.names() if n.startswith(f"{collection}__") and n != building
        ]
        for name in self.kept:
            self.milvus.load(name)
        # A live ``olympus reindex`` fills the next model's vectors here (``begin_next``): a
        # claimed collection under ``building_name`` is one under way, resumed on restart.
        self.next: MilvusVectorIndex | None = None
        if beside is None and self.milvus.has(building):
            claimed = self._model_of(building)
            if claimed:
                self.next = self._beside(building, self._dims_of(building))

    def _finish_a_reindex(self) -> None:
        """``olympus reindex`` claims its new collection for the new model, renames the old one
        away and then the new one into its place: a stop between the two renames leaves the
        collection's name free and the new vectors, complete (claimed), under ``building_name``.
        They take the name now, instead of an empty collection being made in their place."""
        building = building_name(self.name)
        if self.milvus.has(self.name) or not self.milvus.has(building):
            return
        if _MODEL_PROPERTY in self.milvus.properties(building):
            self.milvus.rename(building, self.name)

    def _model_of(self, name: str) -> str | None:
        return self.milvus.properties(name).get(_MODEL_PROPERTY)

    def _dims_of(self, name: str) -> int:
        return int(self.milvus.fields(name)["dense"]["dim"])

    def _beside(self, name: str, dims: int) -> MilvusVectorIndex:
        return MilvusVectorIndex(
            self.uri,
            dims,
            term_key=self.term_key,
            collection=name,
            hybrid_candidates=self.hybrid_candidates,
            rrf_k=self.rrf_k,
            dense_index=self._dense_index,
            beside=self,
        )

    # --- a live re-embedding: the next model's vectors beside these ----------------------------
    def begin_next(self, model: str, dims: int) -> None:
        """From now on ``next`` holds ``model``'s vectors as they are written: a collection of
        its own, kept under ``building_name`` (one another model's run left there is dropped)."""
        if self.next is not None and self.next.model == model and self.next.dims == dims:
            return
        self.cancel_next()
        building = building_name(self.name)
        if self.milvus.has(building):
            self.milvus.drop(building)  # an offline run's, never claimed
        self.next = self._beside(building, dims)
        self.next.claim_model(model)

    def cancel_next(self) -> None:
        if self.next is not None:
            self.milvus.drop(self.next.name)
            self.next = None

    def present(self, tenant: str, doc_ids: Collection[str]) -> dict[str, int]:
        """How many passages of each of these documents the index holds (absent: none)."""
        if len(doc_ids) == 1:  # exact however many it has (one query returns 16,384 rows)
            (doc_id,) = doc_ids
            count = self.count(tenant, doc_id)
            return {doc_id: count} if count else {}
        if not doc_ids:
            return {}
        listed = ", ".join(_quote(d) for d in doc_ids)
        rows = self.milvus.query(
            self.name,
            f"tenant == {_quote(tenant)} and doc_id in [{listed}]",
            ["doc_id"],
            _HIT_LIMIT,
        )
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["doc_id"]] = counts.get(row["doc_id"], 0) + 1
        return counts

    def promote_next(self) -> str:
        """``next`` takes this index's name and place; these vectors are kept under
        ``kept_name`` (deletes still reach them) until ``olympus reindex --drop-old``. A stop
        between the two renames is finished when the index opens (``_finish_a_reindex``)."""
        assert self.next is not None
        following, self.next = self.next, None
        following.flush()
        kept = kept_name(self.name, self.model)
        if self.milvus.has(kept):
            self.milvus.drop(kept)  # an older copy of the same model's vectors
        self.milvus.rename(self.name, kept)
        self.milvus.rename(following.name, self.name)
        self.milvus.load(kept)
        self.milvus.load(self.name)
        self.kept = [*[k for k in self.kept if k != kept], kept]
        self.model, self.dims = following.model, following.dims
        return kept

    def drop_kept(self) -> list[str]:
        """Drop what earlier reindexes kept (``kept``); their names."""
        dropped, self.kept = self.kept, []
        for name in dropped:
            self.milvus.drop(name)
        return dropped

    def claim_model(self, model: str) -> None:
        """Vectors of two models are not comparable: the collection keeps the name of the one
        it was filled with, and the indexer refuses another's (``workers.indexer``)."""
        self.milvus.set_property(self.name, _MODEL_PROPERTY, model)
        self.model = model

    def _layout(self) -> Layout:
        return Layout(
            dims=self.dims,
            dense=self._dense(),
            text_max_bytes=_TEXT_MAX_BYTES,
            bm25={"bm25_k1": 1.2, "bm25_b": 0.75},
        )

    @property
    def _hnsw(self) -> bool:
        return self._dense_index == "HNSW"

    @property
    def _metric(self) -> str:
        """Cosine similarity, either way. Every vector stored and asked with is made unit
        length here (``_unit``), so the exact index takes their inner product: Milvus Lite's
        COSINE normalises every row again on every search, 1.8 ms at 2.5k rows and 117 ms at
        100k against 0.06 and 7 ms for IP (numpy, this machine). A server's HNSW normalises
        once, when it builds, and keeps COSINE."""
        return "COSINE" if self._hnsw else "IP"

    def _dense(self) -> DenseIndex:
        params = {"M": 16, "efConstruction": 200} if self._hnsw else {}
        return DenseIndex(self._dense_index, self._metric, params)

    def _use_the_dense_index(self) -> None:
        """Rebuild a dense index made by an older Olympus when it is not the one to use."""
        if self.milvus.dense_index(self.name) != (self._dense_index, self._metric):
            self.milvus.replace_dense_index(self.name, self._dense())

    def _ann(self, candidates: int) -> dict:
        return {"ef": max(64, candidates)} if self._hnsw else {}

    # --- writes -------------------------------------------------------------------------------
    def upsert(self, chunks: Sequence[ChunkRecord]) -> None:
        if not chunks:
            return
        rows = [
            {
                "id": c.chunk_id,
                "tenant": c.tenant,
                "collection": c.collection,
                "doc_id": c.doc_id,
                "position": c.position,
                "terms": _fit(self._terms(c.text)),
                "dense": _unit(c.vector),
            }
            for c in chunks
        ]
        self.milvus.upsert(self.name, rows)

    def delete_chunks(self, tenant: str, chunk_ids: Collection[str]) -> None:
        if chunk_ids:
            ids = ", ".join(_quote(i) for i in chunk_ids)
            self.milvus.delete(self.name, f"tenant == {_quote(tenant)} and id in [{ids}]")

    def delete_document(self, tenant: str, doc_id: str) -> None:
        following = [self.next.name] if self.next is not None else []
        for name in (self.name, *self.kept, *following):
            self.milvus.delete(name, f"tenant == {_quote(tenant)} and doc_id == {_quote(doc_id)}")

    def flush(self) -> None:
        self.milvus.flush(self.name)

    # --- reads --------------------------------------------------------------------------------
    def count(self, tenant: str, doc_id: str | None = None) -> int:
        expr = f"tenant == {_quote(tenant)}"
        if doc_id is not None:
            expr += f" and doc_id == {_quote(doc_id)}"
        return self.milvus.count(self.name, expr)

    def search(self, query: SearchQuery) -> list[VectorHit]:
        expr = self._filter(query)
        # With one hit per document asked for, fetch more chunks and keep each document's best.
        limit = min(query.top_k * (4 if query.unique_documents else 1), _HIT_LIMIT)
        terms = self._terms(query.text) if query.mode != "dense" else ""
        if query.mode == "dense" or (query.mode == "hybrid" and not terms):
            results = self._dense_hits(query, expr, limit)
        elif query.mode == "bm25":
            results = self._bm25(terms, expr, limit) if terms else []
        else:
            results = self._hybrid(query, terms, expr, limit)
        return self._hits(results, query.mode, query.unique_documents)[: query.top_k]

    def nearest_documents(
        self, tenant: str, vectors: Sequence[Sequence[float]], top_k: int
    ) -> list[list[VectorHit]]:
        if not vectors:
            return []
        limit = min(top_k * 4, _HIT_LIMIT)  # as ``search`` asks for one hit per document
        found = self.milvus.search(
            self.name,
            [self._unit_vector(v, "dense") for v in vectors],
            "dense",
            limit,
            f"tenant == {_quote(tenant)}",
            self._ann(limit),
        )
        return [self._hits(results, "dense", unique=True)[:top_k] for results in found]

    @staticmethod
    def _hits(results: list[dict], mode: str, unique: bool) -> list[VectorHit]:
        hits = [
            VectorHit(
                chunk_id=str(r["id"]),
                doc_id=r["entity"]["doc_id"],
                collection=r["entity"]["collection"],
                position=int(r["entity"]["position"]),
                # Milvus reports BM25 as a negative distance; every score here grows with relevance.
                score=-float(r["distance"]) if mode == "bm25" else float(r["distance"]),
            )
            for r in results
        ]
        if unique:
            best: dict[str, VectorHit] = {}
            for hit in hits:  # best first: the first hit of a document is its best
                best.setdefault(hit.doc_id, hit)
            hits = list(best.values())
        return hits

    def _terms(self, text: str) -> str:
        return sealed_terms(bm25_terms(text), self.term_key)

    def _filter(self, query: SearchQuery) -> str:
        parts = [f"tenant == {_quote(query.tenant)}"]
        if query.collection:
            parts.append(f"collection == {_quote(query.collection)}")
        if query.doc_ids:
            parts.append(f"doc_id in [{', '.join(_quote(d) for d in query.doc_ids)}]")
        return " and ".join(parts)

    def _unit_vector(self, vector: Sequence[float] | None, mode: str) -> list[float]:
        if vector is None or len(vector) != self.dims:
            raise ValueError(f"{mode} search needs a {self.dims}-dimensional vector")
        return _unit(vector)

    def _dense_hits(self, query: SearchQuery, expr: str, limit: int) -> list[dict]:
        vector = self._unit_vector(query.vector, query.mode)
        return self.milvus.search(self.name, [vector], "dense", limit, expr, self._ann(limit))[0]

    def _bm25(self, terms: str, expr: str, limit: int) -> list[dict]:
        return self.milvus.search(self.name, [terms], "sparse", limit, expr, {})[0]

    def _hybrid(self, query: SearchQuery, terms: str, expr: str, limit: int) -> list[dict]:
        candidates = max(limit, self.hybrid_candidates)
        routes = [
            (self._unit_vector(query.vector, query.mode), "dense", self._ann(candidates)),
            (terms, "sparse", {}),
        ]
        return self.milvus.hybrid(self.name, routes, candidates, limit, expr, self.rrf_k)

    def rename(self, name: str) -> None:
        self.milvus.rename(self.name, name)
        self.name = name
        self.milvus.load(name)

    def collections(self) -> list[str]:
        """Every collection of this Milvus (``olympus reindex`` finds the ones it kept)."""
        return sorted(self.milvus.names())

    def drop(self, name: str) -> None:
        self.milvus.drop(name)

    def close(self) -> None:
        if self._owns_backend:
            self.milvus.close()
