"""Bus plumbing every worker shares: streams, consumer settings, retries and dead letters.

The delivery rules of DESIGN.md live here, in one place, for every JetStream subscriber:
ack after the handler returns; on an error nak with a back-off; an invalid message or one
that failed ``max_deliver`` times goes to ``olympus.dlq.<stage>`` (``.<tenant>.<doc>`` added
when it names a document) with the error and the original, and is terminated. Long work
sends in-progress acks so AckWait does not redeliver it. A work-queue message is erased once
it is done with (handled or dead-lettered), before its ack: an ack only unlinks it, leaving
its bytes (a document's text) in the stream's block file.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio
import nats
from faststream import AckPolicy, BaseMiddleware
from faststream._internal.endpoint.subscriber.mixins import ConcurrentMixin
from faststream.exceptions import HandlerException, NackMessage, RejectMessage
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.prometheus import NatsPrometheusMiddleware
from faststream.nats.security import NatsSecurity, NatsUserPassword
from faststream.nats.subscriber.usecases.stream_pull_subscriber import PullStreamSubscriber
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError, NotFoundError, ServiceUnavailableError
from nats.js.kv import KeyValue
from opentelemetry import propagate, trace
from prometheus_client import REGISTRY
from pydantic import ValidationError

from olympus import metrics, telemetry
from olympus.logging import get_logger
from schemas import ids, subjects
from schemas.messages import (
    IDENTIFIER_PATTERN,
    NAME_PATTERN,
    Accepted,
    DeadLetter,
    ErrorCode,
    ErrorInfo,
    Message,
    Reply,
)

if TYPE_CHECKING:
    from faststream.message import StreamMessage
    from nats.js import JetStreamContext

    from olympus.settings import CommonSettings

log = get_logger("olympus.delivery")


class PermanentError(Exception):
    """Work that can never succeed however often it is retried: dead-letter it at once."""


@dataclass(frozen=True)
class DeliveryPolicy:
    max_deliver: int
    backoff_s: tuple[float, ...]
    ack_wait_s: float
    inbox_prefix: str = "_INBOX"  # a pull consumer fetches into the worker's own inboxes

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> DeliveryPolicy:
        inbox = settings.nats_connect_options().get("inbox_prefix", cls.inbox_prefix)
        return cls(settings.max_deliver, settings.retry_backoff_s, settings.ack_wait_s, inbox)

    def delay(self, attempt: int) -> float:
        if not self.backoff_s:
            return 0.0
        return self.backoff_s[min(attempt, len(self.backoff_s)) - 1]

    def durable(
        self, stream: subjects.StreamSpec, durable: str, concurrency: int, fetch: int = 32
    ) -> dict[str, Any]:
        """Subscriber options for a durable pull consumer that follows these rules."""
        return {
            "stream": JStream(stream.name, declare=False),  # ensure_streams declares them
            "durable": durable,
            "config": self.consumer_config(durable),
            "pull_sub": PullSub(batch_size=fetch, timeout=1.0),
            "max_workers": concurrency,
            "ack_policy": AckPolicy.NACK_ON_ERROR,
            # FastStream passes its own "_INBOX." to pull_subscribe, not the connection's prefix.
            "inbox_prefix": f"{self.inbox_prefix}.".encode(),
        }

    def consumer_config(self, durable: str) -> api.ConsumerConfig:
        # One delivery more than we retry: when a worker died mid-message on the last attempt,
        # that extra delivery is what lets us dead-letter it instead of the server dropping it.
        return api.ConsumerConfig(
            durable_name=durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_deliver=self.max_deliver + 1,
            max_ack_pending=1000,
        )


def stream_config(
    spec: subjects.StreamSpec, max_message_bytes: int, replicas: int = 1
) -> api.StreamConfig:
    return api.StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        description=spec.description,
        retention=api.RetentionPolicy.WORK_QUEUE if spec.work_queue else api.RetentionPolicy.LIMITS,
        storage=api.StorageType.MEMORY if spec.memory else api.StorageType.FILE,
        max_age=spec.max_age_s or None,
        max_bytes=spec.max_bytes or None,
        duplicate_window=spec.duplicate_window_s,
        max_msg_size=max_message_bytes,
        num_replicas=replicas,
    )


async def ensure_streams(
    js: JetStreamContext, max_message_bytes: int, replicas: int = 1
) -> list[str]:
    """Create every stream, or update it to the current configuration. Safe to repeat."""
    changed = []
    buckets = {
        subjects.INFLIGHT_BUCKET: (
            24 * 3600,
            "messages a worker began and has not finished (poison detection)",
        ),
        subjects.MODEL_BUCKET: (0, "the model olympus reindex moves the embedders to"),
    }
    for bucket, (ttl, description) in buckets.items():
        try:
            await js.key_value(bucket)
        except BucketNotFoundError:
            await js.create_key_value(
                api.KeyValueConfig(
                    bucket=bucket,
                    history=1,
                    ttl=ttl or None,
                    replicas=replicas,
                    description=description,
                )
            )
            changed.append(f"created KV {bucket}")
    for spec in subjects.STREAMS:
        config = stream_config(spec, max_message_bytes, replicas)
        try:
            info = await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(config)
            changed.append(f"created {spec.name}")
            continue
        if info.config.retention != config.retention:
            # JetStream cannot change a stream's retention in place. An empty stream is made
            # again; one holding messages keeps its retention until it has drained.
            if info.state.messages:
                log.warning(
                    "stream keeps its old retention until it is empty",
                    stream=spec.name,
                    messages=info.state.messages,
                )
                changed.append(f"kept {spec.name} ({info.state.messages} messages)")
                continue
            await js.delete_stream(spec.name)
            await js.add_stream(config)
            changed.append(f"recreated {spec.name} ({config.retention})")
            continue
        await js.update_stream(config)
        changed.append(f"updated {spec.name}")
    return changed


async def prepare_streams(settings: CommonSettings) -> list[str]:
    """Create or update the streams: the admin's job (``olympus up``, ``olympus streams``)."""
    nc = await connect(settings, "stream-setup")
    try:
        js = nc.jetstream()
        return await ensure_streams(js, settings.max_message_bytes, settings.stream_replicas)
    finally:
        await nc.close()


