"""How an embedder reads the model move (``workers.embedder.models.MoveReader``), against a
real nats-server with the buckets ``olympus up`` makes."""

from __future__ import annotations

import asyncio

import nats

from olympus import delivery
from schemas import subjects
from schemas.messages import ModelMove
from workers.embedder.models import MoveReader

MOVE = ModelMove(moved=["a"], to="/models/b", phase="building")


async def _until(done, what: str, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not done():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.02)


async def test_a_poll_reads_the_key_alone_once_the_bucket_is_known(nats_url):
    nc = await nats.connect(nats_url)
    watcher = await nats.connect(nats_url)
    lookups: list[str] = []  # STREAM.INFO: a bucket opened
    reads: list[str] = []  # the key read (DIRECT.GET, or STREAM.MSG.GET)

    async def note(msg) -> None:
        (lookups if msg.subject.startswith("$JS.API.STREAM.INFO") else reads).append(msg.subject)

    await watcher.subscribe("$JS.API.>", cb=note)
    await watcher.flush()
    try:
        read = MoveReader(nc.jetstream())
        assert await read() is None  # the bucket is there, nothing was moved
        bucket = await nc.jetstream().key_value(subjects.MODEL_BUCKET)
        await bucket.put(subjects.MODEL_KEY, MOVE.model_dump_json().encode())
        await _until(lambda: len(lookups) == 2 and len(reads) == 1, "the first read's requests")

        for _ in range(3):
            assert await read() == MOVE
        await _until(lambda: len(reads) == 4, f"three more reads: {reads}")
        await nc.flush()
        await watcher.flush()
        assert len(lookups) == 2, lookups  # the reader's first lookup, and this test's own

        await bucket.delete(subjects.MODEL_KEY)  # a cancelled reindex with nothing before it
        assert await read() is None
    finally:
        await watcher.close()
        await nc.close()


async def test_a_bucket_deleted_and_made_again_is_read_again(nats_url):
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        read = MoveReader(js)
        assert await read() is None
        await js.delete_key_value(subjects.MODEL_BUCKET)
        assert await read() is None  # the bucket it knew is gone: nothing is moved
        await delivery.ensure_streams(js, 1 << 20)  # olympus streams, run again
        await (await js.key_value(subjects.MODEL_BUCKET)).put(
            subjects.MODEL_KEY, MOVE.model_dump_json().encode()
        )
        assert await read() == MOVE
    finally:
        await nc.close()
