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


async def test_a_poll_reads_the_key_alone_once_the_bucket_is_known(nats_url):
    nc = await nats.connect(nats_url)
    watcher = await nats.connect(nats_url)
    asked: list[str] = []

    async def note(msg) -> None:
        asked.append(msg.subject)

    await watcher.subscribe("$JS.API.>", cb=note)
    await watcher.flush()
    try:
        read = MoveReader(nc.jetstream())
        assert await read() is None  # the bucket is there, nothing was moved

        bucket = await nc.jetstream().key_value(subjects.MODEL_BUCKET)
        await bucket.put(subjects.MODEL_KEY, MOVE.model_dump_json().encode())
        await asyncio.sleep(0.2)
        asked.clear()
        for _ in range(3):
            assert await read() == MOVE
        await nc.flush()
        await asyncio.sleep(0.2)  # the watcher's copies of the requests
        looked_up = [s for s in asked if s.startswith("$JS.API.STREAM.INFO")]
        assert looked_up == [], asked
        assert len(asked) == 3, asked

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
