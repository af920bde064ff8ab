"""Every H.A.D.E.S. backend against the one contract (``tests/support/hades_contract.py``)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from hades import ChunkRecord, DocumentGraph, SearchQuery, VectorIndex
from hades.milvus import MilvusVectorIndex, building_name, kept_name
from hades.milvus_backends import DenseIndex, ServerMilvus
from hades.protocols import DocumentWrite
from hades.reindex import reindex
from hades.sqlite import SqliteDocumentGraph
from tests.support.hades_contract import (
    DIMS,
    TERM_KEY,
    DocumentGraphContract,
    VectorIndexContract,
    chunks_of,
    info,
    vec,
)

pytestmark = pytest.mark.integration


def _arango_url() -> str | None:
    url = os.environ.get("OLYMPUS_ARANGO_URL")
    if not url:
        return None
    try:
        urllib.request.urlopen(f"{url}/_api/version", timeout=2)  # noqa: S310
    except OSError:
        return None
    return url


ARANGO_SKIP = pytest.mark.skipif(
    _arango_url() is None,
    reason="no ArangoDB server answers (set OLYMPUS_ARANGO_URL); none can be installed on this "
    "machine and testcontainers needs a Docker engine, which it lacks",
)


class TestMilvusLite(VectorIndexContract):
    @pytest.fixture
    def vectors(self, tmp_path: Path) -> Iterator[VectorIndex]:
        index = MilvusVectorIndex(str(tmp_path / "milvus.db"), DIMS, term_key=TERM_KEY)
        yield index
        index.close()

    def test_vectors_survive_reopening(self, tmp_path: Path) -> None:
        path = str(tmp_path / "reopen.db")
        index = MilvusVectorIndex(path, DIMS, term_key=TERM_KEY)
        index.upsert(chunks_of("t", "d", ["persisted text"]))
        index.flush()
        index.close()
        index = MilvusVectorIndex(path, DIMS, term_key=TERM_KEY)
        assert index.search(SearchQuery("t", "bm25", 1, text="persisted"))[0].doc_id == "d"
        index.close()

    def test_a_small_tenant_and_one_document_find_all_theirs_after_reopening(
        self, tmp_path: Path
    ) -> None:
        """A filter that keeps few rows must not cost recall. Once reopened, Milvus Lite searched
        an HNSW graph with the filter as a mask, and the walk stopped before it reached most of
        the kept rows: a tenant holding 1% of 5,000 chunks got 45% of its true top 10."""
        dims, rng = 64, np.random.default_rng(7)
        centres = rng.standard_normal((20, dims))

        def records(tenant: str, doc: str, n: int) -> list[ChunkRecord]:
            v = centres[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, dims))
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            return [
                ChunkRecord(f"{doc}-{i}", tenant, "c", doc, i, f"passage {i}", v[i].tolist())
                for i in range(n)
            ]

        path = str(tmp_path / "filtered.db")
        index = MilvusVectorIndex(path, dims, term_key=TERM_KEY)
        few = records("few", "small", 30)
        one = records("many", "one", 12)
        index.upsert(few + one)
        for d in range(40):
            index.upsert(records("many", f"d{d}", 100))
        index.flush()
        index.close()
        index = MilvusVectorIndex(path, dims, term_key=TERM_KEY)
        try:
            kept = np.array([c.vector for c in few])
            for query in rng.standard_normal((10, dims)):
                exact = {few[i].chunk_id for i in np.argsort(-(kept @ query))[:10]}
                hits = index.search(SearchQuery("few", "dense", 10, vector=query.tolist()))
                assert {h.chunk_id for h in hits} == exact
                hits = index.search(
                    SearchQuery("many", "dense", 100, vector=query.tolist(), doc_ids=("one",))
                )
                assert {h.chunk_id for h in hits} == {c.chunk_id for c in one}
        finally:
            index.close()

    def test_the_hnsw_index_an_older_olympus_made_is_rebuilt_exact(self, tmp_path: Path) -> None:
        path = str(tmp_path / "older.db")
        index = MilvusVectorIndex(path, DIMS, term_key=TERM_KEY)
        chunks = chunks_of("t", "d", ["kept through the rebuild", "and this one"])
        index.upsert(chunks)
        index.flush()
        index.milvus.replace_dense_index(index.name, DenseIndex("HNSW", "COSINE", {}))
        assert index.milvus.dense_index(index.name) == ("HNSW", "COSINE")
        index.close()
        index = MilvusVectorIndex(path, DIMS, term_key=TERM_KEY)
        try:
            assert index.milvus.dense_index(index.name) == ("FLAT", "IP")
            for target in chunks:
                hits = index.search(SearchQuery("t", "dense", 1, vector=target.vector))
                assert [h.chunk_id for h in hits] == [target.chunk_id]
                assert hits[0].score == pytest.approx(1.0, abs=1e-5)
            assert index.count("t") == 2
        finally:
            index.close()

    def test_dense_scores_are_cosines_whatever_the_vectors_length(self, tmp_path: Path) -> None:
        """The exact index takes inner products (Milvus Lite's COSINE normalises every row on
        every search): what is stored and asked with is made unit length first."""
        index = MilvusVectorIndex(str(tmp_path / "cosine.db"), DIMS, term_key=TERM_KEY)
        try:
            a, b = np.array(vec(1)), np.array(vec(2))
            long = chunks_of("t", "d", ["one passage"])[0]
            index.upsert([dataclasses.replace(long, vector=(7.5 * a).tolist())])
            query = (0.2 * (a + b)).tolist()
            hits = index.search(SearchQuery("t", "dense", 1, vector=query))
            cosine = float(a @ (a + b)) / float(np.linalg.norm(a + b))
            assert hits[0].score == pytest.approx(cosine, abs=1e-5)
        finally:
            index.close()

    def test_its_files_hold_no_word_of_the_text(self, tmp_path: Path) -> None:
        """Milvus keeps a deleted row in its segments and log until it compacts them: what it
        keeps must not be the text (nor its stemmed words), or a deletion would not erase."""
        path = tmp_path / "sealed.db"
        index = MilvusVectorIndex(str(path), DIMS, term_key=TERM_KEY)
        index.upsert(chunks_of("t", "d", ["Wombatcanary9 burrows under eucalyptus"]))
        assert index.search(SearchQuery("t", "bm25", 1, text="wombatcanary9"))[0].doc_id == "d"
        index.flush()
        index.delete_document("t", "d")
        index.close()
        files = [f for f in path.rglob("*") if f.is_file()]
        assert files
        for needle in (b"ombatcanary9", b"eucalyptu", b"burrow"):
            assert [f.name for f in files if needle in f.read_bytes().lower()] == [], needle

    def test_a_reindex_stopped_between_its_renames_is_finished_at_the_next_open(
        self, tmp_path: Path
    ) -> None:
        """``olympus reindex`` renames the old collection away, then the new one into its place.
        Stopped between the two, the next start found the name free and made an empty
        collection there: every search came back empty until someone renamed by hand."""
        path = str(tmp_path / "moved.db")
        graph = SqliteDocumentGraph(tmp_path / "graph.sqlite3")
        chunks = chunks_of("t", "d", ["wombats dig burrows", "koalas eat leaves"])
        graph.put_documents([DocumentWrite("t", info("d", 1, chunks=2), chunks)])
        current = MilvusVectorIndex(path, DIMS, term_key=TERM_KEY)
        current.upsert(chunks)
        current.claim_model("old@0123456789abcdef")
        target = MilvusVectorIndex(
            path, DIMS, term_key=TERM_KEY, collection=building_name(current.name), beside=current
        )

        def stopped(name: str) -> None:
            raise KeyboardInterrupt  # the process ends here, before the new name is taken

        target.rename = stopped  # type: ignore[method-assign]

        def flipped(texts: Sequence[str]) -> np.ndarray:  # the "new model": other vectors
            return -np.array([vec(hash(t) % 997) for t in texts])

        with pytest.raises(KeyboardInterrupt):
            reindex(graph, current, target, "new@fedcba9876543210", flipped)
        target.close()
        current.close()
        graph.close()

        index = MilvusVectorIndex(path, DIMS, term_key=TERM_KEY)
        try:
            assert index.model == "new@fedcba9876543210"
            assert index.count("t") == 2
            new = (-np.array(chunks[1].vector)).tolist()
            hits = index.search(SearchQuery("t", "dense", 1, vector=new))
            assert [h.chunk_id for h in hits] == [chunks[1].chunk_id]
            kept = kept_name(index.name, "old@0123456789abcdef")
            assert set(index.collections()) == {index.name, kept}
        finally:
            index.close()

    def test_another_key_finds_nothing_by_terms(self, tmp_path: Path) -> None:
        path = str(tmp_path / "keyed.db")
        index = MilvusVectorIndex(path, DIMS, term_key=TERM_KEY)
        index.upsert(chunks_of("t", "d", ["koalas sleep most of the day"]))
        index.flush()
        index.close()
        index = MilvusVectorIndex(path, DIMS, term_key=b"another key of thirty-two bytes!")
        assert index.search(SearchQuery("t", "bm25", 1, text="koalas sleep")) == []
        index.close()


@contextlib.contextmanager
def lite_server(folder: Path) -> Iterator[str]:
    """Milvus Lite's own gRPC server on ``folder``: the stand-in for a Milvus server that
    pymilvus (``ServerMilvus``) talks to. On a unix socket, named short (at most 107 bytes)."""
    from milvus_lite.adapter.grpc.server import start_server_in_thread

    sockets = Path(tempfile.mkdtemp(prefix="milvus-"))
    server, db, _ = start_server_in_thread(
        str(folder), host=f"unix:{sockets / 'milvus.sock'}", port=0
    )
    try:
        yield f"unix:{sockets / 'milvus.sock'}:0"
    finally:
        server.stop(grace=2)
        db.close()
        shutil.rmtree(sockets, ignore_errors=True)


def over_pymilvus(uri: str, dims: int = DIMS) -> MilvusVectorIndex:
    # FLAT as on Lite's engine: Lite's HNSW loses rows a filter keeps (bench/scale.py).
    backend = ServerMilvus(uri, strong=False)
    return MilvusVectorIndex(uri, dims, term_key=TERM_KEY, dense_index="FLAT", backend=backend)


class TestMilvusThroughPymilvus(VectorIndexContract):
    """The calls a Milvus server gets (pymilvus: ``ServerMilvus``), against Milvus Lite's gRPC
    server: no Milvus server can run on this machine."""

    @pytest.fixture
    def vectors(self, tmp_path: Path) -> Iterator[VectorIndex]:
        with lite_server(tmp_path / "milvus.db") as uri:
            index = over_pymilvus(uri)
            yield index
            index.close()


def test_lite_in_process_finds_what_pymilvus_finds_in_every_mode(tmp_path):
    """The engine called in-process and pymilvus through Lite's server read the same folder:
    the same hits in the same order with the same scores, hybrid's rank fusion included."""
    rng = np.random.default_rng(3)
    words = ["wombat", "koala", "burrow", "leaf", "night", "sleep", "dig", "tree", "stone"]
    texts = [" ".join(rng.choice(words, 6)) for _ in range(300)]
    chunks = [
        dataclasses.replace(c, vector=rng.standard_normal(DIMS).tolist())
        for d in range(30)
        for c in chunks_of("t", f"d{d}", texts[d * 10 : (d + 1) * 10])
    ]
    queries = [
        SearchQuery(
            "t",
            mode,
            top_k,
            text=" ".join(rng.choice(words, 3)),
            vector=rng.standard_normal(DIMS).tolist(),
            doc_ids=("d1", "d2", "d7") if top_k == 5 else None,
            unique_documents=top_k == 3,
        )
        for mode in ("dense", "bm25", "hybrid")
        for top_k in (3, 5, 10, 50)
    ]
    path = tmp_path / "same.db"
    index = MilvusVectorIndex(str(path), DIMS, term_key=TERM_KEY)
    index.upsert(chunks[:150])
    index.flush()
    index.upsert(chunks[150:])  # some sealed, some not
    in_process = [index.search(q) for q in queries]
    index.close()
    with lite_server(path) as uri:
        index = over_pymilvus(uri)
        through = [index.search(q) for q in queries]
        index.close()
    for query, ours, theirs in zip(queries, in_process, through, strict=True):
        assert ours, query
        assert [h.chunk_id for h in ours] == [h.chunk_id for h in theirs], query
        assert [h.score for h in ours] == pytest.approx([h.score for h in theirs]), query


