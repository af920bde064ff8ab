"""Message contracts: one pydantic model per subject (see ``schemas.subjects``).

Every model forbids unknown fields and carries ``schema_version``; every message carries the
``tenant`` it belongs to. Other systems may publish ``IngestDocument`` to
``olympus.ingest.<tenant>.<collection>`` directly, with a producer credential of that tenant;
the AsyncAPI document served by the gateway at ``/asyncapi.json`` is generated from these models.
"""

from __future__ import annotations

import json
import re
import time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from schemas.ids import document_id

SCHEMA_VERSION: Literal[1] = 1

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
"""A tenant or collection name: it becomes a NATS subject token, so no dots or spaces."""
NAME_RULE = "1 to 64 letters, digits, '-' or '_'"


def valid_name(value: str, what: str = "name") -> str:
    """``value`` if it is a valid tenant or collection name; else a ValueError that says why."""
    if not re.fullmatch(NAME_PATTERN, value):
        raise ValueError(f"invalid {what} {value!r}: {NAME_RULE}")
    return value


IDENTIFIER_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN)]
"""A document, chunk, session or request id."""
Filename = Annotated[str, StringConstraints(min_length=1, max_length=255)]
MetaValue = str | int | float | bool | None
MAX_METADATA_BYTES = 16 * 1024


