"""Relations between documents: declare, remove, list; the graph around a document and the
documents related to it. H.A.D.E.S. keeps them (``olympus.rpc.relations.*``); every one lies
inside one tenant, so another tenant's document is answered as one that does not exist."""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import APIRouter, Query, Response, status

from gateway.deps import ApiKeyDep, NatsDep, WriteKeyDep
from gateway.errors import from_info, invalid
from gateway.models import (
    AUTHENTICATED,
    DocId,
    GraphResponse,
    RelatedResponse,
    RelationId,
    RelationListResponse,
    RelationRequest,
    problems,
)
from schemas import subjects
from schemas.messages import (
    MAX_DEPTH,
    Direction,
    GraphGet,
    GraphReply,
    Identifier,
    RelatedGet,
    RelatedReply,
    Relation,
    RelationDelete,
    RelationKind,
    RelationList,
    RelationPage,
    RelationPut,
    RelationReply,
    Reply,
)

router = APIRouter(prefix="/rag", tags=["relations"], responses=problems(*AUTHENTICATED))
_NOT_FOUND = problems(404)
R = TypeVar("R", bound=Reply)


def _checked(reply: R) -> R:
    if reply.error is not None:
        raise from_info(reply.error)
    return reply


@router.post(
    "/relations",
    status_code=status.HTTP_201_CREATED,
    response_model=Relation,
    responses=_NOT_FOUND,
)
async def put_relation(body: RelationRequest, key: WriteKeyDep, nats_client: NatsDep) -> Relation:
    """Declare that ``source`` relates to ``target`` (both yours; 404 otherwise). The same
    source, kind and target again replaces it. It stays when either document is sent again,
    and goes when either is deleted."""
    if body.source == body.target:
        raise invalid(("target",), "a document cannot be related to itself", body.target)
    reply = _checked(
        await nats_client.request(
            subjects.RPC_RELATION_PUT,
            RelationPut(tenant=key.tenant, **body.model_dump()),
            RelationReply,
        )
    )
    assert reply.relation is not None
    return reply.relation


@router.delete(
    "/relations/{relation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=_NOT_FOUND,
)
async def delete_relation(relation_id: RelationId, key: WriteKeyDep, nats_client: NatsDep) -> None:
    """Remove one relation, whatever its origin (a found or similar one comes back when its
    document is indexed again)."""
    _checked(
        await nats_client.request(
            subjects.RPC_RELATION_DELETE,
            RelationDelete(tenant=key.tenant, relation_id=relation_id),
            RelationReply,
        )
    )


@router.get("/relations", response_model=RelationListResponse, responses=_NOT_FOUND)
async def list_relations(
    key: ApiKeyDep,
    nats_client: NatsDep,
    doc_id: Annotated[Identifier, Query(description="the document's relations, either way")],
) -> RelationListResponse:
    """Every relation from or to the document: declared, found in its text, similar; those
    waiting for a document that has not arrived have ``target`` null."""
    page = _checked(
        await nats_client.request(
            subjects.RPC_RELATION_LIST,
            RelationList(tenant=key.tenant, doc_id=doc_id),
            RelationPage,
        )
    )
    return RelationListResponse(doc_id=doc_id, items=page.items)


@router.get("/documents/{doc_id}/graph", response_model=GraphResponse, responses=_NOT_FOUND)
async def document_graph(
    doc_id: DocId,
    key: ApiKeyDep,
    nats_client: NatsDep,
    depth: Annotated[int, Query(ge=1, le=MAX_DEPTH)] = 1,
    direction: Direction = "any",
    kind: Annotated[list[RelationKind] | None, Query(max_length=16)] = None,
) -> GraphResponse:
    """The documents within ``depth`` hops (1 to 3) following relations ``out`` of a document,
    ``in`` to it or ``any``way, of the given kinds (repeat ``kind``); each document once."""
    reply = _checked(
        await nats_client.request(
            subjects.RPC_RELATION_GRAPH,
            GraphGet(
                tenant=key.tenant, doc_id=doc_id, depth=depth, direction=direction, kinds=kind
            ),
            GraphReply,
        )
    )
    return GraphResponse(doc_id=doc_id, nodes=reply.nodes, edges=reply.edges)


@router.get("/documents/{doc_id}/related", response_model=RelatedResponse, responses=_NOT_FOUND)
async def related_documents(
    doc_id: DocId,
    key: ApiKeyDep,
    nats_client: NatsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> RelatedResponse:
    """The documents related to this one, best first: declared relations count 1 (or their
    weight), links found in the text 0.5, similarity up to 0.5; each with its relations."""
    reply = _checked(
        await nats_client.request(
            subjects.RPC_RELATION_RELATED,
            RelatedGet(tenant=key.tenant, doc_id=doc_id, limit=limit),
            RelatedReply,
        )
    )
    return RelatedResponse(doc_id=doc_id, items=reply.items)
