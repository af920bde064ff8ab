"""Every H.A.D.E.S. backend against the one contract (``tests/support/hades_contract.py``)."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from hades import ChunkRecord, DocumentGraph, SearchQuery, VectorIndex
from hades.milvus import MilvusVectorIndex, building_name, kept_name
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
        index.client.release_collection(index.name)
        index.client.drop_index(index.name, "dense")
        older = index.client.prepare_index_params()
        older.add_index("dense", index_type="HNSW", metric_type="COSINE", params={"params": {}})
        index.client.create_index(index.name, older)
        assert index.client.describe_index(index.name, "dense")["index_type"] == "HNSW"
        index.close()
        index = MilvusVectorIndex(path, DIMS, term_key=TERM_KEY)
        try:
            made = index.client.describe_index(index.name, "dense")
            assert (made["index_type"], made["metric_type"]) == ("FLAT", "IP")
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
    """pymilvus waited for each index with a call Milvus Lite does not implement: its server
    logged four errors with tracebacks on every first start (and slept 2 s)."""
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
    process without a password; ours listens on a unix socket in a private folder."""
    import stat

    import psutil

    me = psutil.Process()
    listening_before = {c.laddr for c in me.net_connections("inet") if c.status == "LISTEN"}
    index = MilvusVectorIndex(str(tmp_path / "milvus.db"), DIMS, term_key=TERM_KEY)
    try:
        listening = {c.laddr for c in me.net_connections("inet") if c.status == "LISTEN"}
        assert listening == listening_before
        assert index.lite is not None
        assert index.lite.uri.startswith("unix:")
        assert stat.S_IMODE(index.lite.folder.stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "milvus.db").stat().st_mode) == 0o700
        index.upsert(chunks_of("t", "d1", ["a private chunk"]))
        assert index.count("t") == 1
    finally:
        index.close()
    assert not index.lite.folder.exists()


_IDLE_CLIENT = """
import sys, time
from pathlib import Path
from pymilvus import MilvusClient
from hades.milvus import MilvusVectorIndex, PrivateLite
if sys.argv[2] == "ours":
    index = MilvusVectorIndex(sys.argv[1], 8, term_key=b"k" * 32)
    client, close = index.client, index.close
else:  # pymilvus shares a connection per address: this server has no other client
    lite = PrivateLite(Path(sys.argv[1]))
    client, close = MilvusClient(uri=lite.uri), lite.close
client.list_collections()
print("idle from here", file=sys.stderr, flush=True)
time.sleep(15)
close()
"""


def test_the_milvus_lite_client_does_not_ping_its_own_server_while_idle(tmp_path):
    """pymilvus' keepalive pings (every 10 s) made Milvus Lite's server answer GOAWAY
    "too_many_pings" after ~2 idle minutes, which gRPC logs as an error beside the JSON logs.
    gRPC's keepalive trace logs each keepalive ping answered; a client with pymilvus' own
    settings is the control."""
    env = {**os.environ, "GRPC_VERBOSITY": "debug", "GRPC_TRACE": "http_keepalive"}
    runs = {
        who: subprocess.Popen(
            [sys.executable, "-c", _IDLE_CLIENT, str(tmp_path / who), who],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("ours", "pymilvus")
    }
    idle = {}
    for who, run in runs.items():
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err[-2000:]
        idle[who] = err.split("idle from here", 1)[1].lower()
    assert "finish keepalive ping" in idle["pymilvus"]
    assert "finish keepalive ping" not in idle["ours"]
