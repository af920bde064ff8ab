"""Chaos, the broker: nats-server killed with SIGKILL in the middle of a burst of publishes, and
the same document published twice.

The embedded nats-server keeps JetStream's default ``sync_interval`` (2 minutes): a message is
written to the operating system before its publish is acknowledged and flushed to the disk at
that interval. So an acknowledged publish survives the server process dying (this test), and
the last two minutes of them may not survive the machine losing power.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import nats
import pytest
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from olympus import delivery, natsserver
from olympus.settings import CommonSettings
from schemas import subjects
from schemas.ids import content_hash, ingest_msg_id
from schemas.messages import IngestDocument

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

BURST = int(os.environ.get("OLYMPUS_CHAOS_PUBLISHES", "3000"))


def _document(i: int) -> tuple[bytes, str]:
    doc = IngestDocument(tenant="t", collection="c", filename=f"f{i}.txt", content=f"text {i}")
    digest = content_hash(doc.content.encode())
    return doc.model_dump_json().encode(), ingest_msg_id(doc.doc_id, "upsert", digest)


def _start(config: natsserver.NatsServerConfig, folder: Path) -> subprocess.Popen[bytes]:
    return natsserver.start(config, folder / "nats.conf", stdout=subprocess.DEVNULL)


async def _publish_burst(url: str, acked: dict[str, int], killed: asyncio.Event) -> None:
    """Publish ``BURST`` documents, 64 at a time, recording each acknowledged one, until the
    server is gone."""
    nc = await nats.connect(url, max_reconnect_attempts=0)
    js = nc.jetstream()
    subject = subjects.ingest_subject("t", "c")

    async def one(i: int) -> None:
        data, msg_id = _document(i)
        ack = await js.publish(subject, data, headers={subjects.HEADER_MSG_ID: msg_id}, timeout=5)
        acked[msg_id] = ack.seq

    try:
        for start in range(0, BURST, 64):
            results = await asyncio.gather(
                *(one(i) for i in range(start, min(start + 64, BURST))), return_exceptions=True
            )
            if killed.is_set() or any(isinstance(r, Exception) for r in results):
                return
    except (ConnectionClosedError, NatsTimeout, NoRespondersError):
        return
    finally:
        if not nc.is_closed:
            await nc.close()


async def test_every_acknowledged_publish_survives_the_server_killed(tmp_path):
    folder = tmp_path / "nats"
    config = natsserver.NatsServerConfig(store_dir=folder / "js", port=natsserver.free_port())
    server = _start(config, folder)
    try:
        await delivery.prepare_streams(CommonSettings(nats_url=config.url))
        acked: dict[str, int] = {}
        killed = asyncio.Event()
        burst = asyncio.create_task(_publish_burst(config.url, acked, killed))
        while len(acked) < BURST // 3:
            assert not burst.done(), "the burst ended before the kill"
            await asyncio.sleep(0.005)
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        killed.set()
        await burst
        assert BURST // 3 <= len(acked) < BURST, "the kill came after the burst"

        server = _start(config, folder)
        nc = await nats.connect(config.url)
        js = nc.jetstream()
        held = {}
        for seq in sorted(acked.values()):
            msg = await js.get_msg(subjects.INGEST_STREAM.name, seq)
            held[(msg.headers or {}).get(subjects.HEADER_MSG_ID)] = seq
        lost = {m for m, seq in acked.items() if held.get(m) != seq}
        assert lost == set(), f"{len(lost)} of {len(acked)} acknowledged publishes lost"

        # The server remembers what it holds across the restart: a repeat is still dropped.
        data, msg_id = _document(0)
        again = await js.publish(
            subjects.ingest_subject("t", "c"), data, headers={subjects.HEADER_MSG_ID: msg_id}
        )
        assert again.duplicate
        await nc.close()
    finally:
        server.terminate()
        server.wait(10)


async def test_a_document_published_twice_is_one_message(nats_url):
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    data, msg_id = _document(1)
    subject = subjects.ingest_subject("t", "c")
    first = await js.publish(subject, data, headers={subjects.HEADER_MSG_ID: msg_id})
    second = await js.publish(subject, data, headers={subjects.HEADER_MSG_ID: msg_id})
    info = await js.stream_info(subjects.INGEST_STREAM.name)
    await nc.close()
    assert not first.duplicate
    assert second.duplicate
    assert second.seq == first.seq
    assert info.state.messages == 1
