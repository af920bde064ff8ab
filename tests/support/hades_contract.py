"""The H.A.D.E.S. store contracts as test classes every backend subclasses (after Haystack 2's
``haystack/testing/document_store.py``).

A backend's test module subclasses ``VectorIndexContract`` or ``DocumentGraphContract`` with a
``Test`` name and overrides the ``vectors`` or ``graph`` fixture to yield an empty store of its
own; it inherits every test, so all backends are held to the same behaviour. Tests only a
backend can run (reopening its files, say) live in its subclass.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from hades import ChunkRecord, DocumentGraph, DocumentWrite, SearchQuery, VectorIndex
from hades import relations as rel
from schemas.ids import chunk_id
from schemas.messages import Citation, DeclaredRelation, DocumentInfo, FoundLink, SessionTurn

DIMS = 8
TERM_KEY = bytes(range(32))
"""What a test's ``MilvusVectorIndex`` seals its BM25 terms with (the stack reads it from the
graph: ``DocumentGraph.secret``)."""


def vec(seed: int) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(DIMS)
    return (v / np.linalg.norm(v)).tolist()


def chunks_of(
    tenant: str, doc_id: str, texts: list[str], collection: str = "c"
) -> list[ChunkRecord]:
    return [
        ChunkRecord(
            chunk_id(tenant, doc_id, i, t), tenant, collection, doc_id, i, t, vec(hash(t) % 997)
        )
        for i, t in enumerate(texts)
    ]


def info(
    doc_id: str, version: int, status: str = "indexed", chunks: int = 0, **more: object
) -> DocumentInfo:
    now = time.time()
    return DocumentInfo(
        doc_id=doc_id,
        collection="c",
        filename=f"{doc_id}.txt",
        status=status,
        chunk_count=chunks,
        version=version,
        created_at=now,
        updated_at=now,
        **more,  # type: ignore[arg-type]
    )


def put(graph: DocumentGraph, tenant: str, doc_id: str, *relations: object, **more: object) -> None:
    """Index a one-chunk document that brings these relations (``DeclaredRelation``s are
    declared with it, ``FoundLink``s found in it)."""
    made = [
        rel.declared(doc_id, r, "ingest")
        if isinstance(r, DeclaredRelation)
        else rel.found(
            doc_id,
            r,  # type: ignore[arg-type]
        )
        for r in relations
    ]
    version = (graph.get_document(tenant, doc_id) or info(doc_id, 0)).version + 1
    graph.put_documents(
        [
            DocumentWrite(
                tenant,
                info(doc_id, version, chunks=1, **more),
                chunks_of(tenant, doc_id, [f"text of {doc_id} v{version}"]),
                made,
            )
        ]
    )


def targets(graph: DocumentGraph, tenant: str, doc_id: str) -> dict[str, str | None]:
    """The document's outgoing relations as kind:ref -> target (None: still waiting)."""
    return {
        f"{r.kind}:{r.target_ref or r.target}": r.target
        for r in graph.relations(tenant, doc_id)
        if r.source == doc_id
    }


