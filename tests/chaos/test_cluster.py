"""Chaos, the cluster: ``olympus up --cluster 3`` runs three nats-server nodes on loopback with
every stream replicated to all three; the node leading the ingest stream is killed (SIGKILL)
while documents ingest. The clients move to the other nodes, a new leader is elected, the dead
node is restarted and catches up, and every document is indexed exactly once.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal

import nats
import pytest

from schemas import subjects
from tests.chaos.test_kills import DOCS, _text, assert_each_indexed_once
from tests.support.stack import RunningStack, eventually, start_stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.chaos]


async def _leader(running: RunningStack) -> str:
    nc = await nats.connect(**running.bus())
    try:
        info = await nc.jetstream().stream_info(subjects.INGEST_STREAM.name)
        assert info.cluster is not None
        assert info.cluster.leader is not None
        return info.cluster.leader
    finally:
        await nc.close()


async def _all_current(running: RunningStack) -> bool:
    """Every stream has a leader and two replicas that are current (caught up). A stream that
    does not answer yet (its group still electing, on a busy machine) is not caught up yet."""
    nc = await nats.connect(**running.bus())
    try:
        for spec in subjects.STREAMS:
            try:
                info = await nc.jetstream().stream_info(spec.name)
            except (TimeoutError, nats.errors.TimeoutError, nats.js.errors.APIError):
                return False
            cluster = info.cluster
            if cluster is None or cluster.leader is None:
                return False
            replicas = cluster.replicas or []
            if len(replicas) != 2 or not all(r.current and not r.offline for r in replicas):
                return False
        return True
    finally:
        await nc.close()


def test_the_stream_leader_killed_mid_ingest_loses_and_doubles_nothing(tmp_path):
    rng = random.Random(11)
    running = start_stack("chaos-cluster", tmp_path / "data", cluster=3)
    try:
        nodes = {
            f"olympus-{c.name}": c
            for c in running.stack.supervisor._children
            if c.name.startswith("nats")
        }
        assert len(nodes) == 3
        eventually(lambda: asyncio.run(_all_current(running)), "the cluster never formed", 60)
        with running.client() as http:
            files = [("files", (f"doc-{i}.txt", _text(rng, i).encode())) for i in range(DOCS)]
            r = http.post("/rag/documents", files=files)
            assert r.status_code == 202, r.text
            ids = [d["doc_id"] for d in r.json()["documents"]]

            def indexed() -> int:
                listing = http.get("/rag/documents", params={"status": "indexed", "limit": 1000})
                return len(listing.json()["items"]) if listing.status_code == 200 else 0

            eventually(lambda: indexed() >= DOCS // 4, "nothing got indexed", timeout_s=300)
            leader = nodes[asyncio.run(_leader(running))]
            done = indexed()
            os.kill(leader.proc.pid, signal.SIGKILL)
            why = f"{leader.name}, the ingest stream's leader, killed with {done} of {DOCS} indexed"
            eventually(lambda: leader.restarts >= 1, f"{why}: it was not restarted", 60)
            settled = [wait_for(http, doc_id, timeout_s=300) for doc_id in ids]
            assert [d["filename"] for d in settled if d["status"] != "indexed"] == [], why
            eventually(
                lambda: asyncio.run(_all_current(running)), f"{why}: it never caught up", 120
            )
    finally:
        running.stack.stop()
    assert_each_indexed_once(running.data_dir, DOCS, why)