async def prepare_streams_when_ready(settings: CommonSettings, timeout_s: float) -> list[str]:
    """``prepare_streams`` once JetStream can answer: a server just started may not listen yet,
    and a cluster answers only once its nodes have elected a leader (seconds after they
    listen)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await prepare_streams(settings)
        except (nats.js.errors.APIError, nats.errors.NoServersError, NoRespondersError,
                TimeoutError, OSError) as exc:  # fmt: skip
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"JetStream did not become available in {timeout_s:.0f} s: {exc}"
                ) from exc
            await asyncio.sleep(0.5)


async def await_streams(settings: CommonSettings, timeout_s: float = 60.0) -> None:
    """Wait until every stream exists. Workers may look at streams, never make or change them
    (``olympus.access``): a worker started before the setup waits for it, then says what is
    missing."""
    nc = await connect(settings, "stream-check")
    deadline = time.monotonic() + timeout_s
    try:
        js = nc.jetstream()
        for spec in subjects.STREAMS:
            while True:
                try:
                    await js.stream_info(spec.name)
                    break
                except NotFoundError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"the stream {spec.name} does not exist: set the streams up with "
                            "`olympus streams` (`olympus up` does it by itself)"
                        ) from None
                    await asyncio.sleep(0.5)
    finally:
        await nc.close()


def fetch_times_out_as_nats_says() -> None:
    """Make a pull fetch that times out raise ``nats.errors.TimeoutError``, always.

    nats-py 2.16 raises a plain ``asyncio.TimeoutError`` from ``PullSubscription.fetch`` when
    the deadline has passed by the time the server's 408 arrives (``js/client.py``,
    ``_fetch_n``), while FastStream 0.7.8's pull loop suppresses only the nats error, its
    subclass. An idle worker then logged "Task-N raised an exception, retrying..." with a
    traceback every so often. Where that happens nothing is wrong: the fetch found no message.
    Safe to call more than once; remove when nats-py raises its own error there.
    """
    cls = JetStreamContext.PullSubscription
    if getattr(cls.fetch, "_olympus_timeouts", False):
        return
    original = cls.fetch

    @functools.wraps(original)
    async def fetch(
        self: JetStreamContext.PullSubscription, *args: Any, **kwargs: Any
    ) -> list[Msg]:
        try:
            return await original(self, *args, **kwargs)
        except NatsTimeoutError:
            raise
        except TimeoutError as exc:
            raise NatsTimeoutError from exc

    fetch._olympus_timeouts = True  # type: ignore[attr-defined]
    cls.fetch = fetch  # type: ignore[method-assign]


def hand_back_what_never_started() -> None:
    """Make a stopping subscriber hand back (nak) the messages it fetched and never began.

    FastStream 0.7.8's concurrent subscribers take a message in two waits for a free worker
    (``ConcurrentMixin._put_msg``, then ``_consume_msg``) before handling it; a stop cancels
    what waits there without a word to the server, so each such message waited out AckWait
    before anyone got it again (bench/chaos.py, SIGTERM: the last documents 60 s late). A
    message that began is handed back by ``DeliveryMiddleware``; what the pull loop fetched
    and never passed on, by ``_consume_pull`` (set here too). The nak is a plain publish,
    sent by the connection's drain that follows. Safe to call more than once; remove when
    FastStream hands them back itself.
    """
    cls = ConcurrentMixin
    if getattr(cls._put_msg, "_olympus_hands_back", False):
        return
    put = cls._put_msg

    @functools.wraps(put)
    async def _put_msg(self: ConcurrentMixin[Any], msg: Any) -> None:
        try:
            await put(self, msg)
        except asyncio.CancelledError:
            await _nak_unstarted(msg)
            raise

    async def _consume_msg(self: ConcurrentMixin[Any], msg: Any) -> None:
        # FastStream's own, with the wait for a worker apart from the work.
        try:
            await self.limiter.acquire()
        except asyncio.CancelledError:
            await _nak_unstarted(msg)
            raise
        try:
            await self.consume(msg)
        finally:
            self.limiter.release()

    _put_msg._olympus_hands_back = True  # type: ignore[attr-defined]
    cls._put_msg = _put_msg  # type: ignore[method-assign]
    cls._consume_msg = _consume_msg  # type: ignore[method-assign]
    PullStreamSubscriber._consume_pull = _consume_pull  # type: ignore[method-assign]


# What FastStream's pull loop takes as "no message this time"
_NOTHING_FETCHED = (NatsTimeoutError, ConnectionClosedError, ServiceUnavailableError)


async def _consume_pull(
    self: PullStreamSubscriber, cb: Callable[[Msg], Coroutine[Any, Any, Any]]
) -> None:
    """FastStream 0.7.8's pull loop (``PullStreamSubscriber._consume_pull``), handing back what
    it fetched when a stop cancels it: what reached the subscription for a fetch the stop cut
    short, and each message whose ``cb`` task was made but never ran (a task cancelled before
    its first step runs none of its body, so ``_put_msg`` cannot)."""
    while self.running and (subscription := self.subscription) is not None:
        # (held here: a stop sets self.subscription to None before it cancels this loop)
        messages: list[Msg] = []
        try:
            with contextlib.suppress(*_NOTHING_FETCHED):
                messages = await subscription.fetch(
                    batch=self.pull_sub.batch_size, timeout=self.pull_sub.timeout
                )
        except asyncio.CancelledError:
            pending = subscription._sub._pending_queue  # nats-py's own queue
            while not pending.empty():
                await _nak_unstarted(pending.get_nowait())
            raise
        if messages:
            await _begin_each(messages, cb)


async def _begin_each(messages: list[Msg], cb: Callable[[Msg], Coroutine[Any, Any, Any]]) -> None:
    waiting = list(messages)

    async def begin(msg: Msg) -> None:
        waiting.remove(msg)
        await cb(msg)

    try:
        async with anyio.create_task_group() as tasks:
            for msg in messages:
                tasks.start_soon(begin, msg)
    except BaseException:
        for msg in waiting:
            await _nak_unstarted(msg)
        raise


async def _nak_unstarted(msg: Any) -> None:
    if _is_jetstream(msg):
        with contextlib.suppress(Exception):
            await msg.nak()


def worker_broker(settings: CommonSettings, policy: DeliveryPolicy) -> NatsBroker:
    """A FastStream broker with Olympus' delivery rules on every JetStream subscriber."""
    fetch_times_out_as_nats_says()
    hand_back_what_never_started()
    middlewares: list[Any] = [
        NatsPrometheusMiddleware(registry=REGISTRY, app_name="olympus"),
        delivery_middleware(policy),
    ]
    if telemetry.settings().endpoint:
        middlewares.insert(0, TracingMiddleware)  # outermost: its span is current inside
    options = settings.nats_connect_options()
    # NatsBroker takes credentials and TLS as a security object, not as nats.connect's options.
    tls = options.get("tls")
    security: NatsSecurity | None = None
    if "user" in options and "password" in options:
        security = NatsUserPassword(options["user"], options["password"], ssl_context=tls)
    elif tls is not None:
        security = NatsSecurity(ssl_context=tls)
    return NatsBroker(
        servers=options["servers"],
        security=security,
        inbox_prefix=options.get("inbox_prefix", "_INBOX"),
        middlewares=middlewares,
        max_reconnect_attempts=-1,
        # Stopping, a worker takes no new message and lets those in hand finish this long;
        # what is still running then is handed back (DeliveryMiddleware).
        graceful_timeout=settings.drain_s,
        # FastStream's per-message "Received"/"Processed" lines go to debug, through our logs.
        logger=logging.getLogger("olympus.faststream"),
        log_level=logging.DEBUG,
    )