def test_a_folder_an_older_olympus_made_through_pymilvus_opens_in_process(tmp_path):
    """Olympus reached Milvus Lite through pymilvus and Lite's gRPC server until it called the
    engine itself: a folder made that way opens in-process with the same schema and indexes,
    and its rows are found. One made in-process is the one pymilvus makes."""
    from milvus_lite import MilvusLite

    def layout(folder: Path) -> tuple:
        db = MilvusLite(str(folder))
        try:
            col = db.get_collection("olympus_chunks")
            return col.schema, {f: col.get_index_info(f) for f in col.list_indexes()}
        finally:
            db.close()

    chunks = chunks_of("t", "d", ["wombats dig burrows", "koalas eat leaves"])
    with lite_server(tmp_path / "older.db") as uri:
        index = over_pymilvus(uri)
        index.upsert(chunks)
        index.flush()
        index.close()
    MilvusVectorIndex(str(tmp_path / "newer.db"), DIMS, term_key=TERM_KEY).close()
    assert layout(tmp_path / "older.db") == layout(tmp_path / "newer.db")
    index = MilvusVectorIndex(str(tmp_path / "older.db"), DIMS, term_key=TERM_KEY)
    try:
        assert [h.doc_id for h in index.search(SearchQuery("t", "bm25", 1, text="koala"))] == ["d"]
        hits = index.search(SearchQuery("t", "dense", 1, vector=chunks[0].vector))
        assert [h.chunk_id for h in hits] == [chunks[0].chunk_id]
    finally:
        index.close()


