"""The gateway's side of the bus: publish work, ask H.A.D.E.S., follow document events."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import TypeVar

import nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import PubAck
from pydantic import BaseModel

from olympus import bus as olympus_bus
from olympus.logging import get_logger
from olympus.settings import CommonSettings
from schemas import bus
from schemas.messages import DocumentEvent, HealthPing, HealthReply, IngestDocument, Message

R = TypeVar("R", bound=BaseModel)
log = get_logger("olympus.gateway")


class BusUnavailable(Exception):
    """Nobody answered in time: the caller gets a 503, not a hang."""


class GatewayBus:
    def __init__(self, common: CommonSettings, timeout_s: float) -> None:
        self.common = common
        self.timeout_s = timeout_s
        self.nc: nats.NATS | None = None
        self._listeners: dict[tuple[str, str], set[asyncio.Queue[DocumentEvent]]] = defaultdict(set)

    async def connect(self) -> None:
        self.nc = await olympus_bus.connect(self.common, "gateway")
        self.js = self.nc.jetstream()
        await self.nc.subscribe(bus.EVENTS_ALL, cb=self._on_event)

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.drain()

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def publish_ingest(self, doc: IngestDocument, msg_id: str) -> PubAck:
        try:
            return await self.js.publish(
                bus.ingest_subject(doc.collection),
                doc.model_dump_json().encode(),
                timeout=self.timeout_s,
                headers={bus.HEADER_MSG_ID: msg_id},
            )
        except (TimeoutError, NatsTimeout, NoRespondersError) as exc:
            raise BusUnavailable("the ingest stream did not acknowledge the document") from exc

    async def publish_index(self, subject: str, message: Message, msg_id: str) -> None:
        try:
            await self.js.publish(
                subject,
                message.model_dump_json().encode(),
                timeout=self.timeout_s,
                headers={bus.HEADER_MSG_ID: msg_id},
            )
        except (TimeoutError, NatsTimeout, NoRespondersError) as exc:
            raise BusUnavailable("the index stream did not acknowledge the message") from exc

    async def request(
        self, subject: str, message: Message, reply: type[R], timeout_s: float | None = None
    ) -> R:
        assert self.nc is not None
        try:
            answer = await self.nc.request(
                subject, message.model_dump_json().encode(), timeout=timeout_s or self.timeout_s
            )
        except NoRespondersError as exc:
            raise BusUnavailable(f"no worker is serving {subject}") from exc
        except (TimeoutError, NatsTimeout) as exc:
            raise BusUnavailable(f"no answer on {subject} in time") from exc
        return reply.model_validate_json(answer.data)

    async def ping(self, service: str, timeout_s: float = 1.0) -> bool:
        try:
            reply = await self.request(
                bus.health_subject(service), HealthPing(), HealthReply, timeout_s
            )
        except BusUnavailable:
            return False
        return reply.ok

    # --- document events, fanned out to whoever follows a document ---------------------------
    async def _on_event(self, msg: nats.aio.msg.Msg) -> None:
        try:
            event = DocumentEvent.model_validate_json(msg.data)
        except ValueError:
            log.warning("ignored malformed document event", subject=msg.subject)
            return
        for queue in self._listeners.get((event.tenant, event.doc_id), ()):
            queue.put_nowait(event)

    def listen(self, tenant: str, doc_id: str) -> asyncio.Queue[DocumentEvent]:
        queue: asyncio.Queue[DocumentEvent] = asyncio.Queue()
        self._listeners[(tenant, doc_id)].add(queue)
        return queue

    def unlisten(self, tenant: str, doc_id: str, queue: asyncio.Queue[DocumentEvent]) -> None:
        listeners = self._listeners.get((tenant, doc_id))
        if listeners is not None:
            listeners.discard(queue)
            if not listeners:
                del self._listeners[(tenant, doc_id)]