class VectorIndexContract:
    """What every ``VectorIndex`` does. Override ``vectors`` with an empty index of ``DIMS``."""

    @pytest.fixture
    def vectors(self) -> Iterator[VectorIndex]:
        raise NotImplementedError("a backend's subclass yields its empty index here")

    def test_upsert_twice_keeps_one_row(self, vectors: VectorIndex) -> None:
        chunks = chunks_of("t1", "d1", ["alpha beta", "gamma delta"])
        vectors.upsert(chunks)
        vectors.upsert(chunks)
        assert vectors.count("t1") == 2

    def test_written_chunks_are_searchable_at_once(self, vectors: VectorIndex) -> None:
        vectors.upsert(chunks_of("t1", "d1", ["the quick brown fox", "lazy dogs sleep"]))
        target = chunks_of("t1", "d1", ["the quick brown fox"])[0]
        for mode in ("dense", "bm25", "hybrid"):
            hits = vectors.search(
                SearchQuery("t1", mode, 1, text="quick foxes", vector=target.vector)
            )
            assert [h.chunk_id for h in hits] == [target.chunk_id], mode
            assert hits[0].doc_id == "d1"

    def test_search_never_crosses_tenants(self, vectors: VectorIndex) -> None:
        vectors.upsert(chunks_of("t1", "d1", ["secret plans of tenant one"]))
        vectors.upsert(chunks_of("t2", "d2", ["public notes of tenant two"]))
        for mode in ("dense", "bm25", "hybrid"):
            hits = vectors.search(
                SearchQuery("t2", mode, 10, text="secret plans tenant", vector=vec(1))
            )
            assert {h.doc_id for h in hits} <= {"d2"}, mode

    def test_filters_by_collection_and_document(self, vectors: VectorIndex) -> None:
        vectors.upsert(chunks_of("t", "a", ["solar panels on roofs"], collection="energy"))
        vectors.upsert(chunks_of("t", "b", ["solar eclipses in history"], collection="space"))
        hits = vectors.search(SearchQuery("t", "bm25", 10, text="solar", collection="space"))
        assert [h.doc_id for h in hits] == ["b"]
        hits = vectors.search(SearchQuery("t", "dense", 10, vector=vec(3), doc_ids=["a"]))
        assert [h.doc_id for h in hits] == ["a"]

    def test_bm25_stems_and_ranks(self, vectors: VectorIndex) -> None:
        vectors.upsert(
            chunks_of("t", "d", ["running shoes for marathons", "a recipe for lemon cake"])
        )
        hits = vectors.search(SearchQuery("t", "bm25", 2, text="runner who runs a marathon"))
        assert hits[0].chunk_id == chunk_id("t", "d", 0, "running shoes for marathons")
        assert hits[0].score > 0
        assert vectors.search(SearchQuery("t", "bm25", 2, text="the of and")) == []

    def test_unique_documents_keeps_each_documents_best_chunk(self, vectors: VectorIndex) -> None:
        vectors.upsert(chunks_of("t", "d1", ["apple pie", "apple tart", "apple crumble"]))
        vectors.upsert(chunks_of("t", "d2", ["apple juice"]))
        hits = vectors.search(SearchQuery("t", "bm25", 5, text="apple", unique_documents=True))
        assert sorted(h.doc_id for h in hits) == ["d1", "d2"]

    def test_nearest_documents_finds_for_each_vector_what_its_own_search_finds(
        self, vectors: VectorIndex
    ) -> None:
        for d in range(12):
            vectors.upsert(chunks_of("t", f"d{d}", [f"passage {d} {i}" for i in range(3)]))
        vectors.upsert(chunks_of("other", "theirs", [f"passage {d} 0" for d in range(12)]))
        asked = [vec(1000 + i) for i in range(5)]
        found = vectors.nearest_documents("t", asked, 4)
        assert len(found) == len(asked)
        for vector, hits in zip(asked, found, strict=True):
            query = SearchQuery("t", "dense", 4, vector=vector, unique_documents=True)
            alone = vectors.search(query)
            assert [(h.doc_id, h.chunk_id) for h in hits] == [(h.doc_id, h.chunk_id) for h in alone]
            assert [h.score for h in hits] == pytest.approx([h.score for h in alone])
            assert len({h.doc_id for h in hits}) == 4
        assert vectors.nearest_documents("t", [], 4) == []

    def test_delete_document_and_chunks(self, vectors: VectorIndex) -> None:
        chunks = chunks_of("t", "d", ["one", "two", "three"])
        vectors.upsert(chunks + chunks_of("t", "other", ["four"]))
        vectors.delete_chunks("t", {chunks[0].chunk_id, "not-there"})
        vectors.delete_chunks("other-tenant", {chunks[1].chunk_id})
        assert vectors.count("t", "d") == 2
        vectors.delete_document("t", "d")
        assert vectors.count("t", "d") == 0
        assert vectors.count("t", "other") == 1


