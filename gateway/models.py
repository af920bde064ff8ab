"""HTTP request and response shapes (the OpenAPI at /docs is generated from these)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from schemas.messages import (
    CHAT_EXPAND,
    IDENTIFIER_PATTERN,
    MAX_DECLARED_RELATIONS,
    MAX_NEW_TOKENS,
    MAX_TOP_K,
    Citation,
    DeclaredRelation,
    DocumentInfo,
    Expand,
    Filename,
    FoundBy,
    GraphNode,
    Identifier,
    Metadata,
    Name,
    RelatedDocument,
    Relation,
    RelationKind,
    SearchMode,
    SessionTurn,
    Usage,
)


def _integral(value: Any) -> Any:
    # JSON Schema counts 30.0 as an integer; strict pydantic would not.
    return int(value) if isinstance(value, float) and value.is_integer() else value


INTEGRAL = BeforeValidator(_integral)
"""On an integer field of a request, after its constraints: 30 or 30.0, never "30" or 30.5."""


class Strict(BaseModel):
    # strict: 0 is not false and "5" is not 5; what the schema says is what is accepted.
    model_config = ConfigDict(extra="forbid", strict=True)


Relations = Annotated[
    list[DeclaredRelation],
    Field(
        max_length=MAX_DECLARED_RELATIONS,
        description="relations to other documents of yours (each must exist); replaced when "
        "the document is sent again",
    ),
]


class AddDocumentRequest(Strict):
    filename: Filename = Field(examples=["handbook.md"])
    content: str = Field(description="the document: text, or base64 when encoding is base64")
    metadata: Metadata | None = None
    collection: Name = "default"
    encoding: Literal["utf-8", "base64"] = "utf-8"
    relations: Relations = []


class RelationRequest(Strict):
    source: Identifier = Field(description="the document the relation goes from")
    target: Identifier = Field(description="the document it goes to")
    kind: RelationKind = Field(
        examples=["cites"],
        description="cites, part_of, supersedes, replies_to, mentions, or your own "
        "(lower case letters, digits and '_', up to 32)",
    )
    weight: float = Field(default=1.0, ge=0, le=1, description="how much it counts in /related")


class RelationListResponse(BaseModel):
    doc_id: str
    items: list[Relation] = Field(description="from or to the document; target null: waiting")


class GraphResponse(BaseModel):
    doc_id: str
    nodes: list[GraphNode] = Field(description="each document once, with its fewest hops")
    edges: list[Relation]


class RelatedResponse(BaseModel):
    doc_id: str
    items: list[RelatedDocument]


class AcceptedDocument(BaseModel):
    doc_id: str
    filename: str
    collection: str
    status: str = Field(
        description="queued; or, when the same content was already sent, its current status"
    )
    version: int | None = Field(
        default=None,
        description="this content's place in the ingest stream: the document's version "
        "reaches it once this content is processed (until then a document sent before still "
        "shows its earlier version and status); null when nothing is known of it yet",
    )


class Formats(BaseModel):
    """What an upload may be: the file types by extension, and how large."""

    media_types: dict[str, str] = Field(description="extension -> the media type it is read as")
    max_upload_bytes: int
    max_files_per_request: int


class UploadResponse(BaseModel):
    documents: list[AcceptedDocument]


class DeleteResponse(BaseModel):
    doc_id: str
    status: Literal["deleting"] = "deleting"


class DocumentListResponse(BaseModel):
    items: list[DocumentInfo]
    total: int
    limit: int
    offset: int


class ContextRequest(Strict):
    content: str = Field(min_length=1, max_length=32_768)


class ContextResponse(BaseModel):
    session_id: str
    context: list[str]


class QueryRequest(Strict):
    input: str = Field(min_length=1, description="the question or search text")
    top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K), INTEGRAL] = 5
    mode: SearchMode = "hybrid"
    collection: Name | None = None
    doc_ids: list[Identifier] | None = Field(
        default=None, max_length=100, description="search only these documents"
    )
    unique_documents: bool = Field(default=False, description="at most one passage per document")
    expand: Expand = Field(
        default="none",
        description="neighbours: each passage with the chunks beside it; graph: also the best "
        "passages of documents related to the top hits",
    )


class RetrievedDocument(BaseModel):
    doc_id: str
    filename: str
    chunk_id: str
    text: str
    score: float
    collection: str
    position: int
    found_by: FoundBy = Field(
        default="search", description="search; or neighbour, graph: added by expand"
    )


class QueryResponse(BaseModel):
    session_context: list[str]
    retrieved_documents: list[RetrievedDocument]


DocId = Annotated[str, Path(pattern=IDENTIFIER_PATTERN, description="a document id")]
SessionId = Annotated[str, Path(pattern=IDENTIFIER_PATTERN, description="any id the client picks")]
RelationId = Annotated[str, Path(pattern=IDENTIFIER_PATTERN, description="a relation id")]


class Problem(BaseModel):
    detail: str


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIProblem(BaseModel):
    """An error as OpenAI's API gives it (every ``/v1`` error)."""

    error: OpenAIErrorBody


_WHY = {
    400: "malformed: not JSON, bad base64, an unknown model, a conflicting header",
    401: "no valid API key (`Authorization: Bearer <key>`)",
    403: "the key's scope does not allow this",
    404: "not found, or not the caller's tenant's",
    409: "a conflicting name, or a document in no state to retry",
    413: "the body, a file or the input is over its limit",
    415: "a file type Olympus does not read",
    422: "the request does not match its schema",
    429: "over a rate limit, or the tenant's share of the ingest queue: see `Retry-After`",
    503: "a stage of the pipeline is down or did not answer in time",
}
AUTHENTICATED = (400, 401, 403, 413, 429, 503)
"""What any route behind an API key may answer besides its own outcomes."""


def problems(*statuses: int, openai: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error statuses, each with its shape and why it happens."""
    model = OpenAIProblem if openai else Problem
    return {s: {"model": model, "description": _WHY[s]} for s in statuses}


class ChatRequest(Strict):
    input: str = Field(min_length=1, description="the question")
    top_k: Annotated[
        int, Field(ge=1, le=MAX_TOP_K, description="passages to retrieve"), INTEGRAL
    ] = 5
    mode: SearchMode = "hybrid"
    collection: Name | None = None
    doc_ids: list[Identifier] | None = Field(default=None, max_length=100)
    expand: Expand = Field(
        default=CHAT_EXPAND,
        description="neighbours: each passage with the chunks beside it; graph (the default, "
        "measured better): also the best passages of documents related to the top hits",
    )
    stream: bool = Field(default=True, description="false: the whole answer as one JSON")
    max_tokens: Annotated[int, Field(ge=1, le=MAX_NEW_TOKENS), INTEGRAL] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)


class ChatAnswer(BaseModel):
    request_id: str
    answer: str
    sources: list[Citation] = Field(description="the passages the prompt held, numbered")
    cited: list[int] = Field(description="the numbers the answer cites")
    dropped_passages: int = Field(
        description="retrieved passages left out of the prompt: no room, or past its limit"
    )
    finish_reason: str | None
    usage: Usage | None
    timings: dict[str, float]


class HistoryResponse(BaseModel):
    session_id: str
    turns: list[SessionTurn]
