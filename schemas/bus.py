"""Every subject, stream and durable consumer name on the Olympus bus.

No other module spells a subject. Read this file top to bottom and you have seen the whole bus:

    olympus.ingest.<collection>        documents in (JetStream OLYMPUS_INGEST) -> embedder
    olympus.index.upsert|delete|status embedder/gateway -> indexer (JetStream OLYMPUS_INDEX)
    olympus.events.document.<status>   indexer -> anyone (JetStream OLYMPUS_EVENTS, short-lived)
    olympus.query.embed                gateway -> embedder (core request/reply)
    olympus.query.retrieve             embedder -> indexer, replies to the gateway's inbox
    olympus.rpc.<area>.<verb>          gateway/CLI -> indexer (core request/reply)
    olympus.rpc.health.<service>       liveness ping every worker answers
    olympus.dlq.<stage>                what finally failed, with the error (JetStream OLYMPUS_DLQ)
"""

from __future__ import annotations

from dataclasses import dataclass, field

PREFIX = "olympus"

# --- ingest -----------------------------------------------------------------------------------
INGEST_PREFIX = f"{PREFIX}.ingest"
INGEST_ALL = f"{INGEST_PREFIX}.>"


def ingest_subject(collection: str) -> str:
    """The subject a document for ``collection`` is published to."""
    return f"{INGEST_PREFIX}.{collection}"


# --- index (H.A.D.E.S. input) -----------------------------------------------------------------
INDEX_PREFIX = f"{PREFIX}.index"
INDEX_UPSERT = f"{INDEX_PREFIX}.upsert"
INDEX_DELETE = f"{INDEX_PREFIX}.delete"
INDEX_STATUS = f"{INDEX_PREFIX}.status"
INDEX_ALL = f"{INDEX_PREFIX}.>"

# --- document events --------------------------------------------------------------------------
EVENTS_PREFIX = f"{PREFIX}.events.document"
EVENTS_ALL = f"{EVENTS_PREFIX}.>"


def event_subject(status: str) -> str:
    return f"{EVENTS_PREFIX}.{status}"


# --- query path (core NATS: the client is waiting, nothing to keep) ---------------------------
QUERY_EMBED = f"{PREFIX}.query.embed"
QUERY_RETRIEVE = f"{PREFIX}.query.retrieve"

# --- request/reply into H.A.D.E.S. ------------------------------------------------------------
RPC_DOCUMENT_GET = f"{PREFIX}.rpc.documents.get"
RPC_DOCUMENT_LIST = f"{PREFIX}.rpc.documents.list"
RPC_DOCUMENT_STATS = f"{PREFIX}.rpc.documents.stats"
RPC_CONTEXT_ADD = f"{PREFIX}.rpc.context.add"
RPC_CONTEXT_GET = f"{PREFIX}.rpc.context.get"
RPC_CONTEXT_CLEAR = f"{PREFIX}.rpc.context.clear"


def health_subject(service: str) -> str:
    return f"{PREFIX}.rpc.health.{service}"


# --- dead letters -----------------------------------------------------------------------------
DLQ_PREFIX = f"{PREFIX}.dlq"
DLQ_ALL = f"{DLQ_PREFIX}.>"


def dlq_subject(stage: str) -> str:
    return f"{DLQ_PREFIX}.{stage}"


# --- services, queue groups and durable consumers ---------------------------------------------
EMBEDDER = "embedder"
INDEXER = "indexer"
WORKERS = (EMBEDDER, INDEXER)

DURABLE_EMBEDDER_INGEST = "embedder-ingest"
DURABLE_INDEXER_UPSERT = "indexer-upsert"
DURABLE_INDEXER_DELETE = "indexer-delete"
DURABLE_INDEXER_STATUS = "indexer-status"

# --- NATS message headers we set ourselves ----------------------------------------------------
HEADER_MSG_ID = "Nats-Msg-Id"


# --- streams ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamSpec:
    """What a JetStream stream holds and how long it keeps it (0 = no limit)."""

    name: str
    subjects: tuple[str, ...]
    max_age_s: float = 0
    duplicate_window_s: float = 120
    description: str = ""
    durables: tuple[str, ...] = field(default=())


INGEST_STREAM = StreamSpec(
    name="OLYMPUS_INGEST",
    subjects=(INGEST_ALL,),
    description="Documents to parse, chunk and embed (upserts and deletes, in order)",
    durables=(DURABLE_EMBEDDER_INGEST,),
)
INDEX_STREAM = StreamSpec(
    name="OLYMPUS_INDEX",
    subjects=(INDEX_ALL,),
    description="Embedded chunks, deletes and status changes for H.A.D.E.S.",
    durables=(DURABLE_INDEXER_UPSERT, DURABLE_INDEXER_DELETE, DURABLE_INDEXER_STATUS),
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
)
STREAMS = (INGEST_STREAM, INDEX_STREAM, EVENTS_STREAM, DLQ_STREAM)
