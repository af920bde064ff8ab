"""What every worker does the same way, in one place: settings, broker, logging, metrics,
streams, the health responder and the lifespan.

A worker uses the streams and never sets them up (``olympus.access``). A worker's ``app.py``
only says what is its own: a ``start`` that builds its runtime (the model, the stores) and the
subscribers that hand messages to that runtime. Nothing is built at import:

    def create_app(common=None, settings=None) -> FastStream:
        worker = Worker(subjects.EMBEDDER, common or CommonSettings(), start=...)
        worker.broker.include_router(router(worker, settings))
        return worker.app()

The runtime is not a module global: subscribers reach it through the ``Worker`` they were built
with (``worker.runtime``), set once ``start`` has returned — before any subscriber consumes, since
FastStream starts the broker after the startup hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Generic, TypeVar

import uvloop
from faststream import FastStream
from faststream.nats import NatsBroker

from olympus import delivery, metrics
from olympus.alive import HEARTBEAT_EVERY_S
from olympus.logging import configure, get_logger
from olympus.settings import CommonSettings
from schemas import subjects
from schemas.messages import HealthPing, HealthReply

R = TypeVar("R")


class Worker(Generic[R]):
    """One worker process: its broker (with the delivery rules) and, once started, its runtime."""

    def __init__(
        self,
        service: str,
        common: CommonSettings,
        start: Callable[[Worker[R]], Awaitable[R]],
        stop: Callable[[R], Awaitable[None]] | None = None,
        models: Callable[[R], list[str]] | None = None,
    ) -> None:
        self.service = service
        self.common = common
        configure(service, common.log_level, common.log_format)
        self.policy = delivery.DeliveryPolicy.from_settings(common)
        self.broker: NatsBroker = delivery.worker_broker(common, self.policy)
        self.log = get_logger(f"olympus.{service}")
        self._start = start
        self._stop = stop
        self._models = models  # what a health answer lists (an embedder's models)
        self._runtime: R | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self.broker.subscriber(subjects.health_subject(service))(self.on_health)

    @property
    def runtime(self) -> R:
        if self._runtime is None:
            raise RuntimeError(f"the {self.service} has not started")
        return self._runtime

    async def on_health(self, body: HealthPing) -> HealthReply:
        runtime = self._runtime
        models = self._models(runtime) if self._models and runtime is not None else []
        return HealthReply(service=self.service, ok=runtime is not None, models=models)

    async def _started(self) -> None:
        metrics.serve(self.common.metrics_port, self.common.metrics_host)
        await delivery.await_streams(self.common)
        self._runtime = await self._start(self)
        if self.common.heartbeat_file is not None:
            self._heartbeat = asyncio.create_task(self._beat(self.common.heartbeat_file))

    async def _beat(self, path: Path) -> None:
        """Touch ``path`` while started and connected: the container's healthcheck reads it
        (``olympus.alive``); a worker cut off from the bus goes stale and is restarted."""
        while True:
            connection = self.broker._connection  # FastStream keeps the nats-py client here
            if self._runtime is not None and connection is not None and connection.is_connected:
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(path.touch)
            await asyncio.sleep(HEARTBEAT_EVERY_S)

    async def _stopped(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        # After the broker has closed: nothing hands the runtime work any more.
        runtime, self._runtime = self._runtime, None
        if self._stop is not None and runtime is not None:
            await self._stop(runtime)

    def app(self) -> FastStream:
        """The app to run (``run``) or, in a test, to enter (``async with app:``): both start
        the runtime before the subscribers consume and stop it after they have stopped."""
        return FastStream(
            self.broker,
            on_startup=[self._started],
            after_shutdown=[self._stopped],
            logger=logging.getLogger(f"olympus.{self.service}"),
        )


def run(app: FastStream) -> None:
    """``python -m workers.<name>``: run the app on uvloop until SIGTERM/SIGINT."""
    uvloop.run(app.run())
