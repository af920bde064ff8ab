"""Every subject, stream and durable consumer name on the Olympus bus.

No other module spells a subject. Read this file top to bottom and you have seen the whole bus:

    olympus.ingest.<tenant>.<collection>  documents in (JetStream OLYMPUS_INGEST) -> embedder;
                                       the tenant token is the producer's, checked on arrival
    olympus.index.upsert|delete|status embedder/gateway -> indexer (JetStream OLYMPUS_INDEX)
    olympus.events.document.<status>   indexer -> anyone (JetStream OLYMPUS_EVENTS, short-lived)
    olympus.query.embed                gateway -> embedder (core request/reply)
    olympus.query.retrieve             embedder -> indexer, replies to the gateway's inbox
    olympus.query.generate             indexer (or the gateway, no retrieval) -> generator
    olympus.query.control              gateway -> every generator: cancel, detach, attach;
                                       probe (request: the one holding the answer replies)
    olympus.reply.<request_id>         generator -> gateway: sources, tokens, done/error
                                       (JetStream OLYMPUS_REPLY, minutes: a client can resume)
    olympus.index.turn                 generator -> indexer: a finished question and answer
    olympus.rpc.<area>.<verb>          gateway/CLI -> indexer (core request/reply)
    olympus.rpc.health.<service>       liveness ping every worker answers
    olympus.admin.reindex.<verb>       olympus reindex -> indexer (core request/reply): a live
                                       re-embedding; the gateway cannot publish here
    olympus.slots.<holder>             gateway -> gateways: an answer streaming now (JetStream
                                       OLYMPUS_SLOTS, memory; the per-key limit of all replicas)
    olympus.dlq.<stage>[.<tenant>.<doc>]  what finally failed, with the error (JetStream
                                       OLYMPUS_DLQ); a document's letters name it: the
                                       indexer marks it failed, a retry republishes the
                                       original, its deletion erases them
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas import ids

PREFIX = "olympus"

# --- ingest -----------------------------------------------------------------------------------
INGEST_STAGE = "ingest"
INGEST_PREFIX = f"{PREFIX}.{INGEST_STAGE}"
INGEST_ALL = f"{INGEST_PREFIX}.>"


def ingest_subject(tenant: str, collection: str) -> str:
    """The subject a document of ``tenant`` for ``collection`` is published to. A producer's
    NATS user may publish only to its own tenant's subjects (``olympus.access``)."""
    return f"{INGEST_PREFIX}.{tenant}.{collection}"


def ingest_owner(subject: str) -> tuple[str, str] | None:
    """``olympus.ingest.<tenant>.<collection>`` -> (tenant, collection); None for another shape."""
    parts = subject.split(".")
    if len(parts) != 4 or ".".join(parts[:2]) != INGEST_PREFIX:
        return None
    return parts[2], parts[3]


# --- index (H.A.D.E.S. input) -----------------------------------------------------------------
INDEX_PREFIX = f"{PREFIX}.index"
INDEX_UPSERT = f"{INDEX_PREFIX}.upsert"
INDEX_DELETE = f"{INDEX_PREFIX}.delete"
INDEX_STATUS = f"{INDEX_PREFIX}.status"
INDEX_TURN = f"{INDEX_PREFIX}.turn"
INDEX_ALL = f"{INDEX_PREFIX}.>"


def holds_text(subject: str) -> bool:
    """Whether a work-queue message on ``subject`` carries a document's or a conversation's
    text: such a message is overwritten in the stream's files once handled, so deleting the
    document leaves none of it behind (``olympus.delivery.erase``)."""
    return subject.startswith(f"{INGEST_PREFIX}.") or subject in (INDEX_UPSERT, INDEX_TURN)


# --- document events --------------------------------------------------------------------------
EVENTS_PREFIX = f"{PREFIX}.events.document"
EVENTS_ALL = f"{EVENTS_PREFIX}.>"


def event_subject(status: str) -> str:
    return f"{EVENTS_PREFIX}.{status}"


# --- query path (core NATS: the client is waiting, nothing to keep) ---------------------------
QUERY_EMBED = f"{PREFIX}.query.embed"
QUERY_RETRIEVE = f"{PREFIX}.query.retrieve"
QUERY_GENERATE = f"{PREFIX}.query.generate"
QUERY_CONTROL = f"{PREFIX}.query.control"

VECTORLESS_MODES = frozenset({"bm25"})
"""Search modes that need no query vector: such a query skips the embedder."""


def first_stage(mode: str, retrieval: bool = True) -> str:
    """Where a query or chat enters the pipeline: the generator when nothing is retrieved,
    H.A.D.E.S. when its mode needs no vector (one hop fewer), else the embedder."""
    if not retrieval:
        return QUERY_GENERATE
    return QUERY_RETRIEVE if mode in VECTORLESS_MODES else QUERY_EMBED


