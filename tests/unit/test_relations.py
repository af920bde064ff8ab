"""How related documents are ranked (hades/relations.py)."""

from __future__ import annotations

from hades import relations as rel
from schemas.messages import DeclaredRelation, GraphNode


def node(doc_id: str, depth: int = 1) -> GraphNode:
    return GraphNode(
        doc_id=doc_id, filename=f"{doc_id}.md", collection="c", status="indexed", depth=depth
    )


def test_related_documents_are_ranked_by_the_weights_joining_them_to_the_document():
    edges = [
        rel.api("a", "b", "cites", 1.0),
        rel.similar("c", "a", 0.8),  # into a: counts too
        rel.api("c", "a", "replies_to", 0.3),
        rel.api("b", "c", "cites", 1.0),  # between two neighbours: not a's relation
        rel.declared("a", DeclaredRelation(kind="cites", target="later"), "ingest"),  # waiting
    ]
    nodes = {n.doc_id: n for n in (node("a", 0), node("b"), node("c"))}
    ranked = rel.rank_related("a", edges, nodes, limit=10)
    assert [(r.document.doc_id, r.score) for r in ranked] == [("b", 1.0), ("c", 0.7)]
    assert {x.kind for x in ranked[1].relations} == {"similar_to", "replies_to"}
    assert [r.document.doc_id for r in rel.rank_related("a", edges, nodes, limit=1)] == ["b"]
