"""The gateway's side of the bus: publish work, ask H.A.D.E.S., follow document events."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import TypeVar

import nats
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError, ConnectionReconnectingError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import DeliverPolicy, PubAck
from nats.js.errors import NotFoundError
from pydantic import BaseModel, ValidationError

from gateway.errors import Unavailable
from olympus import delivery, health, telemetry
from olympus.logging import get_logger
from olympus.settings import CommonSettings
from schemas import subjects
from schemas.messages import (
    Accepted,
    ChatControl,
    ChatEvent,
    ControlAction,
    DeadLetter,
    DocumentEvent,
    ErrorInfo,
    IngestDocument,
    Message,
)

R = TypeVar("R", bound=BaseModel)
LIVE_UNFOLLOWED_S = 60.0
PROBE_REPLY_S = 2.0  # a generator's event loop answers a probe in well under that
log = get_logger("olympus.gateway")


class NatsClient:
    def __init__(self, common: CommonSettings, timeout_s: float) -> None:
        self.common = common
        self.timeout_s = timeout_s
        self.nc: nats.NATS | None = None
        self._listeners: dict[tuple[str, str], set[asyncio.Queue[DocumentEvent]]] = defaultdict(set)
        self._live: dict[str, tuple[Subscription, float]] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def connect(self) -> None:
        self.nc = await delivery.connect(self.common, "gateway")
        self.js = self.nc.jetstream()
        await self.nc.subscribe(subjects.EVENTS_ALL, cb=self._on_event)

    async def close(self) -> None:
        if self.nc is None:
            return
        try:
            await self.nc.drain()
        except (ConnectionReconnectingError, ConnectionClosedError):
            # NATS went first (a whole stack stopping at once): nothing is left to drain.
            await self.nc.close()

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def publish_ingest(self, doc: IngestDocument, msg_id: str) -> PubAck:
        try:
            return await self.js.publish(
                subjects.ingest_subject(doc.tenant, doc.collection),
                doc.model_dump_json().encode(),
                timeout=self.timeout_s,
                headers=telemetry.inject_headers({subjects.HEADER_MSG_ID: msg_id}),
            )
        except (TimeoutError, NatsTimeout, NoRespondersError) as exc:
            raise Unavailable("the ingest stream did not acknowledge the document") from exc

    async def ingest_letter(self, tenant: str, doc_id: str) -> tuple[int, DeadLetter] | None:
        """A document's last dead letter from the ingest stage (it holds the document as it was
        sent) and its sequence in the dead-letter stream; None when there is none."""
        subject = subjects.dlq_subject(subjects.INGEST_STAGE, tenant, doc_id)
        try:
            raw = await self.js.get_last_msg(subjects.DLQ_STREAM.name, subject)
        except NotFoundError:
            return None
        except (TimeoutError, NatsTimeout, NoRespondersError) as exc:
            raise Unavailable("the dead-letter stream did not answer") from exc
        if raw.seq is None or raw.data is None:  # the server always says; typed optional
            return None
        try:
            return raw.seq, DeadLetter.model_validate_json(raw.data)
        except ValidationError:  # not a letter our workers wrote: nothing to retry from
            return None

    async def forget_letter(self, seq: int) -> None:
        """Remove a dead letter a retry republished. Not finding it (another retry took it) or
        failing to is no error: the retry has happened, and a letter of a version the document
        has moved past retries nothing (the route checks the version)."""
        try:
            await self.js.delete_msg(subjects.DLQ_STREAM.name, seq)
        except NotFoundError:
            pass
        except (TimeoutError, NatsTimeout, NoRespondersError) as exc:
            log.warning("could not remove a retried dead letter", seq=seq, error=repr(exc))

    async def queued(self, tenant: str) -> int:
        """How many of ``tenant``'s ingest messages wait in the stream (a work queue: a message
        leaves once processed), counted by JetStream, so every gateway replica sees the same."""
        try:
            return await self._count(
                subjects.INGEST_STREAM.name, subjects.ingest_subject(tenant, "*")
            )
        except (TimeoutError, NatsTimeout, NoRespondersError) as exc:
            raise Unavailable("the ingest stream did not answer") from exc

    async def take_slot(self, holder: str) -> tuple[int, int]:
        """Record one more answer streaming for ``holder``; return its slot (a stream sequence)
        and how many the holder now streams through every gateway."""
        subject = subjects.slot_subject(holder)
        ack = await self.js.publish(subject, b"", timeout=self.timeout_s)
        return ack.seq, await self._count(subjects.SLOTS_STREAM.name, subject)

    async def _count(self, stream: str, subject_filter: str) -> int:
        """How many messages ``stream`` holds on the subjects the filter matches."""
        info = await self.js.stream_info(stream, subjects_filter=subject_filter)
        return sum((info.state.subjects or {}).values())

    async def free_slot(self, slot: int) -> None:
        with contextlib.suppress(NotFoundError):  # expired already: a very long answer
            await self.js.delete_msg(subjects.SLOTS_STREAM.name, slot)

    async def publish_index(self, subject: str, message: Message, msg_id: str) -> None:
        try:
            await self.js.publish(
                subject,
                message.model_dump_json().encode(),
                timeout=self.timeout_s,
                headers=telemetry.inject_headers({subjects.HEADER_MSG_ID: msg_id}),
            )
        except (TimeoutError, NatsTimeout, NoRespondersError) as exc:
            raise Unavailable("the index stream did not acknowledge the message") from exc

    async def request(
        self, subject: str, message: Message, reply: type[R], timeout_s: float | None = None
    ) -> R:
        assert self.nc is not None
        try:
            answer = await self.nc.request(
                subject,
                message.model_dump_json().encode(),
                timeout=timeout_s or self.timeout_s,
                headers=telemetry.inject_headers(),
            )
        except NoRespondersError as exc:
            service = subjects.SERVED_BY.get(subject, "worker")
            raise Unavailable(f"the {service} is not running ({subject})") from exc
        except (TimeoutError, NatsTimeout) as exc:
            raise Unavailable(f"no answer on {subject} in time") from exc
        return reply.model_validate_json(answer.data)

    # --- chat: start an answer, follow its events, steer it ---------------------------------
    async def start_chat(self, subject: str, message: Message, request_id: str) -> Accepted:
        """Hand a chat request to its first stage; the chain answers once the generator has it.

        The answer's subject is subscribed first, on core NATS: the live stream then needs no
        JetStream consumer (one round trip less before the first token); OLYMPUS_REPLY keeps
        the same events for a client that resumes.
        """
        assert self.nc is not None
        self._sweep_live()
        live = await self.nc.subscribe(subjects.reply_subject(request_id))
        self._live[request_id] = (live, time.monotonic())
        try:
            accepted = await self.request(subject, message, Accepted)
        except BaseException:
            await self._drop_live(request_id)
            raise
        if accepted.error is not None:
            await self._drop_live(request_id)
        return accepted

    async def follow(
        self, request_id: str, first_timeout_s: float, idle_timeout_s: float, probe_s: float
    ) -> AsyncIterator[ChatEvent]:
        """The answer's events from the first; ends after the last. Live from the subscription
        ``start_chat`` made, else (a resume) from OLYMPUS_REPLY.

        Every ``probe_s`` of silence the generator is asked whether it still works on the
        answer: one that died mid-answer ends the stream with an error event within seconds.
        One that is alive but silent longer than the timeouts (stuck) ends it too.
        """
        live = self._live.pop(request_id, None)
        if live is not None:
            subscription = live[0]
        else:
            subscription = await self.js.subscribe(
                subjects.reply_subject(request_id),
                stream=subjects.REPLY_STREAM.name,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.ALL,
            )
        limit, heard, suspect = first_timeout_s, time.monotonic(), False
        try:
            while True:
                try:
                    msg = await subscription.next_msg(timeout=PROBE_REPLY_S if suspect else probe_s)
                except (TimeoutError, NatsTimeout):
                    if suspect:  # no event came in after the probe went unanswered either
                        yield _error(request_id, "the generator working on this answer stopped")
                        return
                    silent = time.monotonic() - heard
                    if silent >= limit:
                        yield _error(request_id, f"the generator sent nothing for {silent:.0f}s")
                        return
                    # An answer that has just ended is no longer held: look once more.
                    suspect = not await self._held(request_id)
                    continue
                event = ChatEvent.model_validate_json(msg.data)
                yield event
                if event.event in ("done", "error"):
                    return
                limit, heard, suspect = idle_timeout_s, time.monotonic(), False
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _drop_live(self, request_id: str) -> None:
        live = self._live.pop(request_id, None)
        if live is not None:
            with contextlib.suppress(Exception):
                await live[0].unsubscribe()

    def _sweep_live(self) -> None:
        """Forget live subscriptions nobody followed (a client gone before its stream began)."""
        stale = time.monotonic() - LIVE_UNFOLLOWED_S
        for request_id, (_, since) in list(self._live.items()):
            if since < stale:
                task = asyncio.create_task(self._drop_live(request_id))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def last_event(self, request_id: str) -> ChatEvent | None:
        """The newest stored event of an answer, None once the stream has let it go."""
        try:
            stored = await self.js.get_last_msg(
                subjects.REPLY_STREAM.name, subjects.reply_subject(request_id)
            )
        except NotFoundError:
            return None
        return ChatEvent.model_validate_json(stored.data or b"")

    async def control(self, request_id: str, action: ControlAction) -> None:
        assert self.nc is not None
        message = ChatControl(request_id=request_id, action=action)
        await self.nc.publish(subjects.QUERY_CONTROL, message.model_dump_json().encode())

    async def _held(self, request_id: str) -> bool:
        """Whether a generator answers that it is working on the answer."""
        assert self.nc is not None
        probe = ChatControl(request_id=request_id, action="probe")
        try:
            await self.nc.request(
                subjects.QUERY_CONTROL, probe.model_dump_json().encode(), timeout=PROBE_REPLY_S
            )
        except (TimeoutError, NatsTimeout, NoRespondersError):
            return False
        return True

    async def workers_up(self, timeout_s: float = 1.0) -> dict[str, bool]:
        assert self.nc is not None
        return await health.probe_all(self.nc, timeout_s)

    # --- document events, fanned out to whoever follows a document ---------------------------
    async def _on_event(self, msg: Msg) -> None:
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


def _error(request_id: str, message: str) -> ChatEvent:
    return ChatEvent(
        request_id=request_id,
        tenant="unknown",
        seq=0,
        event="error",
        finish_reason="error",
        error=ErrorInfo(
            code="unavailable",
            message=f"{message}; ask again",
        ),
    )