# --- answers, token by token ------------------------------------------------------------------
REPLY_PREFIX = f"{PREFIX}.reply"
REPLY_ALL = f"{REPLY_PREFIX}.>"


def reply_subject(request_id: str) -> str:
    """Where the events of one answer go, in order."""
    return f"{REPLY_PREFIX}.{request_id}"


# --- request/reply into H.A.D.E.S. ------------------------------------------------------------
RPC_PREFIX = f"{PREFIX}.rpc"
RPC_DOCUMENT_GET = f"{RPC_PREFIX}.documents.get"
RPC_DOCUMENT_LIST = f"{RPC_PREFIX}.documents.list"
RPC_DOCUMENT_CHUNKS = f"{RPC_PREFIX}.documents.chunks"
RPC_DOCUMENT_STATS = f"{RPC_PREFIX}.documents.stats"
RPC_CONTEXT_ADD = f"{RPC_PREFIX}.context.add"
RPC_CONTEXT_GET = f"{RPC_PREFIX}.context.get"
RPC_CONTEXT_CLEAR = f"{RPC_PREFIX}.context.clear"
RPC_HISTORY_GET = f"{RPC_PREFIX}.history.get"
RPC_RELATION_PUT = f"{RPC_PREFIX}.relations.put"
RPC_RELATION_DELETE = f"{RPC_PREFIX}.relations.delete"
RPC_RELATION_LIST = f"{RPC_PREFIX}.relations.list"
RPC_RELATION_GRAPH = f"{RPC_PREFIX}.relations.graph"
RPC_RELATION_RELATED = f"{RPC_PREFIX}.relations.related"
RPC_EMBED = f"{RPC_PREFIX}.embed"
INDEXER_RPCS = (
    RPC_DOCUMENT_GET,
    RPC_DOCUMENT_LIST,
    RPC_DOCUMENT_CHUNKS,
    RPC_DOCUMENT_STATS,
    RPC_CONTEXT_ADD,
    RPC_CONTEXT_GET,
    RPC_CONTEXT_CLEAR,
    RPC_HISTORY_GET,
    RPC_RELATION_PUT,
    RPC_RELATION_DELETE,
    RPC_RELATION_LIST,
    RPC_RELATION_GRAPH,
    RPC_RELATION_RELATED,
)
"""What H.A.D.E.S. answers over request/reply."""


# --- a live re-embedding (``olympus reindex`` against a running stack) ------------------------
ADMIN_PREFIX = f"{PREFIX}.admin"
REINDEX_BEGIN = f"{ADMIN_PREFIX}.reindex.begin"
REINDEX_PAGE = f"{ADMIN_PREFIX}.reindex.page"
REINDEX_WRITE = f"{ADMIN_PREFIX}.reindex.write"
REINDEX_SWITCH = f"{ADMIN_PREFIX}.reindex.switch"
REINDEX_CANCEL = f"{ADMIN_PREFIX}.reindex.cancel"
REINDEX_DROP_OLD = f"{ADMIN_PREFIX}.reindex.drop_old"
REINDEX_RPCS = (
    REINDEX_BEGIN,
    REINDEX_PAGE,
    REINDEX_WRITE,
    REINDEX_SWITCH,
    REINDEX_CANCEL,
    REINDEX_DROP_OLD,
)
"""What H.A.D.E.S. answers to the admin only: not under ``olympus.rpc``, which the gateway may
publish to."""

HEALTH_PREFIX = f"{RPC_PREFIX}.health."


def health_subject(service: str) -> str:
    return f"{HEALTH_PREFIX}{service}"


# --- dead letters -----------------------------------------------------------------------------
DLQ_PREFIX = f"{PREFIX}.dlq"
DLQ_ALL = f"{DLQ_PREFIX}.>"
DLQ_DOCUMENTS = f"{DLQ_PREFIX}.*.*.*"
"""The dead letters that name a document (``dlq_subject`` with a tenant and a document)."""


def dlq_subject(stage: str, tenant: str | None = None, doc_id: str | None = None) -> str:
    """``olympus.dlq.<stage>``; for a document's message ``olympus.dlq.<stage>.<tenant>.<doc>``
    (``<doc>``: ``ids.subject_token``), so deleting the document finds and erases them."""
    if tenant is None or doc_id is None:
        return f"{DLQ_PREFIX}.{stage}"
    return f"{DLQ_PREFIX}.{stage}.{tenant}.{ids.subject_token(doc_id)}"