async def connect(settings: CommonSettings, name: str) -> nats.NATS:
    return await nats.connect(
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        **settings.nats_connect_options(),
    )


async def hand_on(broker: NatsBroker, subject: str, message: Message) -> Accepted:
    """Hand a chat request to the next stage and return its ``Accepted``: an error when no
    worker serves ``subject`` or none accepts before the request's deadline."""
    timeout = max(0.05, getattr(message, "deadline", time.time() + 10) - time.time())
    try:
        response = await broker.request(message, subject, timeout=timeout)
    except NoRespondersError:
        problem = "is not running"
    except (TimeoutError, NatsTimeoutError):
        problem = "did not accept the request in time"
    else:
        return Accepted.model_validate_json(response.body)
    service = subjects.SERVED_BY.get(subject, "worker")
    return Accepted(
        error=ErrorInfo(code="unavailable", message=f"the {service} {problem} ({subject})")
    )


def _is_jetstream(raw: object) -> bool:
    reply = getattr(raw, "reply", "") or ""
    return reply.startswith("$JS.ACK.")


def dead_letter(raw: Msg, stage: str, error: BaseException | str, deliveries: int) -> DeadLetter:
    encoding: Literal["utf-8", "base64"]
    try:
        original, encoding = raw.data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        original, encoding = base64.b64encode(raw.data).decode(), "base64"
    message = error if isinstance(error, str) else _describe(error, raw.data)
    return DeadLetter(
        stage=stage,
        subject=raw.subject,
        error=message,
        error_type="WorkerLost" if isinstance(error, str) else type(error).__name__,
        deliveries=deliveries,
        original=original,
        original_encoding=encoding,
        headers={k: v for k, v in (raw.headers or {}).items() if k != subjects.HEADER_MSG_ID},
        sequence=raw.metadata.sequence.stream if _is_jetstream(raw) else None,
    )


