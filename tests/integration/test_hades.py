"""Every H.A.D.E.S. backend against the one contract (``tests/support/hades_contract.py``)."""

from __future__ import annotations

import os
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hades import DocumentGraph, SearchQuery, VectorIndex
from hades.milvus import MilvusVectorIndex
from hades.sqlite import SqliteDocumentGraph
from tests.support.hades_contract import (
    DIMS,
    TERM_KEY,
    DocumentGraphContract,
    VectorIndexContract,
    chunks_of,
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
