"""Delivery rules against a real nats-server: retry, dead-letter, keep long work alive, and the
indexer's wiring redelivering a write that failed once (one copy indexed: not zero, not two)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import nats
import pytest
from pydantic import BaseModel, ConfigDict

from olympus import delivery
from olympus.settings import CommonSettings
from schemas import subjects
from tests.support.hades_contract import TERM_KEY
from tests.support.messages import index_upsert

pytestmark = pytest.mark.integration


class Ping(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int


async def _eventually(check, timeout_s: float = 15.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def _true_when(condition: bool) -> bool:
    return condition


async def _dead_letters(js, subject: str) -> list[dict]:
    sub = await js.pull_subscribe(subjects.DLQ_ALL, stream=subjects.DLQ_STREAM.name)
    letters = []
    try:
        while True:
            for msg in await sub.fetch(50, timeout=0.3):
                letters.append(json.loads(msg.data))
    except nats.errors.TimeoutError:
        pass
    await sub.unsubscribe()
    return [letter for letter in letters if letter["subject"] == subject]


@pytest.fixture
async def js(nats_url):
    nc = await nats.connect(nats_url)
    await delivery.ensure_streams(nc.jetstream(), 16 * 1024 * 1024)
    yield nc.jetstream()
    await nc.close()


def _broker(nats_url: str, ack_wait_s: float = 30.0):
    common = CommonSettings(nats_url=nats_url)
    policy = delivery.DeliveryPolicy(max_deliver=3, backoff_s=(0.1, 0.2), ack_wait_s=ack_wait_s)
    return delivery.worker_broker(common, policy), policy


def _subscribe(broker, policy, subject: str):
    durable = f"test-{uuid.uuid4().hex[:8]}"
    return broker.subscriber(subject, **policy.durable(subjects.INGEST_STREAM, durable, 4, fetch=4))


async def test_a_failure_is_retried_then_acknowledged(nats_url, js):
    broker, policy = _broker(nats_url)
    subject = f"olympus.ingest.{uuid.uuid4().hex[:8]}"
    calls: list[int] = []

    @_subscribe(broker, policy, subject)
    async def handler(body: Ping) -> None:
        calls.append(body.n)
        if len(calls) == 1:
            raise RuntimeError("transient")

    async with broker:
        await broker.start()
        await js.publish(subject, b'{"n": 7}')
        await _eventually(lambda: _true_when(len(calls) == 2))
        await asyncio.sleep(0.5)
    assert calls == [7, 7]
    assert await _dead_letters(js, subject) == []


async def test_ordinary_work_writes_no_marks_and_a_retry_is_no_suspect(nats_url, js):
    """Deliveries are recorded only when something unusual happens: twenty messages handled
    leave the bucket untouched; one handed back for a retry writes that record and removes it
    when it succeeds, and its retry is no suspect (that would add an "alone" record)."""
    broker, policy = _broker(nats_url)
    subject = f"olympus.ingest.{uuid.uuid4().hex[:8]}"
    bucket = f"KV_{subjects.INFLIGHT_BUCKET}"
    calls: list[int] = []

    @_subscribe(broker, policy, subject)
    async def handler(body: Ping) -> None:
        calls.append(body.n)
        if body.n == 99 and calls.count(99) == 1:
            raise RuntimeError("transient")

    async def writes() -> int:
        return (await js.stream_info(bucket)).state.last_seq

    before = await writes()
    async with broker:
        await broker.start()
        for n in range(20):
            await js.publish(subject, json.dumps({"n": n}).encode())
        await _eventually(lambda: _true_when(len(calls) == 20))
        await asyncio.sleep(0.3)
        assert await writes() == before
        await js.publish(subject, b'{"n": 99}')
        await _eventually(lambda: _true_when(calls.count(99) == 2))
        await asyncio.sleep(0.5)
    assert await writes() == before + 2  # handed back, then forgotten once done
    kv = await js.key_value(subjects.INFLIGHT_BUCKET)
    with pytest.raises(nats.js.errors.NoKeysError):
        await kv.keys()  # nothing left of it (a purge leaves only its marker)


async def test_what_keeps_failing_is_dead_lettered_with_error_and_original(nats_url, js):
    """One poison message among many: exactly ``max_deliver`` tries, then a dead letter with
    the error and the original; every other message is handled once."""
    broker, policy = _broker(nats_url)
    subject = f"olympus.ingest.{uuid.uuid4().hex[:8]}"
    calls: list[int] = []

    @_subscribe(broker, policy, subject)
    async def handler(body: Ping) -> None:
        calls.append(body.n)
        if body.n == 7:
            raise RuntimeError("the disk is on fire")

    async with broker:
        await broker.start()
        for n in range(20):
            await js.publish(subject, json.dumps({"n": n}).encode())
        letters = await _eventually(lambda: _dead_letters(js, subject))
        await _eventually(lambda: _true_when(len(calls) >= 19 + policy.max_deliver))
        await asyncio.sleep(0.5)
    assert calls.count(7) == policy.max_deliver
    assert sorted(n for n in calls if n != 7) == [n for n in range(20) if n != 7]
    (letter,) = letters
    assert letter["error"] == "the disk is on fire"
    assert letter["error_type"] == "RuntimeError"
    assert letter["deliveries"] == policy.max_deliver
    assert json.loads(letter["original"]) == {"n": 7}


async def test_an_invalid_message_is_dead_lettered_at_once(nats_url, js):
    broker, policy = _broker(nats_url)
    subject = f"olympus.ingest.{uuid.uuid4().hex[:8]}"
    calls: list[int] = []

    @_subscribe(broker, policy, subject)
    async def handler(body: Ping) -> None:
        calls.append(body.n)

    async with broker:
        await broker.start()
        await js.publish(subject, b'{"n": "seven", "extra": true}')
        await js.publish(subject, b"\xff\xfe not even text")
        letters = await _eventually(lambda: _two(js, subject))
    assert calls == []
    assert {letter["deliveries"] for letter in letters} == {1}
    texts = " ".join(letter["error"] for letter in letters)
    assert "n: Input should be a valid integer" in texts
    assert "not valid JSON" in texts
    assert "extra: Extra inputs are not permitted" in texts
    assert {letter["original_encoding"] for letter in letters} == {"utf-8", "base64"}


async def _two(js, subject):
    letters = await _dead_letters(js, subject)
    return letters if len(letters) == 2 else None


async def test_long_work_is_kept_alive_not_redelivered(nats_url, js):
    broker, policy = _broker(nats_url, ack_wait_s=1.5)
    subject = f"olympus.ingest.{uuid.uuid4().hex[:8]}"
    calls: list[int] = []
    done = asyncio.Event()

    @_subscribe(broker, policy, subject)
    async def handler(body: Ping) -> None:
        calls.append(body.n)
        await asyncio.sleep(4)  # well past AckWait
        done.set()

    async with broker:
        await broker.start()
        await js.publish(subject, b'{"n": 3}')
        await asyncio.wait_for(done.wait(), 10)
        await asyncio.sleep(2)
    assert calls == [3]


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


def _files_holding(folder, needle: bytes) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def test_a_work_queue_message_done_with_leaves_no_bytes_in_the_stream_files(
    nats_url, js, tmp_path
):
    """An ack only unlinks a work-queue message: while a message before it waits, its bytes
    (a document's text) stay in the block file. Handled and dead-lettered ones are erased."""
    broker, policy = _broker(nats_url)
    subject = f"olympus.ingest.{uuid.uuid4().hex[:8]}"
    calls: list[str] = []

    @_subscribe(broker, policy, subject)
    async def handler(body: Note) -> None:
        calls.append(body.text)

    stream_files = tmp_path / "nats" / "js" / "jetstream" / "$G" / "streams"
    ingest_files = stream_files / subjects.INGEST_STREAM.name
    await js.publish(f"{subject}-nobody", b'{"text": "Waitingcanary"}')  # keeps the block
    async with broker:
        await broker.start()
        await js.publish(subject, b'{"text": "Handledcanary"}')
        await js.publish(subject, b'{"text": "Refusedcanary", "extra": 1}')
        await _eventually(lambda: _dead_letters(js, subject))

        async def only_the_waiting_one_left() -> bool:
            info = await js.stream_info(subjects.INGEST_STREAM.name)
            return info.state.messages == 1 and bool(calls)

        await _eventually(only_the_waiting_one_left)
    await _eventually(lambda: _true_when(bool(_files_holding(ingest_files, b"Waitingcanary"))))
    assert calls == ["Handledcanary"]
    assert _files_holding(ingest_files, b"Handledcanary") == []
    assert _files_holding(ingest_files, b"Refusedcanary") == []
    assert _files_holding(stream_files, b"Refusedcanary") != []  # its dead letter keeps it


class _FailsOnce:
    """The real Milvus Lite index, whose first upsert fails (a store hiccup)."""

    def __init__(self, inner):
        self.inner = inner
        self.failed = False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def upsert(self, chunks):
        if not self.failed:
            self.failed = True
            raise ConnectionError("milvus went away")
        self.inner.upsert(chunks)


async def test_indexer_redelivers_a_failed_write_and_keeps_one_copy(nats_url, js, tmp_path):
    from hades.milvus import MilvusVectorIndex
    from hades.sqlite import SqliteDocumentGraph
    from workers.indexer.app import create_app
    from workers.indexer.settings import IndexerSettings

    vectors = _FailsOnce(MilvusVectorIndex(str(tmp_path / "m.db"), 384, term_key=TERM_KEY))
    graph = SqliteDocumentGraph(tmp_path / "g.sqlite3")
    app = create_app(
        CommonSettings(nats_url=nats_url, data_dir=tmp_path, retry_backoff_s=(0.1,)),
        IndexerSettings(flush_idle_s=0.1),
        stores=lambda: (vectors, graph),
    )
    texts = ["first chunk of the document", "second chunk", "third chunk"]
    upsert = index_upsert("doc-1", texts, 1, 384)
    indexed = asyncio.Event()

    async def on_event(msg):
        if json.loads(msg.data)["doc_id"] == "doc-1":
            indexed.set()

    nc = await nats.connect(nats_url)
    await nc.subscribe(subjects.event_subject("indexed"), cb=on_event)
    async with app:
        await js.publish(subjects.INDEX_UPSERT, upsert.model_dump_json().encode())
        await asyncio.wait_for(indexed.wait(), 20)

        async def settled():
            info = await js.consumer_info(
                subjects.INDEX_STREAM.name, subjects.DURABLE_INDEXER_UPSERT
            )
            return info if info.num_ack_pending == 0 else None

        consumer = await _eventually(settled)
    await nc.close()
    assert vectors.failed
    assert consumer.delivered.consumer_seq == 2  # delivered twice: the failure, then the write
    assert consumer.num_pending == 0
    index = MilvusVectorIndex(str(tmp_path / "m.db"), 384, term_key=TERM_KEY)
    assert index.count("t", "doc-1") == 3
    index.close()
    graph = SqliteDocumentGraph(tmp_path / "g.sqlite3")
    assert graph.get_document("t", "doc-1").chunk_count == 3
    graph.close()


async def test_a_malformed_core_request_gets_a_bad_request_reply_not_silence(nats_url):
    broker, _ = _broker(nats_url)
    handled = []

    @broker.subscriber("olympus.test.rpc")
    async def answer(body: Ping) -> dict:
        handled.append(body.n)
        return {"n": body.n}

    async with broker:
        await broker.start()
        nc = await nats.connect(nats_url)
        try:
            reply = await nc.request("olympus.test.rpc", b'{"n": "not a number"}', timeout=5)
            refusal = json.loads(reply.data)
            assert refusal["error"]["code"] == "bad_request"
            assert refusal["error"]["message"].startswith("n: Input should be a valid integer")
            reply = await nc.request("olympus.test.rpc", b"{not json", timeout=5)
            assert "not valid JSON" in json.loads(reply.data)["error"]["message"]
            good = await nc.request("olympus.test.rpc", b'{"n": 3}', timeout=5)  # still serving
            assert json.loads(good.data) == {"n": 3}
        finally:
            await nc.close()
    assert handled == [3]


@pytest.fixture
def nats_with_password():
    """A nats-server that refuses connections without user ``worker``, password ``s3cret``."""
    import subprocess

    from olympus import natsserver

    port = natsserver.free_port()
    server = subprocess.Popen(
        [natsserver.binary(), "-a", "127.0.0.1", "-p", str(port), "--user", "worker",
         "--pass", "s3cret"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    natsserver.wait_until_listening("127.0.0.1", port)
    yield f"nats://127.0.0.1:{port}"
    server.terminate()
    server.wait(10)


async def test_a_worker_broker_logs_in_with_the_nats_credentials(nats_with_password):
    """Production sets OLYMPUS_NATS_USER/PASSWORD; FastStream's broker takes them as a security
    object, and handing it nats.connect's user=/password= made every worker crash at start."""
    url = nats_with_password
    common = CommonSettings(nats_url=url, nats_user="worker", nats_password="s3cret")
    broker = delivery.worker_broker(common, delivery.DeliveryPolicy.from_settings(common))

    @broker.subscriber("olympus.test.auth")
    async def echo(body: Ping) -> dict:
        return {"n": body.n}

    async with broker:
        await broker.start()
        reply = await broker.request({"n": 5}, "olympus.test.auth", timeout=5)
        assert json.loads(reply.body) == {"n": 5}
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await asyncio.wait_for(nats.connect(url, allow_reconnect=False, connect_timeout=2), 10)


_DYING_WORKER = """
import asyncio, os, sys
from pydantic import BaseModel
from olympus import delivery
from olympus.settings import CommonSettings
from schemas import subjects

class Ping(BaseModel):
    n: int

url, subject, durable, out = sys.argv[1:5]
policy = delivery.DeliveryPolicy(max_deliver=5, backoff_s=(0.1,), ack_wait_s=2.0)
broker = delivery.worker_broker(CommonSettings(nats_url=url), policy)

@broker.subscriber(subject, **policy.durable(subjects.INGEST_STREAM, durable, 4, fetch=4))
async def handle(body: Ping) -> None:
    if body.n == 13:
        os._exit(137)  # as the kernel's OOM killer ends a worker: no nak, no goodbye
    with open(out, "a") as f:
        f.write(f"{body.n}\\n")

async def main():
    async with broker:
        await broker.start()
        await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_message_its_worker_died_on_twice_is_dead_lettered_as_poison(
    nats_url, js, tmp_path
):
    """Before, such a message came back after every AckWait until max_deliver (5), taking
    its worker down each time. A real process, really dying, restarted as olympus up would."""
    import sys

    subject = f"olympus.ingest.{uuid.uuid4().hex[:8]}"
    durable = f"test-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "handled.txt"
    command = [sys.executable, "-c", _DYING_WORKER, nats_url, subject, durable, str(out)]
    await js.publish(subject, b'{"n": 13}')
    await js.publish(subject, b'{"n": 1}')
    deaths = 0
    letters: list[dict] = []
    for _ in range(5):  # each run: until the worker dies, or 10 s of it living
        worker = await asyncio.create_subprocess_exec(*command)
        try:
            await asyncio.wait_for(worker.wait(), 10)
            deaths += 1
        except TimeoutError:
            worker.terminate()
            await worker.wait()
        if letters := await _dead_letters(js, subject):
            break
    # At least once: a delivery lost with a dead worker's pull request can come twice at once.
    assert letters
    for letter in letters:
        assert letter["error"].startswith("poison: its worker died handling it alone (")
        assert json.loads(letter["original"]) == {"n": 13}
        assert letter["deliveries"] >= 3
    assert deaths == 2
    assert "1" in out.read_text().split()  # the message beside it was handled


async def test_a_suspect_runs_alone_and_is_not_starved():
    """While a suspect waits, ordinary messages already in flight finish and new ones wait;
    then the suspect runs with nothing beside it."""
    gate = delivery.Gate()
    order: list[str] = []
    first_in = asyncio.Event()
    release_first = asyncio.Event()

    async def ordinary(name: str, hold: asyncio.Event | None = None) -> None:
        async with gate.enter(alone=False):
            order.append(f"{name} in")
            if hold is not None:
                first_in.set()
                await hold.wait()
            order.append(f"{name} out")

    async def suspect() -> None:
        async with gate.enter(alone=True):
            order.append("suspect alone")

    first = asyncio.create_task(ordinary("first", release_first))
    await first_in.wait()
    waiting = asyncio.create_task(suspect())
    await asyncio.sleep(0)
    late = asyncio.create_task(ordinary("late"))
    await asyncio.sleep(0)
    release_first.set()
    await asyncio.gather(first, waiting, late)
    assert order == ["first in", "first out", "suspect alone", "late in", "late out"]