class DocumentGraphContract:
    """What every ``DocumentGraph`` does. Override ``graph`` with an empty graph."""

    @pytest.fixture
    def graph(self) -> Iterator[DocumentGraph]:
        raise NotImplementedError("a backend's subclass yields its empty graph here")

    def test_put_document_with_chunks_and_edges(self, graph: DocumentGraph) -> None:
        chunks = chunks_of("t", "d", ["first", "second", "third"])
        graph.put_documents([DocumentWrite("t", info("d", 3, chunks=3), chunks)])
        assert graph.get_document("t", "d").status == "indexed"
        assert graph.chunk_ids("t", "d") == [c.chunk_id for c in chunks]
        assert [(c.position, c.text) for c in graph.chunks("t", "d")] == [
            (c.position, c.text) for c in chunks
        ]
        assert graph.following_chunks("t", chunks[0].chunk_id, 5) == [
            chunks[1].chunk_id,
            chunks[2].chunk_id,
        ]
        assert graph.following_chunks("t", chunks[0].chunk_id, 1) == [chunks[1].chunk_id]
        assert graph.get_document("other-tenant", "d") is None

    def test_chunk_texts_by_id_of_one_tenant_only(self, graph: DocumentGraph) -> None:
        chunks = chunks_of("t", "d", ["first words", "second words"])
        graph.put_documents([DocumentWrite("t", info("d", 1, chunks=2), chunks)])
        ids = [c.chunk_id for c in chunks]
        assert graph.chunk_texts("t", [*ids, "unknown"]) == {
            ids[0]: "first words",
            ids[1]: "second words",
        }
        assert graph.chunk_texts("other", ids) == {}
        assert graph.chunk_texts("t", []) == {}

    def test_a_secret_is_made_once_and_kept(self, graph: DocumentGraph) -> None:
        first = graph.secret("a")
        assert len(first) == 32
        assert graph.secret("a") == first
        assert graph.secret("b") != first

    def test_new_version_replaces_chunks(self, graph: DocumentGraph) -> None:
        old = chunks_of("t", "d", ["old one", "old two"])
        graph.put_documents([DocumentWrite("t", info("d", 1, chunks=2), old)])
        new = chunks_of("t", "d", ["new"])
        graph.put_documents([DocumentWrite("t", info("d", 2, chunks=1), new)])
        assert graph.chunk_ids("t", "d") == [new[0].chunk_id]
        assert graph.following_chunks("t", old[0].chunk_id, 3) == []

    def test_versions_order_status_changes(self, graph: DocumentGraph) -> None:
        (queued,) = graph.set_statuses("t", [info("d", 5, "queued")])
        assert queued is not None
        assert queued.status == "queued"
        # In one write, in order: each change is judged against the ones before it.
        stored = graph.set_statuses(
            "t",
            [
                info("d", 5, "processing"),
                info("d", 5, "queued"),  # stale: same version, an earlier step
                info("d", 4, "processing"),  # stale: an older version
                info("e", 1, "queued"),
            ],
        )
        assert [s.status if s else None for s in stored] == ["processing", None, None, "queued"]
        assert graph.get_document("t", "d").status == "processing"
        assert graph.accepts("t", "d", 5, "indexed")
        assert not graph.accepts("t", "d", 4, "indexed")

    def test_delete_removes_everything_and_blocks_older_writes(self, graph: DocumentGraph) -> None:
        chunks = chunks_of("t", "d", ["a", "b"])
        graph.put_documents([DocumentWrite("t", info("d", 1, chunks=2), chunks)])
        deleted = graph.delete_document("t", "d", 2)
        assert deleted is not None
        assert deleted.doc_id == "d"
        assert graph.get_document("t", "d") is None
        assert graph.chunk_ids("t", "d") == []
        assert graph.following_chunks("t", chunks[0].chunk_id, 2) == []
        assert not graph.accepts("t", "d", 1, "indexed")
        assert graph.accepts("t", "d", 3, "queued")
        assert graph.delete_document("t", "d", 2) is None

    def test_list_and_count_documents(self, graph: DocumentGraph) -> None:
        graph.set_statuses(
            "t",
            [
                info(f"d{i}", 1, status)
                for i, status in enumerate(["queued", "processing", "failed"])
            ],
        )
        graph.set_statuses("u", [info("x", 1, "queued")])
        items, total = graph.list_documents("t", limit=2)
        assert total == 3
        assert len(items) == 2
        items, total = graph.list_documents("t", status="failed")
        assert [d.doc_id for d in items] == ["d2"]
        assert total == 1
        assert graph.counts_by_status("t") == {"queued": 1, "processing": 1, "failed": 1}
        assert graph.counts_by_status()["queued"] == 2
        assert set(graph.get_documents("t", ["d0", "d1", "x"])) == {"d0", "d1"}
        assert graph.tenants() == ["t", "u"]
        graph.delete_document("u", "x", 2)
        assert graph.tenants() == ["t"]

    def test_session_context(self, graph: DocumentGraph) -> None:
        graph.add_context("t", "s1", "I prefer short answers")
        items = graph.add_context("t", "s1", "My name is Ada")
        assert [i.content for i in items] == ["I prefer short answers", "My name is Ada"]
        assert graph.get_context("u", "s1") == []
        assert graph.clear_context("t", "s1") == 2
        assert graph.get_context("t", "s1") == []

    def test_session_turns_keep_order_dedupe_and_clear_with_context(
        self, graph: DocumentGraph
    ) -> None:
        source = Citation(
            n=1,
            doc_id="d",
            filename="f.txt",
            collection="c",
            chunk_id="d:0",
            position=0,
            score=0.5,
            text="passage",
        )
        for i in range(3):
            turn = SessionTurn(
                request_id=f"r{i}", question=f"q{i}", answer=f"a{i}", sources=[source]
            )
            graph.add_turn("t", "s1", turn)
        graph.add_turn("t", "s1", SessionTurn(request_id="r1", question="again", answer="again"))
        assert [t.question for t in graph.get_turns("t", "s1", 10)] == ["q0", "q1", "q2"]
        assert [t.question for t in graph.get_turns("t", "s1", 2)] == ["q1", "q2"]
        assert graph.get_turns("t", "s1", 1)[0].sources == [source]
        assert graph.get_turns("u", "s1", 10) == []
        graph.add_context("t", "s1", "a note")
        assert graph.clear_context("t", "s1") == 4
        assert graph.get_turns("t", "s1", 10) == []

    # --- relations between documents -----------------------------------------------------------
    def test_a_tenants_document_ids_are_its_own(self, graph: DocumentGraph) -> None:
        # Producers choose ids: two tenants with a document "readme" of the same text.
        for tenant in ("t", "u"):
            graph.put_documents(
                [
                    DocumentWrite(
                        tenant, info("readme", 1, chunks=2), chunks_of(tenant, "readme", ["a", "b"])
                    )
                ]
            )
        graph.put_documents(
            [DocumentWrite("u", info("readme", 2, chunks=1), chunks_of("u", "readme", ["c"]))]
        )
        assert [c.text for c in graph.chunks("t", "readme")] == ["a", "b"]
        assert [c.text for c in graph.chunks("u", "readme")] == ["c"]

    def test_neighbour_chunks_follow_next_edges_both_ways(self, graph: DocumentGraph) -> None:
        chunks = chunks_of("t", "d", ["one", "two", "three"])
        graph.put_documents([DocumentWrite("t", info("d", 1, chunks=3), chunks)])
        ids = [c.chunk_id for c in chunks]
        assert graph.neighbour_chunks("t", ids[1]) == [(ids[0], 0), (ids[2], 2)]
        assert graph.neighbour_chunks("t", ids[0]) == [(ids[1], 1)]
        assert graph.neighbour_chunks("u", ids[1]) == []

    def test_declared_and_found_relations_resolve_now_or_when_their_target_arrives(
        self, graph: DocumentGraph
    ) -> None:
        put(graph, "t", "a")
        put(graph, "t", "b")
        put(
            graph,
            "t",
            "c",
            DeclaredRelation(kind="cites", target="a"),
            DeclaredRelation(kind="part_of", target="z"),  # not here yet
            FoundLink(ref="b.txt", kind="name"),
            FoundLink(ref="https://example.org/e", kind="url"),
            FoundLink(ref="c.txt", kind="name"),  # itself: never related
        )
        assert targets(graph, "t", "c") == {
            "cites:a": "a",
            "part_of:z": None,
            "links_to:b.txt": "b",
            "links_to:https://example.org/e": None,
            "links_to:c.txt": None,
        }
        put(graph, "t", "z")
        put(graph, "t", "e", metadata={"url": "https://example.org/e"})
        assert targets(graph, "t", "c") == {
            "cites:a": "a",
            "part_of:z": "z",
            "links_to:b.txt": "b",
            "links_to:https://example.org/e": "e",
            "links_to:c.txt": None,
        }
        # and they are seen from the other end
        assert [r.source for r in graph.relations("t", "a")] == ["c"]

    def test_ingesting_again_replaces_what_came_with_it_and_keeps_the_api_ones(
        self, graph: DocumentGraph
    ) -> None:
        for doc in ("a", "b", "c"):
            put(graph, "t", doc)
        put(
            graph,
            "t",
            "d",
            DeclaredRelation(kind="cites", target="a"),
            FoundLink(ref="b.txt", kind="name"),
        )
        kept = graph.put_relation("t", rel.api("d", "c", "supersedes", 1.0))
        assert kept is not None
        # declared with the document and then over the API: the API's, kept from now on
        assert graph.put_relation("t", rel.api("d", "a", "cites", 1.0)) is not None
        put(graph, "t", "d", DeclaredRelation(kind="cites", target="a"))
        put(graph, "t", "d", FoundLink(ref="c.txt", kind="name"))
        assert targets(graph, "t", "d") == {
            "supersedes:c": "c",
            "cites:a": "a",
            "links_to:c.txt": "c",
        }

    def test_put_and_delete_relations(self, graph: DocumentGraph) -> None:
        put(graph, "t", "a")
        put(graph, "t", "b")
        put(graph, "u", "x")
        made = rel.api("a", "b", "replies_to", 0.7)
        assert graph.put_relation("t", made) == made
        assert graph.put_relation("t", made) == made  # the same again: still one
        assert graph.relations("t", "b") == [made]
        assert graph.put_relation("t", rel.api("a", "nowhere", "cites", 1.0)) is None
        assert graph.put_relation("t", rel.api("a", "x", "cites", 1.0)) is None  # u's
        assert graph.put_relation("u", rel.api("x", "a", "cites", 1.0)) is None  # t's
        assert not graph.delete_relation("u", made.relation_id)
        assert graph.delete_relation("t", made.relation_id)
        assert not graph.delete_relation("t", made.relation_id)
        assert graph.relations("t", "a") == []

    def test_deleting_a_document_removes_every_relation_touching_it(
        self, graph: DocumentGraph
    ) -> None:
        for doc in ("a", "b"):
            put(graph, "t", doc)
        put(
            graph,
            "t",
            "c",
            DeclaredRelation(kind="cites", target="a"),
            FoundLink(ref="b.txt", kind="name"),
            DeclaredRelation(kind="cites", target="later"),
        )
        graph.put_relation("t", rel.api("b", "c", "cites", 1.0))
        graph.replace_similar("t", "a", [rel.similar("a", "c", 0.9)])
        assert graph.delete_document("t", "c", 99) is not None
        for doc in ("a", "b", "c"):
            assert graph.relations("t", doc) == []
        put(graph, "t", "later")  # nothing waited for it any more
        assert graph.relations("t", "later") == []

    def test_similar_relations_are_replaced_and_skip_what_is_gone(
        self, graph: DocumentGraph
    ) -> None:
        for doc in ("a", "b", "c"):
            put(graph, "t", doc)
        graph.replace_similar("t", "a", [rel.similar("a", "b", 0.8), rel.similar("a", "gone", 1)])
        assert targets(graph, "t", "a") == {"similar_to:b": "b"}
        graph.replace_similar("t", "a", [rel.similar("a", "c", 0.6)])
        assert targets(graph, "t", "a") == {"similar_to:c": "c"}
        assert graph.relations("t", "a")[0].weight == rel.similar("a", "c", 0.6).weight

    def test_traversal_by_depth_direction_and_kind_ends_on_cycles(
        self, graph: DocumentGraph
    ) -> None:
        # a -> b -> c -> a (a cycle), c -> d, e -> a (mentions)
        for doc in "abcde":
            put(graph, "t", doc)
        for source, target, kind in [
            ("a", "b", "cites"),
            ("b", "c", "cites"),
            ("c", "a", "cites"),
            ("c", "d", "cites"),
            ("e", "a", "mentions"),
        ]:
            assert graph.put_relation("t", rel.api(source, target, kind, 1.0)) is not None
        put(graph, "u", "a")  # another tenant's "a" is never reached

        def walk(depth: int, direction: str = "any", kinds: list[str] | None = None):
            nodes, edges = graph.traverse("t", "a", depth, direction, kinds)
            return (
                {n.doc_id: n.depth for n in nodes},
                sorted((e.source, e.target) for e in edges),
            )

        assert walk(1, "out") == ({"a": 0, "b": 1}, [("a", "b")])
        assert walk(3, "out") == (
            {"a": 0, "b": 1, "c": 2, "d": 3},
            [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")],
        )
        assert walk(1, "in") == ({"a": 0, "c": 1, "e": 1}, [("c", "a"), ("e", "a")])
        assert walk(2, "any", ["cites"])[0] == {"a": 0, "b": 1, "c": 1, "d": 2}
        assert walk(3, "any", ["mentions"]) == ({"a": 0, "e": 1}, [("e", "a")])
        assert graph.traverse("t", "nowhere", 2) == ([], [])
        assert [n.doc_id for n in graph.traverse("u", "a", 3)[0]] == ["a"]