def _bounded(metadata: dict[str, MetaValue]) -> dict[str, MetaValue]:
    # Metadata travels in every listing of the tenant's documents: 64 values of 150 KB once
    # made listings too large for the bus.
    size = len(json.dumps(metadata, ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise ValueError(
            f"metadata takes {size} bytes as JSON, more than the limit of {MAX_METADATA_BYTES}"
        )
    return metadata


Metadata = Annotated[
    dict[Annotated[str, StringConstraints(min_length=1, max_length=128)], MetaValue],
    Field(max_length=64),
    AfterValidator(_bounded),
]
"""At most 64 keys, and 16 KiB as JSON."""

DocumentStatus = Literal["queued", "processing", "indexed", "failed", "deleted"]
ControlAction = Literal["cancel", "detach", "attach", "probe"]
ChatEventKind = Literal["sources", "token", "done", "error"]
SearchMode = Literal["dense", "bm25", "hybrid"]
MAX_TOP_K = 100
MAX_QUERY_CHARS = 8192
MAX_NEW_TOKENS = 1024
"""The longest answer anyone may ask for (``max_tokens``); the generator's default is lower."""
MAX_HISTORY_TURNS = 100
MAX_OFFSET = 2**31 - 1  # SQLite takes offsets up to 2**63 - 1; nobody pages that far


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION


ErrorCode = Literal["bad_request", "not_found", "expired", "unavailable", "internal"]
"""What went wrong, as a worker says it; ``gateway.errors.TABLE`` gives each its HTTP status."""


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: ErrorCode
    message: str


class Reply(Message):
    """Base of every request/reply answer: ``error`` is set instead of raising across the bus."""

    error: ErrorInfo | None = None


# --- relations between documents -------------------------------------------------------------
RELATION_KIND_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
RelationKind = Annotated[str, StringConstraints(pattern=RELATION_KIND_PATTERN)]
"""``cites``, ``part_of``, ``supersedes``, ``replies_to``, ``mentions`` (``DECLARED_KINDS``), or
a kind of your own: lower case letters, digits and '_', starting with a letter, up to 32."""
DECLARED_KINDS = ("cites", "part_of", "supersedes", "replies_to", "mentions")
LINKS_TO = "links_to"
"""The kind of a relation found in a document: a link (HTML ``href``, Markdown) or a reference
by filename or URL to another document of the tenant."""
SIMILAR_TO = "similar_to"
"""The kind of a relation H.A.D.E.S. finds between documents whose chunks lie close together."""
RelationOrigin = Literal["ingest", "api", "found", "similar"]
"""Where a relation came from: declared with the document (``ingest``; replaced when it is
ingested again), declared later (``api``; kept until deleted), found in its text, or similar."""
MAX_DEPTH = 3
MAX_DECLARED_RELATIONS = 64
MAX_FOUND_LINKS = 1_000
Direction = Literal["out", "in", "any"]
Expand = Literal["none", "neighbours", "graph"]
"""How retrieval grows its hits: not at all, with the chunks beside each hit (its ``next``
edges, a passage with its surroundings), or with passages of documents related to the top hits."""
FoundBy = Literal["search", "neighbour", "graph"]
CHAT_EXPAND: Expand = "graph"
"""What a chat answer's retrieval does unless asked otherwise: measured better (``olympus eval
--expand graph``, hybrid nDCG@10: Cranfield .409 -> .424, SciFact .706 -> .704, R@100 up on
both), and the passages the search found stay first in the prompt."""


class DeclaredRelation(BaseModel):
    """A relation a document declares to another document of the same tenant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: RelationKind = Field(examples=["cites"])
    target: Identifier = Field(description="the other document's doc_id")


class FoundLink(BaseModel):
    """A link or reference found in a document's text, not yet resolved to a document:
    ``ref`` is a URL (without its fragment) or a filename."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ref: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    kind: Literal["url", "name"]


class Relation(BaseModel):
    """An edge between two documents of one tenant. ``target`` is None while the relation
    waits for a document that has not arrived (``target_ref`` names what it waits for)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    relation_id: str
    source: str
    target: str | None
    kind: str
    origin: RelationOrigin
    weight: float = Field(default=1.0, ge=0, le=1)
    target_ref: str | None = None
    ref_kind: Literal["doc_id", "url", "name"] | None = None
    created_at: float = Field(default_factory=time.time)


# --- olympus.ingest.<collection> --------------------------------------------------------------
class IngestDocument(Message):
    """A document to index (``op="upsert"``) or remove (``op="delete"``).

    ``doc_id`` defaults to a hash of tenant, collection and filename, so uploading a file with the
    same name again replaces it. ``content`` is UTF-8 text, or base64 when ``encoding="base64"``
    (PDF, DOCX). The format comes from ``media_type`` or else the filename's extension.
    Publish with the header ``Nats-Msg-Id: <doc_id>:<sha256 of content>`` so JetStream drops
    a duplicate publish.
    """

    tenant: Name
    collection: Name = "default"
    doc_id: Identifier
    op: Literal["upsert", "delete"] = "upsert"
    filename: Filename = "untitled.txt"
    content: str = ""
    encoding: Literal["utf-8", "base64"] = "utf-8"
    media_type: str | None = None
    metadata: Metadata = Field(default_factory=dict)
    relations: list[DeclaredRelation] = Field(
        default_factory=list,
        max_length=MAX_DECLARED_RELATIONS,
        description="relations to other documents of the tenant; one whose target has not "
        "arrived yet waits for it",
    )

    @model_validator(mode="before")
    @classmethod
    def _derive_doc_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("doc_id") and "tenant" in data:
            data = dict(data)
            data["doc_id"] = document_id(
                str(data["tenant"]),
                str(data.get("collection") or "default"),
                str(data.get("filename") or "untitled.txt"),
            )
        return data

    @model_validator(mode="after")
    def _not_related_to_itself(self) -> IngestDocument:
        if any(r.target == self.doc_id for r in self.relations):
            raise ValueError(f"a document cannot be related to itself ({self.doc_id!r})")
        return self


# --- olympus.index.* --------------------------------------------------------------------------
class ChunkPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk_id: Identifier
    position: int = Field(ge=0)
    text: str
    vector: list[float]
    next_vector: list[float] | None = Field(
        default=None, description="the same text under IndexUpsert.next_model (a live reindex)"
    )


class IndexUpsert(Message):
    """All chunks of one document version, embedded; replaces whatever the document had."""

    tenant: Name
    collection: Name
    doc_id: Identifier
    filename: Filename
    media_type: str
    metadata: Metadata = Field(default_factory=dict)
    version: int = Field(ge=0, description="ingest stream sequence: later wins")
    content_hash: str
    model: str = Field(
        max_length=200,
        description="the embedder's model, name@fingerprint: the index refuses another's vectors",
    )
    next_model: str = Field(
        default="",
        max_length=200,
        description="while olympus reindex moves the embedder to another model: that model, "
        "whose vectors each chunk's next_vector is",
    )
    chunks: list[ChunkPayload] = Field(min_length=1)
    relations: list[DeclaredRelation] = Field(
        default_factory=list, max_length=MAX_DECLARED_RELATIONS
    )
    links: list[FoundLink] = Field(
        default_factory=list,
        max_length=MAX_FOUND_LINKS,
        description="found in the text, at most the embedder's cap",
    )
    links_dropped: int = Field(default=0, ge=0, description="found beyond the cap, not kept")


class IndexDelete(Message):
    """Remove a document with its vectors, chunks and edges."""

    tenant: Name
    collection: Name
    doc_id: Identifier
    version: int = Field(ge=0)


MAX_STATUS_CHANGES = 256
MAX_ERROR_CHARS = 2000


class StatusChange(BaseModel):
    """One document's new status; ``version`` is its ingest message's stream sequence."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    collection: Name
    doc_id: Identifier
    filename: Filename
    version: int = Field(ge=0)
    status: Literal["queued", "processing", "failed"]
    error: str | None = Field(default=None, max_length=MAX_ERROR_CHARS)
    content_hash: str | None = None


class IndexStatus(Message):
    """Status changes of one tenant's documents for H.A.D.E.S. to record: queued by the gateway
    (every file of an upload in one message), processing and failed by the embedder (the
    documents it begins together, together). One message for many keeps a thousand-file
    upload from costing the bus two thousand more messages than the documents themselves."""

    tenant: Name
    changes: list[StatusChange] = Field(min_length=1, max_length=MAX_STATUS_CHANGES)


# --- olympus.query.embed / olympus.query.retrieve ---------------------------------------------
class ChatTurn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["user", "assistant"]
    content: str = Field(max_length=MAX_QUERY_CHARS * 4)


class GenerationOptions(BaseModel):
    """What the caller may tune; unset fields take the generator's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)


class ChatSpec(BaseModel):
    """Set on a query that is to be answered, not only retrieved.

    Every stage hands the request on and answers its caller with ``Accepted`` once the next
    stage has accepted it, so a stage that is down is an error for the client at once; the
    answer itself streams to ``olympus.reply.<request_id>``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "olympus-rag"
    options: GenerationOptions = Field(default_factory=GenerationOptions)
    history: list[ChatTurn] = Field(default_factory=list, max_length=MAX_HISTORY_TURNS)
    remember: bool = Field(default=False, description="use and keep the session's turns")
    instructions: str | None = Field(default=None, max_length=MAX_QUERY_CHARS)


class QueryEmbed(Message):
    """A retrieval request; the reply goes to the NATS reply subject as ``RetrieveReply``."""

    request_id: Identifier
    tenant: Name
    input: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    top_k: int = Field(default=5, ge=1, le=MAX_TOP_K)
    mode: SearchMode = "hybrid"
    collection: Name | None = None
    doc_ids: list[Identifier] | None = None
    session_id: Identifier | None = None
    unique_documents: bool = False
    expand: Expand = "none"
    deadline: float = Field(description="unix time after which nobody waits for the answer")
    chat: ChatSpec | None = None


class QueryRetrieve(QueryEmbed):
    vector: list[float] | None = None
    model: str = Field(default="", max_length=200, description="the vector's model (IndexUpsert)")
    next_vector: list[float] | None = None
    next_model: str = Field(
        default="", max_length=200, description="next_vector's model (IndexUpsert.next_model)"
    )


class RetrievedChunk(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    doc_id: str
    filename: str
    collection: str
    chunk_id: str
    position: int
    text: str
    score: float
    found_by: FoundBy = "search"


class ContextItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    content: str
    at: float


class RetrieveReply(Reply):
    hits: list[RetrievedChunk] = Field(default_factory=list)
    session_context: list[ContextItem] = Field(default_factory=list)


class Accepted(Reply):
    """A chat request was handed on; its answer streams to ``olympus.reply.<request_id>``."""

    request_id: str = ""


# --- olympus.query.generate / olympus.query.control -------------------------------------------
class Citation(BaseModel):
    """Passage ``[n]`` of the prompt, and where it came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(ge=1)
    doc_id: str
    filename: str
    collection: str
    chunk_id: str
    position: int
    score: float
    text: str


class SessionTurn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str
    question: str
    answer: str
    sources: list[Citation] = Field(default_factory=list)
    at: float = Field(default_factory=time.time)


class QueryGenerate(Message):
    """Everything the generator needs to answer: the question, the passages, the conversation."""

    request_id: Identifier
    tenant: Name
    session_id: Identifier | None = None
    input: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    chat: ChatSpec
    retrieval: bool = Field(default=True, description="false: a plain chat, no passages asked")
    passages: list[RetrievedChunk] = Field(default_factory=list)
    session_context: list[ContextItem] = Field(default_factory=list)
    session_turns: list[SessionTurn] = Field(default_factory=list)
    deadline: float
    retrieval_ms: float | None = None


class ChatControl(Message):
    """``cancel``: stop now (the stop button). ``detach``: the client left; stop unless someone
    ``attach``es (resumes) within the generator's grace period. ``probe`` (a request): the
    generator still working on the answer replies; silence means none is."""

    request_id: Identifier
    action: ControlAction


# --- olympus.reply.<request_id> ---------------------------------------------------------------
class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatEvent(Message):
    """One event of a streamed answer, numbered from 0 in the order the client must see them.

    ``sources`` first (the passages the prompt holds, possibly none), then ``token``s, then
    ``done`` (the whole answer, the citations it used, usage and timings) or ``error``.
    """

    request_id: Identifier
    tenant: Name
    seq: int = Field(ge=0)
    event: ChatEventKind
    text: str = ""
    sources: list[Citation] = Field(default_factory=list)
    dropped_passages: int = 0
    cited: list[int] = Field(default_factory=list)
    finish_reason: Literal["stop", "length", "cancelled", "error"] | None = None
    usage: Usage | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    model: str = ""
    error: ErrorInfo | None = None


# --- olympus.rpc.* ----------------------------------------------------------------------------
class DocumentInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    doc_id: str
    collection: str
    filename: str
    status: DocumentStatus
    chunk_count: int = 0
    error: str | None = None
    version: int = 0
    content_hash: str | None = None
    media_type: str | None = None
    metadata: dict[str, MetaValue] = Field(default_factory=dict)
    links_dropped: int = Field(
        default=0, description="links found in the text beyond the cap, not kept as relations"
    )
    created_at: float
    updated_at: float


# --- olympus.events.document.<status> ---------------------------------------------------------
class DocumentEvent(Message):
    """What H.A.D.E.S. has recorded: ``indexed`` means the document is searchable now."""

    tenant: Name
    collection: Name
    doc_id: Identifier
    filename: str
    status: DocumentStatus
    version: int
    chunk_count: int = 0
    error: str | None = None
    at: float = Field(default_factory=time.time)

    @classmethod
    def of(cls, tenant: str, doc: DocumentInfo) -> DocumentEvent:
        """The event that says ``doc`` is now as stored."""
        return cls(
            tenant=tenant,
            collection=doc.collection,
            doc_id=doc.doc_id,
            filename=doc.filename,
            status=doc.status,
            version=doc.version,
            chunk_count=doc.chunk_count,
            error=doc.error,
            at=doc.updated_at,
        )


class DocumentGet(Message):
    tenant: Name
    doc_id: Identifier


class DocumentReply(Reply):
    document: DocumentInfo | None = None


class DocumentChunksGet(Message):
    tenant: Name
    doc_id: Identifier


class ChunkText(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk_id: str
    position: int
    text: str


class DocumentChunks(Reply):
    chunks: list[ChunkText] = Field(default_factory=list)


class DocumentList(Message):
    tenant: Name
    collection: Name | None = None
    status: DocumentStatus | None = None
    limit: int = Field(default=50, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class DocumentPage(Reply):
    items: list[DocumentInfo] = Field(default_factory=list)
    total: int = 0


class DocumentStats(Message):
    tenant: Name | None = None


class DocumentStatsReply(Reply):
    by_status: dict[str, int] = Field(default_factory=dict)


class ContextAdd(Message):
    tenant: Name
    session_id: Identifier
    content: str = Field(min_length=1, max_length=MAX_QUERY_CHARS * 4)


class ContextGet(Message):
    tenant: Name
    session_id: Identifier


class ContextClear(Message):
    tenant: Name
    session_id: Identifier


class ContextReply(Reply):
    items: list[ContextItem] = Field(default_factory=list)


class IndexTurn(Message):
    """A finished question and answer, kept with the session (``olympus.index.turn``)."""

    tenant: Name
    session_id: Identifier
    turn: SessionTurn


class HistoryGet(Message):
    tenant: Name
    session_id: Identifier
    limit: int = Field(default=50, ge=1, le=1000)


class HistoryReply(Reply):
    turns: list[SessionTurn] = Field(default_factory=list)


class RelationPut(Message):
    """Declare a relation between two documents of the tenant (``olympus.rpc.relations.put``)."""

    tenant: Name
    source: Identifier
    target: Identifier
    kind: RelationKind
    weight: float = Field(default=1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _not_to_itself(self) -> RelationPut:
        if self.source == self.target:
            raise ValueError("a document cannot be related to itself")
        return self


class RelationDelete(Message):
    tenant: Name
    relation_id: Identifier


class RelationList(Message):
    tenant: Name
    doc_id: Identifier


class RelationReply(Reply):
    relation: Relation | None = None


class RelationPage(Reply):
    items: list[Relation] = Field(default_factory=list)


class GraphGet(Message):
    """The documents and relations around one document (``olympus.rpc.relations.graph``)."""

    tenant: Name
    doc_id: Identifier
    depth: int = Field(default=1, ge=1, le=MAX_DEPTH)
    direction: Direction = "any"
    kinds: list[RelationKind] | None = Field(default=None, max_length=16)


class GraphNode(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    doc_id: str
    filename: str
    collection: str
    status: DocumentStatus
    depth: int = Field(description="hops from the document asked about")


class GraphReply(Reply):
    nodes: list[GraphNode] = Field(default_factory=list)
    edges: list[Relation] = Field(default_factory=list)


class RelatedGet(Message):
    tenant: Name
    doc_id: Identifier
    limit: int = Field(default=10, ge=1, le=100)


class RelatedDocument(BaseModel):
    """A document related to another, ranked by ``score``: the summed weights of the
    relations that connect the two (each listed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    document: GraphNode
    score: float
    relations: list[Relation]


class RelatedReply(Reply):
    items: list[RelatedDocument] = Field(default_factory=list)


class EmbedRequest(Message):
    """Embed texts as documents (``olympus.rpc.embed``, the OpenAI ``/v1/embeddings``)."""

    tenant: Name
    inputs: list[Annotated[str, StringConstraints(max_length=MAX_QUERY_CHARS)]] = Field(
        min_length=1, max_length=256
    )
    model: str = Field(
        default="",
        max_length=200,
        description="the model to embed with, name@fingerprint: the embedder's own (empty), or "
        "the one a live olympus reindex is moving it to",
    )


class EmbedReply(Reply):
    model: str = ""
    identity: str = Field(default="", description="the model's name@fingerprint")
    vectors: list[list[float]] = Field(default_factory=list)
    tokens: int = 0


class HealthPing(Message):
    pass


class HealthReply(Reply):
    service: str
    ok: bool = True
    models: list[str] = Field(
        default_factory=list, description="an embedder's: the models it embeds with now"
    )


# --- olympus.dlq.<stage> ----------------------------------------------------------------------
class DeadLetter(Message):
    """A message that failed for good: the error, how often it was tried, and the original."""

    stage: str
    subject: str
    error: str
    error_type: str
    deliveries: int
    original: str
    original_encoding: Literal["utf-8", "base64"]
    headers: dict[str, str] = Field(default_factory=dict)
    sequence: int | None = Field(
        default=None,
        description="The original's sequence in its stream: an ingest message's is the version "
        "of the document it carries",
    )
    at: float = Field(default_factory=time.time)


# --- olympus.admin.reindex.* (a live ``olympus reindex``) -------------------------------------
class ModelMove(BaseModel):
    """KV ``OLYMPUS_MODEL``/``embedder``: what ``olympus reindex`` asks of every embedder. One
    whose own model is among ``moved`` runs ``to`` beside it while ``phase`` is ``building``,
    and only ``to`` once it is ``switched`` (an embedder started later reads it too)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    moved: list[str] = Field(description="fingerprints of the models moved away from")
    to: str = Field(min_length=1, description="the new model's folder, as the embedders see it")
    identity: str = Field(default="", description="the new model's name@fingerprint")
    phase: Literal["building", "switched"]
    current: str = Field(
        default="",
        description="while building: the folder of the model the index holds, which embeds "
        "beside the new one (an earlier move's); empty: the embedder's own",
    )
    previous: ModelMove | None = Field(
        default=None, description="while building: what a cancelled run puts back"
    )


class ReindexBegin(Message):
    """Fill the vector index's next collection with ``model``'s vectors from now on (made, or
    resumed if it is ``model``'s already)."""

    model: str = Field(min_length=1, max_length=200)
    dims: int = Field(ge=1, le=65_536)


class ReindexPage(Message):
    """One page of the documents, in order, and which of them the next collection lacks."""

    tenant: Name | None = Field(default=None, description="where the page starts (None: first)")
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    limit: int = Field(default=200, ge=1, le=1000)


class ReindexDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: Name
    doc_id: Identifier
    version: int = Field(ge=0)
    chunks: int = Field(ge=0, description="how many passages the graph holds for it")


class ReindexPageReply(Reply):
    missing: list[ReindexDocument] = Field(default_factory=list)
    scanned: int = 0
    next_tenant: Name | None = Field(default=None, description="None: this was the last page")
    next_offset: int = 0


class ReindexChunk(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk_id: Identifier
    position: int = Field(ge=0)
    vector: list[float]


class ReindexWrite(Message):
    """Passages of one document version under the new model; written only if the document is
    still at ``version`` (else a newer write, or its deletion, has overtaken this one)."""

    model: str = Field(min_length=1, max_length=200)
    tenant: Name
    doc_id: Identifier
    version: int = Field(ge=0)
    chunks: list[ReindexChunk] = Field(min_length=1, max_length=256)


class ReindexSwitch(Message):
    """Give the next collection the index's place, if it holds every document's passages."""

    model: str = Field(min_length=1, max_length=200)


class ReindexCancel(Message):
    """Drop the next collection: the index stays as it is. If the index already holds
    ``model``'s vectors (the run switched before it was stopped), nothing is dropped and the
    reply says ``switched``."""

    model: str = Field(default="", max_length=200)


class ReindexDropOld(Message):
    """Drop the vectors earlier reindexes kept (``olympus reindex --drop-old``)."""


class ReindexReply(Reply):
    written: int = Field(default=0, description="passages written (ReindexWrite)")
    missing: int = Field(default=0, description="documents the next collection still lacks")
    switched: bool = False
    kept_as: str = Field(default="", description="where the old vectors are, once switched")
    dropped: list[str] = Field(default_factory=list, description="collections dropped")
