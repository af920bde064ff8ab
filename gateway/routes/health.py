"""Liveness, readiness and the bus contract."""

from __future__ import annotations

import contextlib
import json
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from nats.js.errors import NotFoundError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.deps import ApiKeyDep, NatsDep
from gateway.errors import Unavailable
from gateway.models import problems
from olympus import metrics
from schemas import subjects
from schemas.messages import DocumentStats, DocumentStatsReply

router = APIRouter(tags=["health"])
ASYNCAPI = Path(__file__).resolve().parent.parent / "asyncapi.json"


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive (no authentication)."""
    return {"status": "ok"}


@router.get("/readyz", responses=problems(401, 429, 503))
async def readyz(_: ApiKeyDep, nats_client: NatsDep) -> JSONResponse:
    """NATS connected, every stream present, every worker answering and consuming."""
    checks: dict[str, bool] = {"nats": nats_client.connected}
    if nats_client.connected:
        for spec in subjects.STREAMS:
            checks[f"stream:{spec.name}"] = await _stream_ready(nats_client, spec)
        workers = await nats_client.workers_up()
        checks.update({f"worker:{s}": ok for s, ok in workers.items()})
    ready = all(checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


async def _stream_ready(nats_client: NatsDep, spec: subjects.StreamSpec) -> bool:
    try:
        await nats_client.js.stream_info(spec.name)
        for durable in spec.durables:
            await nats_client.js.consumer_info(spec.name, durable)
    except (NotFoundError, TimeoutError):
        return False
    return True


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus(nats_client: NatsDep) -> PlainTextResponse:
    """Prometheus metrics (no authentication, like /healthz: counts, never content). Beside the
    gateway's own: every durable consumer's pending counts, the dead letters, documents by
    status, read from NATS now."""
    if nats_client.connected:
        await _bus_gauges(nats_client)
    return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _bus_gauges(nats_client: NatsDep) -> None:
    for spec in subjects.STREAMS:
        for durable in spec.durables:
            with contextlib.suppress(NotFoundError, TimeoutError):
                info = await nats_client.js.consumer_info(spec.name, durable)
                metrics.CONSUMER_PENDING.labels(durable).set(info.num_pending or 0)
                metrics.CONSUMER_ACK_PENDING.labels(durable).set(info.num_ack_pending or 0)
                metrics.CONSUMER_REDELIVERED.labels(durable).set(info.num_redelivered or 0)
    with contextlib.suppress(NotFoundError, TimeoutError):
        dlq = await nats_client.js.stream_info(subjects.DLQ_STREAM.name)
        metrics.DEAD_LETTERS.set(dlq.state.messages)
    with contextlib.suppress(Unavailable):
        stats = await nats_client.request(
            subjects.RPC_DOCUMENT_STATS, DocumentStats(), DocumentStatsReply, timeout_s=2
        )
        for status in ("queued", "processing", "indexed", "failed"):
            metrics.DOCUMENTS.labels(status).set(stats.by_status.get(status, 0))


@cache
def asyncapi_document() -> dict[str, Any]:
    # Generated from the worker apps by ``python -m olympus.asyncapi`` (checked by a test):
    # the gateway imports no worker module and so no model library.
    return dict(json.loads(ASYNCAPI.read_text()))


@router.get("/asyncapi.json")
async def asyncapi() -> dict[str, Any]:
    """The NATS contract (AsyncAPI 3), generated from the worker apps."""
    return asyncapi_document()
