"""Liveness, readiness and the bus contract."""

from __future__ import annotations

import asyncio
import contextlib
from functools import cache
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from nats.js.errors import NotFoundError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.bus import BusUnavailable
from gateway.deps import ApiKeyDep, BusDep
from olympus import metrics
from schemas import bus
from schemas.messages import DocumentStats, DocumentStatsReply

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive (no authentication)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(_: ApiKeyDep, bus_: BusDep) -> JSONResponse:
    """NATS connected, every stream present, every worker answering and consuming."""
    checks: dict[str, bool] = {"nats": bus_.connected}
    if bus_.connected:
        for spec in bus.STREAMS:
            checks[f"stream:{spec.name}"] = await _stream_ready(bus_, spec)
        pings = await asyncio.gather(*(bus_.ping(s) for s in bus.WORKERS))
        checks.update({f"worker:{s}": ok for s, ok in zip(bus.WORKERS, pings, strict=True)})
    ready = all(checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


async def _stream_ready(bus_: BusDep, spec: bus.StreamSpec) -> bool:
    try:
        await bus_.js.stream_info(spec.name)
        for durable in spec.durables:
            await bus_.js.consumer_info(spec.name, durable)
    except (NotFoundError, TimeoutError):
        return False
    return True


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus(bus_: BusDep) -> PlainTextResponse:
    """Prometheus metrics (no authentication, like /healthz: counts, never content). Beside the
    gateway's own: every durable consumer's pending counts, the dead letters, documents by
    status, read from NATS now."""
    if bus_.connected:
        await _bus_gauges(bus_)
    return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _bus_gauges(bus_: BusDep) -> None:
    for spec in bus.STREAMS:
        for durable in spec.durables:
            with contextlib.suppress(NotFoundError, TimeoutError):
                info = await bus_.js.consumer_info(spec.name, durable)
                metrics.CONSUMER_PENDING.labels(durable).set(info.num_pending or 0)
                metrics.CONSUMER_ACK_PENDING.labels(durable).set(info.num_ack_pending or 0)
                metrics.CONSUMER_REDELIVERED.labels(durable).set(info.num_redelivered or 0)
    with contextlib.suppress(NotFoundError, TimeoutError):
        dlq = await bus_.js.stream_info(bus.DLQ_STREAM.name)
        metrics.DEAD_LETTERS.set(dlq.state.messages)
    with contextlib.suppress(BusUnavailable):
        stats = await bus_.request(
            bus.RPC_DOCUMENT_STATS, DocumentStats(), DocumentStatsReply, timeout_s=2
        )
        for status in ("queued", "processing", "indexed", "failed"):
            metrics.DOCUMENTS.labels(status).set(stats.by_status.get(status, 0))


@cache
def asyncapi_document() -> dict[str, Any]:
    from faststream.specification import AsyncAPI

    from workers.embedder.app import broker as embedder
    from workers.generator.app import broker as generator
    from workers.indexer.app import broker as indexer

    spec = AsyncAPI(
        embedder,
        indexer,
        generator,
        title="Olympus bus",
        version="1",
        description="Publish IngestDocument to olympus.ingest.<collection> to add documents.",
    )
    return spec.to_specification().to_jsonable()


@router.get("/asyncapi.json")
async def asyncapi() -> dict[str, Any]:
    """The NATS contract (AsyncAPI 3), generated from the worker apps."""
    return asyncapi_document()