def letter_owner(raw: Msg) -> tuple[str, str] | None:
    """The tenant and document a message is about, if it names them validly: its dead letter
    is filed under them (``subjects.dlq_subject``). An ingest subject's tenant is the
    producer's and wins over the body's; a body without ``doc_id`` gets the id ingest gives it."""
    try:
        body = json.loads(raw.data)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    owner = subjects.ingest_owner(raw.subject)
    tenant = owner[0] if owner else body.get("tenant")
    doc_id = body.get("doc_id")
    if doc_id is None and owner and isinstance(body.get("filename"), str):
        doc_id = ids.document_id(owner[0], owner[1], body["filename"])
    if not (isinstance(tenant, str) and isinstance(doc_id, str)):
        return None
    if not (re.fullmatch(NAME_PATTERN, tenant) and re.fullmatch(IDENTIFIER_PATTERN, doc_id)):
        return None
    return tenant, doc_id


async def forget_letters(js: JetStreamContext, tenant: str, doc_id: str) -> int:
    """Erase a deleted document's dead letters (they hold its text): one by one, because a
    deleted message is overwritten in the stream's files, while a purge leaves its bytes in
    the block file until the whole block goes. Returns how many there were."""
    stream, letters = subjects.DLQ_STREAM.name, subjects.dlq_document(tenant, doc_id)
    seq, erased = 1, 0
    while True:
        try:
            found = await js.get_msg(stream, seq=seq, subject=letters, next=True)
        except NotFoundError:  # no more of them (or no dead-letter stream yet)
            return erased
        if found.seq is None:  # the server always says; nats-py types it optional
            return erased
        await js.delete_msg(stream, found.seq)
        erased += 1
        seq = found.seq + 1


