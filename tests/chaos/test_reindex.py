"""Chaos, re-embedding: ``olympus reindex`` against the running stack while questions keep
coming and documents keep being added, rewritten and deleted, with two embedders.

No question may fail or miss, and afterwards every document must be in the new model's vectors
once, at its last version: the vectors stored for each passage are the new model's vectors of
the text the graph holds for it now, and nothing of a deleted or rewritten version is left.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import threading
import time

import nats
import numpy as np
import pytest

from hades.milvus import MilvusVectorIndex
from hades.sqlite import SqliteDocumentGraph
from olympus import health
from schemas import subjects
from schemas.ids import model_fingerprint
from tests.chaos.test_kills import DOCS, _text, assert_each_indexed_once
from tests.e2e.test_model_change import Asking
from tests.support.samples import fine_tuned_encoder
from tests.support.stack import eventually, indexed, start_stack, wait_for
from workers.embedder.encoder import Encoder, default_model_path, fingerprint

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.chaos]
# What the embedder logs on running the packaged model alone (at start, and after a cancel)
BACK = '"model": "all-MiniLM-L6-v2@9027947a4381", "next_model": null'


async def _embedders(running) -> list[list[str]]:
    """The models each embedder says it runs (``olympus.health.replicas``)."""
    nc = await nats.connect(**running.bus())
    try:
        return [reply.models for reply in await health.replicas(nc, subjects.EMBEDDER)]
    finally:
        await nc.close()


class Changing(threading.Thread):
    """Add, rewrite and delete documents until ``stop``; what each document should be at the
    end is in ``latest`` (filename -> text), what was deleted is gone from it."""

    def __init__(self, running, rng: random.Random, latest: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.running, self.rng, self.latest = running, rng, latest
        self.sent: list[dict] = []  # every add_document reply
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.running.client() as http:
                added = 0
                while not self.stopping.is_set():
                    what = self.rng.choice(("add", "rewrite", "rewrite", "delete"))
                    names = sorted(n for n in self.latest if n != "zephyrus.txt")
                    if what == "delete" and names:
                        name = self.rng.choice(names)
                        doc = next(s for s in reversed(self.sent) if s["filename"] == name)
                        r = http.delete(f"/rag/documents/{doc['doc_id']}")
                        assert r.status_code == 202, r.text
                        del self.latest[name]
                        time.sleep(0.2)
                        continue
                    if what == "add" or not names:
                        name, added = f"new-{added}.txt", added + 1
                    else:
                        name = self.rng.choice(names)
                    text = _text(self.rng, self.rng.randint(1000, 9999))
                    r = http.post("/rag/add_document", json={"filename": name, "content": text})
                    assert r.status_code == 202, r.text
                    self.sent.append(r.json())
                    self.latest[name] = text
                    time.sleep(0.2)  # with the questions, under the key's 50 requests a second
        except BaseException as exc:  # the test's thread says it
            self.error = exc


def test_a_live_reindex_under_changes_leaves_every_document_once_in_the_new_model(tmp_path):
    rng = random.Random(11)
    other = fine_tuned_encoder(tmp_path / "fine-tuned")
    data = tmp_path / "data"
    # The questions and the changes share one key: its rate limit is not what is tested here.
    env = {"OLYMPUS_GATEWAY_RATE_LIMIT": "1000/second"}
    running = start_stack("chaos-reindex", data, env, replicas={"embedder": 2})
    latest = {f"doc-{i}.txt": _text(rng, i) for i in range(DOCS)}
    latest["zephyrus.txt"] = "Zephyrus, the west wind, is the gentlest, the messenger of spring."
    asking = Asking(running, running.key)
    changing = Changing(running, rng, latest)
    try:
        with running.client() as http:
            files = [("files", (name, text.encode())) for name, text in latest.items()]
            r = http.post("/rag/documents", files=files)
            assert r.status_code == 202, r.text
            changing.sent += r.json()["documents"]
            for doc in r.json()["documents"]:
                assert wait_for(http, doc["doc_id"], timeout_s=300)["status"] == "indexed"
            models_heard = sorted(asyncio.run(_embedders(running)))
            asking.start()
            changing.start()
            reindex = subprocess.run(
                [sys.executable, "-m", "olympus.cli", "reindex", "--model", str(other),
                 "--data-dir", str(data)],
                capture_output=True, text=True, timeout=900, check=False,
            )  # fmt: skip
            time.sleep(3)  # questions and changes go on a little after the switch
            for thread in (asking, changing):
                thread.stopping.set()
                thread.join(timeout=60)
            assert changing.error is None, changing.error
            assert reindex.returncode == 0, reindex.stderr
            last = {s["filename"]: s for s in changing.sent}
            for name in latest:
                done = wait_for(http, last[name]["doc_id"], version=last[name]["version"],
                                timeout_s=300)  # fmt: skip
                assert done["status"] == "indexed", done
            time.sleep(1)  # deletions settle
    finally:
        asking.stopping.set()
        asking.join(timeout=30)
        running.stack.stop()
    log = running.log.read_text()
    for name in ("embedder", "embedder-2"):
        assert f'{name:>9} | {{"model": "fine-tuned@' in log, f"{name} did not follow the move"
    # What olympus reindex waited on before it began and before it switched: both answered.
    assert models_heard == [[f"all-MiniLM-L6-v2@{fingerprint(default_model_path())}"]] * 2
    wrong = [a for a in asking.answers if a[1] != 200 or a[2] != "zephyrus.txt"]
    assert not wrong, f"{len(wrong)} of {len(asking.answers)} questions went wrong: {wrong[:5]}"
    why = f"{reindex.stdout}\n{len(changing.sent) - DOCS - 1} changes sent during the reindex"
    assert_each_indexed_once(data, len(latest), why)
    _assert_vectors_are_the_new_models_of_the_current_text(data, other, latest, why)


def _assert_vectors_are_the_new_models_of_the_current_text(data, model, latest, why) -> None:
    graph = SqliteDocumentGraph(data / "graph.sqlite3")
    index = MilvusVectorIndex(str(data / "milvus.db"), 384, term_key=b"")
    try:
        encoder = Encoder(str(model))
        assert model_fingerprint(index.model or "") == model_fingerprint(encoder.identity), why
        docs, _ = graph.list_documents("default", limit=10_000)
        assert sorted(d.filename for d in docs) == sorted(latest), why
        chunks = [c for d in docs for c in graph.chunks("default", d.doc_id)]
        stored = {
            row["id"]: row["dense"]
            for row in index.milvus.query(
                index.name, 'tenant == "default"', ["id", "dense"], 16_384
            )
        }
        assert sorted(stored) == sorted(c.chunk_id for c in chunks), why
        fresh = encoder.embed([c.text for c in chunks])
        cosines = np.array(
            [np.dot(stored[c.chunk_id], v) for c, v in zip(chunks, fresh, strict=True)]
        )
        assert cosines.min() > 0.98, f"{why}\nlowest cosine {cosines.min():.3f}"
    finally:
        index.close()
        graph.close()


def test_a_live_reindex_killed_midway_is_settled_by_cancel_and_runs_again(tmp_path):
    """``kill -9`` of olympus reindex once the next collection is filling: the stack goes on
    embedding with both models, answering with the old one; ``--cancel`` puts everything back,
    and the reindex runs again from the start."""
    rng = random.Random(5)
    other = fine_tuned_encoder(tmp_path / "fine-tuned")
    data = tmp_path / "data"
    running = start_stack("chaos-reindex-killed", data)
    command = [sys.executable, "-m", "olympus.cli", "reindex", "--data-dir", str(data)]
    try:
        with running.client() as http:
            files = [("files", (f"doc-{i}.txt", _text(rng, i).encode())) for i in range(DOCS)]
            sent = http.post("/rag/documents", files=files).json()["documents"]
            for doc in sent:
                assert wait_for(http, doc["doc_id"], timeout_s=300)["status"] == "indexed"
            killed = subprocess.Popen(
                [*command, "--model", str(other)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            eventually(
                lambda: '"event": "reindex begun"' in running.log.read_text(),
                "the reindex did not begin",
                timeout_s=120,
            )
            killed.kill()
            killed.wait(30)
            stuck = subprocess.run([*command, "--model", str(other)], capture_output=True,
                                   text=True, timeout=300, check=False)  # fmt: skip
            assert stuck.returncode == 1
            assert "olympus reindex --cancel undoes it" in stuck.stderr
            cancelled = subprocess.run([*command, "--cancel"], capture_output=True, text=True,
                                       timeout=300, check=False)  # fmt: skip
            assert cancelled.returncode == 0, cancelled.stderr
            assert "nothing is under way" in cancelled.stdout
            # the embedders read the move every 2 s: back to their own model alone before the
            # next run writes its move (once, a run began within the 2 s, and they never left it)
            eventually(
                lambda: running.log.read_text().count(BACK) >= 2,
                "the embedder did not go back to its own model alone",
                timeout_s=60,
            )
            meanwhile = indexed(http, "zephyrus.txt", "Zephyrus, the gentle west wind.")
            again = subprocess.run([*command, "--model", str(other)], capture_output=True,
                                   text=True, timeout=600, check=False)  # fmt: skip
            assert again.returncode == 0, again.stderr
            r = http.post("/mcp/m/query", json={"input": "gentle west wind", "mode": "dense"})
            assert r.json()["retrieved_documents"][0]["doc_id"] == meanwhile["doc_id"]
    finally:
        running.stack.stop()
    assert_each_indexed_once(data, DOCS + 1, again.stdout)
    index = MilvusVectorIndex(str(data / "milvus.db"), 384, term_key=b"")
    try:
        assert model_fingerprint(index.model or "") == model_fingerprint(
            f"x@{fingerprint(str(other))}"
        )
        assert "olympus_chunks__building" not in index.collections()
    finally:
        index.close()
