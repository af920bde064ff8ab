"""Chaos, first part: a worker killed with SIGKILL (or stopped with SIGTERM) while documents
ingest, once a random part of them is indexed.

The stack runs as `olympus up` runs it, and its supervisor restarts what died. Once every
document has settled, the stack is stopped and its stores are read back: each document indexed
once, with as many vectors in Milvus as chunks in the graph and as its record says, no vector
left over, nothing stuck in ``queued`` or ``processing``. Seeded: a failure names the seed and
how far the ingest had gone when the kill came; ``OLYMPUS_CHAOS_DOCS`` makes the runs larger.
"""

from __future__ import annotations

import os
import random
import signal

import pytest

from hades.audit import audit_stopped
from tests.support.stack import eventually, start_stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.chaos]

DOCS = int(os.environ.get("OLYMPUS_CHAOS_DOCS", "40"))
WORDS = ("tide", "moon", "orbit", "basalt", "glacier", "delta", "fjord", "lichen", "coral")


def _text(rng: random.Random, i: int) -> str:
    """A few paragraphs, some long enough to make several chunks."""
    paragraphs = [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 140))) + "."
        for _ in range(rng.randint(1, 6))
    ]
    return f"Document {i}.\n\n" + "\n\n".join(paragraphs)


@pytest.mark.parametrize(
    ("victim", "seed", "how"),
    [
        ("indexer", 1, signal.SIGKILL),
        ("indexer", 2, signal.SIGKILL),
        ("embedder", 1, signal.SIGKILL),
        ("embedder", 2, signal.SIGKILL),
        # Stopped, not killed: it drains (tests/chaos/test_retry_and_cancel.py, the embedder).
        ("indexer", 3, signal.SIGTERM),
    ],
)
def test_a_worker_killed_mid_ingest_loses_and_doubles_nothing(tmp_path, victim, seed, how):
    rng = random.Random(seed)
    running = start_stack(f"chaos-{victim}-{seed}", tmp_path / "data")
    try:
        child = next(c for c in running.stack.supervisor._children if c.name == victim)
        with running.client() as http:
            files = [("files", (f"doc-{i}.txt", _text(rng, i).encode())) for i in range(DOCS)]
            r = http.post("/rag/documents", files=files)
            assert r.status_code == 202, r.text
            ids = [d["doc_id"] for d in r.json()["documents"]]
            # Killed once a random part of the documents is indexed: the rest are in flight.
            target = rng.randint(1, DOCS // 2)

            def indexed() -> int:
                listing = http.get("/rag/documents", params={"status": "indexed", "limit": 1000})
                return len(listing.json()["items"])

            eventually(lambda: indexed() >= target, "nothing got indexed", timeout_s=300)
            done = indexed()
            os.kill(child.proc.pid, how)
            why = f"{victim} sent {how.name} with {done} of {DOCS} indexed (seed {seed})"
            eventually(lambda: child.restarts >= 1, f"{why}: it was not restarted", 120)
            settled = [wait_for(http, doc_id, timeout_s=300) for doc_id in ids]
        assert done < DOCS, f"{why}: the kill came after the work"
        assert [d["filename"] for d in settled if d["status"] != "indexed"] == [], why
    finally:
        running.stack.stop()
    assert_each_indexed_once(running.data_dir, DOCS, why)


def assert_each_indexed_once(data_dir, count: int, why: str) -> None:
    """The stopped stack's stores: ``count`` documents, each indexed, with as many vectors as
    chunks in the graph and as its record says, and no vector besides."""
    audit = audit_stopped(data_dir)
    documents = audit["documents"]
    assert len(documents) == count, why
    wrong = {
        d["filename"]: d
        for d in documents.values()
        if d["status"] != "indexed" or not d["vectors"] == d["graph_chunks"] == d["chunk_count"]
    }
    assert wrong == {}, why
    assert audit["vectors_total"] == sum(d["chunk_count"] for d in documents.values()), why


def test_two_embedders_share_the_work_and_one_killed_loses_nothing(tmp_path):
    """``olympus up --replicas embedder=2``: both take documents from the one durable consumer;
    the second is killed mid-ingest and the first carries on (the dead one is restarted too)."""
    rng = random.Random(7)
    # AckWait short: what the killed one held goes to the other 10 s later, not 60.
    env = {"OLYMPUS_ACK_WAIT_S": "10"}
    running = start_stack("chaos-replicas", tmp_path / "data", env, replicas={"embedder": 2})
    try:
        children = {c.name: c for c in running.stack.supervisor._children}
        second = children["embedder-2"]
        with running.client() as http:
            files = [("files", (f"doc-{i}.txt", _text(rng, i).encode())) for i in range(DOCS)]
            ids = [
                d["doc_id"] for d in http.post("/rag/documents", files=files).json()["documents"]
            ]

            def indexed() -> int:
                listing = http.get("/rag/documents", params={"status": "indexed", "limit": 1000})
                return len(listing.json()["items"])

            eventually(lambda: indexed() >= DOCS // 4, "nothing got indexed", timeout_s=300)
            done = indexed()
            os.kill(second.proc.pid, signal.SIGKILL)
            why = f"embedder-2 killed with {done} of {DOCS} indexed"
            settled = [wait_for(http, doc_id, timeout_s=300) for doc_id in ids]
        assert [d["filename"] for d in settled if d["status"] != "indexed"] == [], why
    finally:
        running.stack.stop()
    log = running.log.read_text()
    for name in ("embedder", "embedder-2"):
        assert f'{name:>9} | {{"chunks"' in log, f"{name} embedded nothing"
    assert_each_indexed_once(running.data_dir, DOCS, why)
