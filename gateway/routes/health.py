"""Liveness, readiness and the bus contract."""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from nats.js.errors import NotFoundError

from gateway.deps import ApiKeyDep, BusDep
from schemas import bus

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
