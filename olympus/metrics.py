"""Prometheus metrics, every one defined here so a newcomer finds them in one place.

The gateway serves them at ``/metrics`` (with the bus's consumer, dead-letter and document
gauges, read at scrape time); each worker serves its own on ``OLYMPUS_METRICS_PORT`` (loopback
by default; ``olympus up`` gives the embedder, indexer and generator consecutive ports).
FastStream's middleware adds ``faststream_*`` metrics per subject to the workers: messages
received, processed by outcome, and their durations.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from olympus.logging import get_logger

log = get_logger("olympus.metrics")
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)

# --- gateway ----------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "olympus_http_requests", "HTTP requests by route and status", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "olympus_http_request_seconds", "HTTP request latency (to the response start)", ["route"]
)
CONSUMER_PENDING = Gauge(
    "olympus_consumer_pending", "messages a durable consumer has not yet received", ["consumer"]
)
CONSUMER_ACK_PENDING = Gauge(
    "olympus_consumer_ack_pending", "messages handed out and not yet acknowledged", ["consumer"]
)
CONSUMER_REDELIVERED = Gauge(
    "olympus_consumer_redelivered", "messages delivered more than once, now", ["consumer"]
)
DEAD_LETTERS = Gauge("olympus_dead_letters", "messages in the dead-letter stream")
DOCUMENTS = Gauge("olympus_documents", "documents by status", ["status"])

# --- every worker -----------------------------------------------------------------------------
REDELIVERIES = Counter("olympus_redeliveries", "messages retried after a failure", ["stage"])
DEAD_LETTERED = Counter("olympus_dead_lettered", "messages sent to the dead letters", ["stage"])

# --- embedder ---------------------------------------------------------------------------------
EMBED_BATCH = Histogram("olympus_embed_batch_size", "texts per encoder pass", buckets=_SIZES)
EMBEDDED_TEXTS = Counter("olympus_embedded_texts", "texts embedded", ["kind"])
EMBED_SECONDS = Histogram("olympus_embed_batch_seconds", "encoder pass duration")

# --- generator --------------------------------------------------------------------------------
GENERATE_BATCH = Histogram("olympus_generate_batch_size", "answers per decode step", buckets=_SIZES)
GENERATED_TOKENS = Counter("olympus_generated_tokens", "tokens generated")
ANSWERS = Counter("olympus_answers", "answers finished", ["finish_reason"])
TIME_TO_FIRST_TOKEN = Histogram(
    "olympus_time_to_first_token_seconds", "from accepting a question to its first token"
)


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Expose this process's metrics over HTTP (0: do not)."""
    if port:
        start_http_server(port, addr=host)
        log.info("metrics served", url=f"http://{host}:{port}/metrics")
