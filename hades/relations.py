"""Relations between documents as H.A.D.E.S. keeps them: one constructor per origin, so every
relation's id comes from the same place (``schemas.ids.relation_id``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from schemas import ids
from schemas.messages import (
    LINKS_TO,
    SIMILAR_TO,
    DeclaredRelation,
    FoundLink,
    GraphNode,
    RelatedDocument,
    Relation,
    RelationOrigin,
)

FOUND_WEIGHT = 0.5
"""A link found in the text counts half a declared relation when related documents are ranked."""
SIMILAR_WEIGHT = 0.5
"""Similarity (the cosine of two documents' mean vectors) counts at most half a declared one."""


def declared(source: str, relation: DeclaredRelation, origin: RelationOrigin) -> Relation:
    """Declared with the document (``ingest``) or later (``api``): pending until its target
    exists (the graph resolves ``target_ref``)."""
    return Relation(
        relation_id=ids.relation_id(source, relation.kind, relation.target, origin),
        source=source,
        target=None,
        kind=relation.kind,
        origin=origin,
        target_ref=relation.target,
        ref_kind="doc_id",
    )


def api(source: str, target: str, kind: str, weight: float) -> Relation:
    return Relation(
        relation_id=ids.relation_id(source, kind, target, "api"),
        source=source,
        target=target,
        kind=kind,
        origin="api",
        weight=weight,
    )


def found(source: str, link: FoundLink) -> Relation:
    return Relation(
        relation_id=ids.relation_id(source, LINKS_TO, f"{link.kind}:{link.ref}", "found"),
        source=source,
        target=None,
        kind=LINKS_TO,
        origin="found",
        weight=FOUND_WEIGHT,
        target_ref=link.ref,
        ref_kind=link.kind,
    )


def similar(source: str, target: str, score: float) -> Relation:
    return Relation(
        relation_id=ids.relation_id(source, SIMILAR_TO, target, "similar"),
        source=source,
        target=target,
        kind=SIMILAR_TO,
        origin="similar",
        weight=round(SIMILAR_WEIGHT * max(0.0, min(1.0, score)), 6),
    )


def rank_related(
    doc_id: str,
    relations: Iterable[Relation],
    nodes: Mapping[str, GraphNode],
    limit: int,
) -> list[RelatedDocument]:
    """The documents these relations connect ``doc_id`` with (either way), best first: by the
    summed weights of the relations between the two, then by id. Relations that do not touch
    ``doc_id`` (between two of its neighbours) and waiting ones are left out."""
    by_other: dict[str, list[Relation]] = defaultdict(list)
    for relation in relations:
        if relation.target is None or doc_id not in (relation.source, relation.target):
            continue
        other = relation.target if relation.source == doc_id else relation.source
        if other in nodes:
            by_other[other].append(relation)
    ranked = sorted(by_other.items(), key=lambda item: (-sum(r.weight for r in item[1]), item[0]))
    return [
        RelatedDocument(
            document=nodes[other], score=round(sum(r.weight for r in rels), 6), relations=rels
        )
        for other, rels in ranked[:limit]
    ]