WORK_QUEUES = frozenset(s.name for s in subjects.STREAMS if s.work_queue)


async def erase(raw: Msg) -> None:
    """Overwrite a work-queue message that holds a document's or a conversation's text in its
    stream's files once it is done with. Its ack would only unlink it: the bytes stay in the
    block until every message in it has gone, and a deleted document's text with them. (A
    status or a delete holds ids and a filename, as the events stream does for a day: no
    erase, which costs the server more than the message did.) A message already gone is no
    error; a failure is logged and the ack still follows (the work is done either way).

    What it costs, measured on 2 cores: nats-server rewrites the whole block file for each
    erase (its file store overwrites the record, then writes the block's buffer anew, up to
    the 4 MB it gives any stream whose messages may be 16 MB). Alone, 1.8-2.2 ms of its CPU
    and 3-4 MB written per erased message; in an upload of 1,000 SciFact documents it wrote
    1.48 GB with the erase and 0.03 GB without, and spent 4.3-5.3 CPU-seconds against
    2.0-2.3: half of all it does at ingest. Nothing cheaper keeps the text out of the files
    with NATS's own calls: a stream's limits cannot bring its blocks below 4 MB while a
    message may be 16 MB, and a purge up to the ack floor may leave an emptied last block's
    bytes where they were. What would is a key per document, kept by H.A.D.E.S. and deleted
    with it, the text travelling encrypted under it."""
    meta = raw.metadata
    if meta.stream not in WORK_QUEUES or not subjects.holds_text(raw.subject):
        return
    try:
        await raw._client.jetstream().delete_msg(meta.stream, meta.sequence.stream)
    except NotFoundError:
        pass
    except Exception as exc:
        log.warning("could not erase a handled message", stream=meta.stream, error=repr(exc))


def _describe(error: BaseException, data: bytes | None = None) -> str:
    if isinstance(error, ValidationError):
        if data is not None:
            try:
                json.loads(data)
            except ValueError as exc:
                return f"the message is not valid JSON: {exc}"
        return "; ".join(f"{_field(e['loc'])}: {e['msg']}" for e in error.errors())
    return str(error) or type(error).__name__


def _field(loc: tuple[int | str, ...]) -> str:
    # Handlers name their message argument "body"; the path inside the message is what matters.
    path = loc[1:] if loc[:1] == ("body",) else loc
    return ".".join(map(str, path)) or "message"