def dlq_document(tenant: str, doc_id: str) -> str:
    """Every dead letter of one document, at any stage (a subject filter)."""
    return f"{DLQ_PREFIX}.*.{tenant}.{ids.subject_token(doc_id)}"


# --- answers streaming now (the per-key limit across gateway replicas) -------------------------
SLOTS_PREFIX = f"{PREFIX}.slots"
SLOT_LEASE_S = 600.0
"""How long a slot outlives a gateway that died holding it; a live one renews it sooner."""


def slot_subject(holder: str) -> str:
    """One message per answer the holder (a digest of its API key) is streaming."""
    return f"{SLOTS_PREFIX}.{holder}"


# --- services, queue groups and durable consumers ---------------------------------------------
EMBEDDER = "embedder"
INDEXER = "indexer"
GENERATOR = "generator"
WORKERS = (EMBEDDER, INDEXER, GENERATOR)

SERVED_BY = {QUERY_EMBED: EMBEDDER, QUERY_RETRIEVE: INDEXER, QUERY_GENERATE: GENERATOR}
"""Which worker answers a query subject: an error can name what is down."""

DURABLE_EMBEDDER_INGEST = "embedder-ingest"
DURABLE_INDEXER_UPSERT = "indexer-upsert"
DURABLE_INDEXER_DELETE = "indexer-delete"
DURABLE_INDEXER_STATUS = "indexer-status"
DURABLE_INDEXER_TURN = "indexer-turn"
DURABLE_INDEXER_LETTERS = "indexer-letters"

# --- NATS message headers we set ourselves ----------------------------------------------------
HEADER_MSG_ID = "Nats-Msg-Id"


# --- streams ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamSpec:
    """What a JetStream stream holds and how long it keeps it (0 = no limit)."""

    name: str
    subjects: tuple[str, ...]
    max_age_s: float = 0
    memory: bool = False
    max_bytes: int = 0
    duplicate_window_s: float = 120
    work_queue: bool = False  # a message leaves the stream once acknowledged
    description: str = ""
    durables: tuple[str, ...] = field(default=())


INGEST_STREAM = StreamSpec(
    name="OLYMPUS_INGEST",
    subjects=(INGEST_ALL,),
    # A document's text stays only until it is embedded: deleting it then erases it.
    work_queue=True,
    description="Documents to parse, chunk and embed (upserts and deletes, in order)",
    durables=(DURABLE_EMBEDDER_INGEST,),
)
INDEX_STREAM = StreamSpec(
    name="OLYMPUS_INDEX",
    subjects=(INDEX_ALL,),
    work_queue=True,  # each durable filters its own subject: no message has two consumers
    description="Embedded chunks, deletes and status changes for H.A.D.E.S.",
    durables=(
        DURABLE_INDEXER_UPSERT,
        DURABLE_INDEXER_DELETE,
        DURABLE_INDEXER_STATUS,
        DURABLE_INDEXER_TURN,
    ),
)
EVENTS_STREAM = StreamSpec(
    name="OLYMPUS_EVENTS",
    subjects=(EVENTS_ALL,),
    max_age_s=24 * 3600,
    description="Document progress as H.A.D.E.S. records it",
)
DLQ_STREAM = StreamSpec(
    name="OLYMPUS_DLQ",
    subjects=(DLQ_ALL,),
    max_age_s=30 * 24 * 3600,
    description="Messages that failed for good, with the error and the original message",
    # H.A.D.E.S. marks the document a letter names failed (kept: a retry republishes it)
    durables=(DURABLE_INDEXER_LETTERS,),
)
REPLY_STREAM = StreamSpec(
    name="OLYMPUS_REPLY",
    subjects=(REPLY_ALL,),
    max_age_s=15 * 60,
    memory=True,
    max_bytes=256 * 1024 * 1024,  # the oldest answers go first
    duplicate_window_s=60,
    description="Answers as they stream, kept minutes so a dropped client can resume",
)
SLOTS_STREAM = StreamSpec(
    name="OLYMPUS_SLOTS",
    subjects=(f"{SLOTS_PREFIX}.>",),
    max_age_s=SLOT_LEASE_S,
    memory=True,
    description="Answers streaming now, one message each per API key, counted by every gateway",
)
STREAMS = (INGEST_STREAM, INDEX_STREAM, EVENTS_STREAM, DLQ_STREAM, REPLY_STREAM, SLOTS_STREAM)

MODEL_BUCKET = "OLYMPUS_MODEL"
MODEL_KEY = "embedder"
"""KV: the model ``olympus reindex`` moves the embedders to (``messages.ModelMove``)."""

INFLIGHT_BUCKET = "OLYMPUS_INFLIGHT"
"""KV bucket: the messages a worker began and has not finished (a mark left by a death)."""