class TestSqliteGraph(DocumentGraphContract):
    @pytest.fixture
    def graph(self, tmp_path: Path) -> Iterator[DocumentGraph]:
        store = SqliteDocumentGraph(tmp_path / "graph.sqlite3")
        yield store
        store.close()

    def test_sqlite_graph_survives_reopening(self, tmp_path: Path) -> None:
        path = tmp_path / "g.sqlite3"
        graph = SqliteDocumentGraph(path)
        graph.add_context("t", "s", "remember me")
        graph.close()
        graph = SqliteDocumentGraph(path)
        assert [i.content for i in graph.get_context("t", "s")] == ["remember me"]
        graph.close()


def test_a_documents_chunks_are_found_by_key_not_by_scanning_the_tenant(tmp_path):
    """Once every indexed document scanned all its tenant's chunks here: ingest slowed as the
    collection grew."""
    from hades.sqlite import _CHUNKS_OF

    graph = SqliteDocumentGraph(tmp_path / "graph.sqlite3")
    try:
        plan = [
            r[3] for r in graph.db.execute(f"EXPLAIN QUERY PLAN SELECT 1 {_CHUNKS_OF}", ("d", "t"))
        ]
    finally:
        graph.close()
    assert any("SEARCH c USING INDEX sqlite_autoindex_chunks_1 (chunk_id=?)" in p for p in plan)
    assert not any("(tenant=?)" in p for p in plan), plan


