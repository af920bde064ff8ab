"""Chaos, second part: a document its worker died on is marked failed, and a retry indexes it
from what the bus still holds, with no new upload; a document deleted while it is being
embedded leaves nothing behind; a worker stopped (SIGTERM) hands back what it holds.

The embedder is killed (SIGKILL) twice while it embeds one large document: once, and again
when the redelivered document runs alone (as a suspect does). That is poison: the next
delivery dead-letters it, H.A.D.E.S. marks it failed from the letter, and
``POST /rag/documents/{doc_id}/retry`` republishes the letter's original. Once the worker is
healthy again (here: it always was; the document did not deserve its fate) the retry indexes it
exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal

import nats
import pytest
from nats.js.errors import NoKeysError

from hades.audit import audit_stopped
from schemas import subjects
from tests.support.stack import RunningStack, eventually, start_stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.chaos]

# Enough text to keep the embedder busy for seconds on any CPU (~300 chunks).
LARGE = "\n\n".join(
    f"Section {i}. " + " ".join(f"granite{j % 37} basalt{j % 11} quartz{i}" for j in range(60))
    for i in range(300)
)


async def _alone_since(running: RunningStack) -> bool:
    """Whether some ingest message runs alone now: a suspect, after its worker died on it."""
    nc = await nats.connect(**running.bus())
    try:
        bucket = await nc.jetstream().key_value(subjects.INFLIGHT_BUCKET)
        try:
            keys = await bucket.keys()
        except NoKeysError:
            return False
        for key in keys:
            record = json.loads((await bucket.get(key)).value or b"{}")
            if key.startswith(subjects.INGEST_STREAM.name) and record.get("alone"):
                return True
        return False
    finally:
        await nc.close()


def test_a_document_its_worker_died_on_fails_and_a_retry_indexes_it(tmp_path):
    running = start_stack("chaos-retry", tmp_path / "data", env={"OLYMPUS_ACK_WAIT_S": "4"})
    try:
        embedder = next(c for c in running.stack.supervisor._children if c.name == "embedder")
        with running.client() as http:
            r = http.post("/rag/add_document", json={"filename": "large.txt", "content": LARGE})
            assert r.status_code == 202, r.text
            doc_id = r.json()["doc_id"]
            # (its queued state reaches H.A.D.E.S. over the bus: until then it is unknown, 404)
            wait_for(http, doc_id, statuses=("processing",), timeout_s=120)
            assert http.post(f"/rag/documents/{doc_id}/retry").status_code == 409  # not failed
            os.kill(embedder.proc.pid, signal.SIGKILL)
            eventually(lambda: embedder.restarts >= 1, "the embedder was not restarted", 120)
            # Redelivered after AckWait to the restarted embedder, alone: killed again there.
            eventually(
                lambda: asyncio.run(_alone_since(running)), "the document never ran alone", 180
            )
            os.kill(embedder.proc.pid, signal.SIGKILL)

            failed = wait_for(http, doc_id, statuses=("failed", "indexed"), timeout_s=180)
            assert failed["status"] == "failed", failed
            assert "poison" in failed["error"], failed

            r = http.post(f"/rag/documents/{doc_id}/retry")
            assert r.status_code == 202, r.text
            assert r.json()["status"] == "queued"
            indexed = wait_for(http, doc_id, timeout_s=300)
            assert indexed["status"] == "indexed", indexed
            assert indexed["error"] is None
            assert http.post(f"/rag/documents/{doc_id}/retry").status_code == 409
            assert http.post("/rag/documents/no-such-doc/retry").status_code == 404
    finally:
        running.stack.stop()
    audit = audit_stopped(running.data_dir)
    (document,) = audit["documents"].values()
    assert document["status"] == "indexed"
    assert document["vectors"] == document["graph_chunks"] == document["chunk_count"] > 100
    assert audit["vectors_total"] == document["chunk_count"]


def test_a_document_deleted_while_embedded_leaves_nothing_behind(tmp_path):
    running = start_stack("chaos-cancel", tmp_path / "data")
    try:
        with running.client() as http:
            r = http.post("/rag/add_document", json={"filename": "large.txt", "content": LARGE})
            doc_id = r.json()["doc_id"]
            wait_for(http, doc_id, statuses=("processing",), timeout_s=120)
            assert http.delete(f"/rag/documents/{doc_id}").status_code == 202
            eventually(
                lambda: http.get(f"/rag/documents/{doc_id}").status_code == 404,
                "the document was never deleted",
                120,
            )
            # The embedder dropped the work: what had not reached the model never will.
            eventually(
                lambda: any(
                    line.get("event", "").startswith("abandoned") and line.get("doc_id") == doc_id
                    for line in _log_lines(running)
                ),
                "the embedder never abandoned the deleted document's work",
                120,
            )
            kept = http.post(
                "/rag/add_document", json={"filename": "kept.txt", "content": "basalt"}
            )
            assert wait_for(http, kept.json()["doc_id"])["status"] == "indexed"
            found = http.post(
                "/mcp/chaos/query", json={"input": "granite basalt quartz", "mode": "bm25"}
            ).json()
            assert {p["doc_id"] for p in found["retrieved_documents"]} == {kept.json()["doc_id"]}
    finally:
        running.stack.stop()
    audit = audit_stopped(running.data_dir)
    assert [d["filename"] for d in audit["documents"].values()] == ["kept.txt"]
    assert audit["vectors_total"] == 1


def test_a_stopping_worker_hands_back_what_it_holds_at_once(tmp_path):
    """SIGTERM while documents too large to finish in the drain time are embedded: each is
    handed back (nak) and taken up again by the restarted embedder, once, as ordinary work.
    AckWait is ten minutes here: a document not handed back would wait that long."""
    env = {"OLYMPUS_ACK_WAIT_S": "600", "OLYMPUS_DRAIN_S": "1"}
    running = start_stack("chaos-drain", tmp_path / "data", env=env)
    try:
        embedder = next(c for c in running.stack.supervisor._children if c.name == "embedder")
        with running.client() as http:
            ids = []
            for i in range(3):
                content = LARGE.replace("Section", f"Part {i} section")
                r = http.post(
                    "/rag/add_document", json={"filename": f"l{i}.txt", "content": content}
                )
                ids.append(r.json()["doc_id"])
            wait_for(http, ids[0], statuses=("processing",), timeout_s=120)
            embedder.proc.send_signal(signal.SIGTERM)
            eventually(lambda: embedder.restarts >= 1, "the embedder was not restarted", 120)
            settled = [wait_for(http, doc_id, timeout_s=300) for doc_id in ids]
            assert [d["status"] for d in settled] == ["indexed"] * 3
    finally:
        running.stack.stop()
    lines = _log_lines(running)
    handed_back = [x["doc_id"] for x in lines if x.get("event", "").startswith("handed back")]
    assert sorted(handed_back) == sorted(ids)
    embedded = [x["doc_id"] for x in lines if x.get("event") == "embedded"]
    assert sorted(embedded) == sorted(ids)  # each once: none finished before the stop
    assert not [x for x in lines if x.get("level") == "error"]
    audit = audit_stopped(running.data_dir)
    assert {d["status"] for d in audit["documents"].values()} == {"indexed"}
    assert audit["vectors_total"] == sum(d["chunk_count"] for d in audit["documents"].values())


def _log_lines(running: RunningStack) -> list[dict]:
    """The stack's JSON log lines (each is ``<service> | <json>``)."""
    lines = []
    for text in running.log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            if isinstance(line := json.loads(text.partition("| ")[2]), dict):
                lines.append(line)
    return lines