def stage_of(subject: str) -> str:
    """``olympus.ingest.docs`` -> ``ingest``: the stage names the dead-letter subject."""
    parts = subject.split(".")
    return parts[1] if len(parts) > 1 else subject


class TracingMiddleware(BaseMiddleware):
    """W3C trace context across NATS: restored from the headers of every message consumed (one
    CONSUMER span per message, named after its subject) and written into every publish.

    Ours rather than FastStream's telemetry middleware, which makes three spans per message
    (create, publish, process) and one per reply: on a 2-core machine that, and Phoenix
    ingesting it, cost ~40% of ingest throughput (bench/tracing.py). Replies and health pings
    get no span of their own.
    """

    async def consume_scope(self, call_next: Any, msg: StreamMessage[Any]) -> Any:
        raw = msg.raw_message
        subject = raw.subject
        if subject.startswith("_INBOX.") or subject.startswith(subjects.HEALTH_PREFIX):
            return await call_next(msg)
        parent = propagate.extract(raw.headers or {})
        with telemetry.tracer("olympus.delivery").start_as_current_span(
            f"{subject} process", context=parent, kind=trace.SpanKind.CONSUMER
        ) as span:
            span.set_attribute("messaging.system", "nats")
            span.set_attribute("messaging.destination.name", subject)
            return await call_next(msg)

    async def publish_scope(self, call_next: Any, cmd: Any) -> Any:
        cmd.headers = telemetry.inject_headers(cmd.headers)
        return await call_next(cmd)


class DeliveryMiddleware(BaseMiddleware):
    """Retry with back-off, dead-letter what cannot succeed, keep long work alive."""

    policy: DeliveryPolicy
    gate: Gate

    async def consume_scope(self, call_next: Any, msg: StreamMessage[Any]) -> Any:
        raw = msg.raw_message
        if not _is_jetstream(raw):
            return await self._answer(call_next, msg, raw)
        attempt = raw.metadata.num_delivered
        stage = stage_of(raw.subject)
        trace.get_current_span().set_attribute("messaging.nats.delivery_attempt", attempt)
        marks = await InFlight.of(raw)
        if attempt > self.policy.max_deliver or marks.poison:
            why = (
                f"poison: its worker died handling it alone ({len(marks.unfinished)} of its "
                f"{attempt - 1} deliveries never ended)"
                if marks.poison
                else "the worker stopped while handling it"
            )
            await self._dead_letter(raw, stage, why, attempt)
            await marks.end()
            await erase(raw)
            raise RejectMessage()
        # Kept alive from here: a suspect may wait at the gate for the work in flight to end.
        keep_alive = asyncio.create_task(self._keep_alive(raw))
        try:
            async with self.gate.enter(alone=marks.suspect):
                await marks.begin()
                try:
                    result = await self._handle(call_next, msg, raw, stage, attempt)
                except NackMessage:  # handed back for a retry: it did not die
                    await marks.hand_back()
                    raise
                except asyncio.CancelledError:
                    # The worker is stopping with this in hand (its drain time is over): hand
                    # it back now, for another worker or this one restarted, not after AckWait.
                    await marks.hand_back(stopping=True)
                    with contextlib.suppress(Exception):
                        await raw.nak()
                    log.info("handed back: the worker is stopping", subject=raw.subject)
                    raise
                except HandlerException:  # rejected (dead-lettered) or acknowledged
                    await marks.end()
                    await erase(raw)
                    raise
                await marks.end()
                await erase(raw)
                return result
        finally:
            keep_alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep_alive

    async def _handle(
        self, call_next: Any, msg: StreamMessage[Any], raw: Msg, stage: str, attempt: int
    ) -> Any:
        try:
            return await call_next(msg)
        except HandlerException:
            raise
        except Exception as exc:
            final = isinstance(exc, (ValidationError, PermanentError))
            if final or attempt >= self.policy.max_deliver:
                await self._dead_letter(raw, stage, exc, attempt)
                raise RejectMessage() from exc
            delay = self.policy.delay(attempt)
            metrics.REDELIVERIES.labels(stage).inc()
            log.warning(
                "retrying", stage=stage, attempt=attempt, delay_s=delay, error=_describe(exc)
            )
            raise NackMessage(delay=delay) from exc

    async def _answer(self, call_next: Any, msg: StreamMessage[Any], raw: Msg) -> Any:
        """A core request that does not match its contract gets a ``bad_request`` reply at once,
        not a silence the caller would wait out."""
        try:
            return await call_next(msg)
        except ValidationError as exc:
            problem = _describe(exc, raw.data)
            log.warning("refused a malformed request", subject=raw.subject, error=problem)
            await self._refuse(raw, "bad_request", problem)
            raise RejectMessage() from exc
        except HandlerException:
            raise
        except Exception as exc:
            # A request the worker failed on is answered at once with what failed, instead of
            # leaving its caller to wait out a timeout.
            log.exception("failed on a request", subject=raw.subject)
            await self._refuse(raw, "internal", f"{raw.subject} failed: {_describe(exc)}")
            raise RejectMessage() from exc

    @staticmethod
    async def _refuse(raw: Msg, code: ErrorCode, message: str) -> None:
        if raw.reply:
            refusal = Reply(error=ErrorInfo(code=code, message=message))
            await raw.respond(refusal.model_dump_json().encode())

    async def _keep_alive(self, raw: Msg) -> None:
        while True:
            await asyncio.sleep(self.policy.ack_wait_s / 3)
            await raw.in_progress()

    async def _dead_letter(
        self, raw: Msg, stage: str, error: BaseException | str, attempt: int
    ) -> None:
        letter = dead_letter(raw, stage, error, attempt)
        metrics.DEAD_LETTERED.labels(stage).inc()
        log.error("dead-lettered", stage=stage, subject=raw.subject, error=letter.error)
        js = raw._client.jetstream()
        owner = letter_owner(raw) or (None, None)
        await js.publish(subjects.dlq_subject(stage, *owner), letter.model_dump_json().encode())