@ARANGO_SKIP
class TestArangoGraph(DocumentGraphContract):
    @pytest.fixture
    def graph(self) -> Iterator[DocumentGraph]:
        from hades.arango import ArangoDocumentGraph

        url = _arango_url()
        assert url is not None
        store = ArangoDocumentGraph(
            url,
            f"olympus_test_{uuid.uuid4().hex[:8]}",
            os.environ.get("OLYMPUS_ARANGO_USER", "root"),
            os.environ.get("OLYMPUS_ARANGO_PASSWORD", ""),
        )
        yield store
        store.close()


def test_a_new_milvus_lite_collection_is_made_without_an_error_in_the_log(tmp_path, caplog):
    """Through pymilvus, the wait for each new index began with a call Milvus Lite does not
    implement: its server logged four errors with tracebacks on every first start (and slept
    2 s). Called in-process, making and searching a collection logs nothing."""
    caplog.set_level(logging.WARNING)
    index = MilvusVectorIndex(str(tmp_path / "milvus.db"), DIMS, term_key=TERM_KEY)
    try:
        index.upsert(chunks_of("t", "d1", ["an indexed chunk"]))
        assert index.search(SearchQuery("t", "bm25", 1, text="indexed"))[0].doc_id == "d1"
    finally:
        index.close()
    assert [(r.name, r.getMessage()) for r in caplog.records] == []


def test_milvus_lite_is_reachable_by_its_owner_only(tmp_path):
    """pymilvus alone would serve Milvus Lite on a loopback TCP port, readable by any local
    process without a password. Ours is Lite's engine called in this process: it listens on no
    socket at all, and its folder is its owner's alone."""
    import stat

    import psutil

    me = psutil.Process()

    def listening() -> set:
        return {(c.family, c.laddr) for c in me.net_connections("all") if not c.raddr}

    before = listening()
    index = MilvusVectorIndex(str(tmp_path / "milvus.db"), DIMS, term_key=TERM_KEY)
    try:
        index.upsert(chunks_of("t", "d1", ["a private chunk"]))
        assert index.count("t") == 1
        assert listening() - before == set()  # nothing new listens (others may have closed)
        assert stat.S_IMODE((tmp_path / "milvus.db").stat().st_mode) == 0o700
    finally:
        index.close()