POISON_AFTER_DEATHS = 2
"""A message its worker died handling this many times, the last time alone, is dead-lettered
instead of tried again."""


class Gate:
    """Shared for ordinary messages, exclusive for a suspect: a message that was in flight when
    its worker died runs alone, so if the worker dies again, it is certainly that message's
    doing — and the others that were in flight with it are not blamed."""

    def __init__(self) -> None:
        self._shared = 0
        self._exclusive = False
        self._waiting_alone = 0  # while one waits, no new ordinary message enters: no starving
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def enter(self, alone: bool) -> Any:
        async with self._changed:
            if alone:
                self._waiting_alone += 1
                try:
                    await self._changed.wait_for(lambda: not self._exclusive and self._shared == 0)
                finally:
                    self._waiting_alone -= 1
                    self._changed.notify_all()
                self._exclusive = True
            else:
                await self._changed.wait_for(
                    lambda: not self._exclusive and self._waiting_alone == 0
                )
                self._shared += 1
        try:
            yield
        finally:
            async with self._changed:
                if alone:
                    self._exclusive = False
                else:
                    self._shared -= 1
                self._changed.notify_all()


class InFlight:
    """What became of a message's earlier deliveries, kept in the KV bucket ``OLYMPUS_INFLIGHT``
    under the message's stream sequence, and written only when something unusual happens:

    - a delivery that fails and is handed back for a retry (nak) records that it ended;
    - a suspect records that it runs alone.

    A delivery neither acknowledged nor handed back never ended: its worker died (killed for
    memory, crashed) or never received it. A message with such a delivery behind it is a
    suspect and runs alone (``Gate``); a suspect whose lone delivery never ended took its
    worker down with nothing beside it, and is poison: dead-lettered at its next delivery.
    Without this, such a message came back after every AckWait until max_deliver, each time
    taking its worker, and every message in flight beside it, down again.

    Ordinary work costs no bucket call at all: a first delivery has no past to read, and one
    that succeeds leaves nothing behind. (Marking every message as it began, and unmarking it
    as it ended, took three JetStream calls per message: ~8% of the bus's work at ingest.)
    Marks never block work: when the bucket cannot be reached, the message is handled anyway.
    """

    _buckets: dict[int, KeyValue | None] = {}

    def __init__(self, client: nats.NATS, key: str, attempt: int) -> None:
        self.client = client
        self.bucket: KeyValue | None = None
        self.key = key
        self.attempt = attempt
        self.handed_back: list[int] = []
        self.alone: list[int] = []
        self._stored = False  # whether a record of this message may be in the bucket

    @classmethod
    async def of(cls, raw: Msg) -> InFlight:
        """The message's past deliveries as they were recorded (none for a first delivery)."""
        meta = raw.metadata
        attempt = meta.num_delivered
        marks = cls(raw._client, f"{meta.stream}.{meta.sequence.stream}", attempt)
        if attempt <= 1:
            return marks
        marks.bucket = await cls._bucket(raw._client)
        if marks.bucket is None:
            return marks
        marks._stored = True
        try:
            record = json.loads((await marks.bucket.get(marks.key)).value or b"{}")
            marks.handed_back = [int(d) for d in record.get("handed_back", [])]
            marks.alone = [int(d) for d in record.get("alone", [])]
        except NotFoundError:
            pass
        except Exception as exc:
            log.warning("could not read a message's deliveries", error=_describe(exc))
        return marks

    @classmethod
    async def _bucket(cls, client: nats.NATS) -> KeyValue | None:
        if id(client) not in cls._buckets:
            try:
                found: KeyValue | None = await client.jetstream().key_value(
                    subjects.INFLIGHT_BUCKET
                )
            except Exception as exc:  # an old stack without the bucket: no marks
                log.warning("no in-flight marks", error=_describe(exc))
                found = None
            cls._buckets[id(client)] = found
        return cls._buckets[id(client)]

    @property
    def unfinished(self) -> list[int]:
        """Earlier deliveries that were neither acknowledged nor handed back."""
        return [d for d in range(1, self.attempt) if d not in self.handed_back]

    @property
    def suspect(self) -> bool:
        return bool(self.unfinished)

    @property
    def poison(self) -> bool:
        return any(d in self.alone for d in self.unfinished)

    async def begin(self) -> None:
        """A suspect records that this delivery runs alone, before it runs."""
        if self.suspect:
            self.alone.append(self.attempt)
            await self._save()

    async def hand_back(self, stopping: bool = False) -> None:
        """This delivery ended without an ack, on purpose (a retry, or the worker stopping).

        ``stopping``: written without waiting for the bucket's answer, as the nak beside it is.
        The stop cancels anything that waits, and the connection's drain, which follows, sends
        what was written. (Unrecorded, the next delivery would run alone, as a suspect.)"""
        self.handed_back.append(self.attempt)
        if stopping:
            record = {"handed_back": self.handed_back, "alone": self.alone}
            with contextlib.suppress(Exception):
                await self.client.publish(
                    f"$KV.{subjects.INFLIGHT_BUCKET}.{self.key}", json.dumps(record).encode()
                )
            return
        await self._save()

    async def end(self) -> None:
        """The message is done with (acknowledged or dead-lettered): forget its record."""
        if self._stored and self.bucket:
            with contextlib.suppress(Exception):
                await self.bucket.purge(self.key)

    async def _save(self) -> None:
        self.bucket = self.bucket or await self._bucket(self.client)
        if self.bucket is None:
            return
        record = {"handed_back": self.handed_back, "alone": self.alone}
        try:
            await self.bucket.put(self.key, json.dumps(record).encode())
            self._stored = True
        except Exception as exc:
            log.warning("could not record a message's delivery", error=_describe(exc))


def delivery_middleware(policy: DeliveryPolicy) -> type[DeliveryMiddleware]:
    # One gate per broker (per worker process): its suspects run alone among its messages.
    return type(
        "ConfiguredDeliveryMiddleware", (DeliveryMiddleware,), {"policy": policy, "gate": Gate()}
    )
