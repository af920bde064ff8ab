"""Changing the embedder's model under an index another filled: vectors of two models are not
comparable, even of one size, so the stack refuses to mix them and says what to do; and
``olympus reindex`` embeds every passage again under the new model, uploading nothing: on the
stopped stack's data, or through the running stack while it keeps answering."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time

import pytest

from hades.milvus import MilvusVectorIndex
from schemas.ids import model_fingerprint
from tests.support.samples import fine_tuned_encoder
from tests.support.stack import eventually, indexed, start_stack, wait_for
from workers.embedder.encoder import default_model_path

pytestmark = pytest.mark.e2e


def olympus(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "olympus.cli", *args],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def test_a_changed_model_is_refused_until_olympus_reindex_embeds_everything_again(tmp_path):
    data = tmp_path / "olympus"
    first = start_stack("model-first", data)
    try:
        with first.client() as http:
            kept = indexed(http, "valve.txt", "The zephyr valve opens at dawn.")
            west = {"filename": "w.txt", "content": "Zephyrus, the west wind.", "collection": "x"}
            r = http.post("/rag/add_document", json=west)
            assert wait_for(http, r.json()["doc_id"])["status"] == "indexed"
            wind = r.json()["doc_id"]
    finally:
        first.stack.stop()

    other = fine_tuned_encoder(tmp_path / "fine-tuned")
    second = start_stack("model-second", data, env={"OLYMPUS_EMBEDDER_MODEL": str(other)})
    try:
        with second.client(first.key) as http:
            dense = http.post("/mcp/m/query", json={"input": "zephyr valve", "mode": "dense"})
            assert dense.status_code == 503, dense.text
            assert "OLYMPUS_EMBEDDER_MODEL" in dense.text
            bm25 = http.post("/mcp/m/query", json={"input": "zephyr valve", "mode": "bm25"})
            assert bm25.status_code == 200, bm25.text
            found = bm25.json()["retrieved_documents"]
            assert [d["doc_id"] for d in found] == [kept["doc_id"]]

            r = http.post("/rag/add_document", json={"filename": "b.txt", "content": "Boreas."})
            assert r.status_code == 202, r.text
            refused = wait_for(http, r.json()["doc_id"])
            assert refused["status"] == "failed"
            assert "holds vectors of all-MiniLM-L6-v2@" in refused["error"]
            assert wait_for(http, kept["doc_id"])["status"] == "indexed"
            # The embedders already run the new model: a live reindex has nothing to move.
            running = olympus("reindex", "--model", str(other), "--data-dir", str(data))
            assert running.returncode == 1
            assert "the embedders already run fine-tuned@" in running.stderr
    finally:
        second.stack.stop()

    done = olympus("reindex", "--model", str(other), "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    assert "2 passages of 2 documents embedded with fine-tuned@" in done.stdout
    assert f"OLYMPUS_EMBEDDER_MODEL={other}" in done.stdout
    again = olympus("reindex", "--model", str(other), "--data-dir", str(data))
    assert "already holds vectors of fine-tuned@" in again.stdout

    third = start_stack("model-third", data, env={"OLYMPUS_EMBEDDER_MODEL": str(other)})
    try:
        with third.client(first.key) as http:
            for mode in ("dense", "hybrid"):
                r = http.post("/mcp/m/query", json={"input": "zephyr valve", "mode": mode})
                assert r.status_code == 200, r.text
                assert r.json()["retrieved_documents"][0]["doc_id"] == kept["doc_id"]
            fresh = indexed(http, "c.txt", "Notus brings the autumn rain.")
            r = http.post("/mcp/m/query", json={"input": "autumn rain", "mode": "dense"})
            assert r.json()["retrieved_documents"][0]["doc_id"] == fresh["doc_id"]
            assert http.delete(f"/rag/documents/{kept['doc_id']}").status_code == 202
            eventually(
                lambda: http.get(f"/rag/documents/{kept['doc_id']}").status_code == 404,
                "the document was not deleted",
            )
    finally:
        third.stack.stop()

    # A deletion reaches the vectors reindex kept: erasure does not wait for --drop-old.
    kept_as = re.search(r"kept as (\S+) ", done.stdout).group(1)
    old = MilvusVectorIndex(str(data / "milvus.db"), 384, term_key=b"", collection=kept_as)
    try:
        assert old.count("default", kept["doc_id"]) == 0
        assert old.count("default", wind) == 1
    finally:
        old.close()

    dropped = olympus("reindex", "--drop-old", "--data-dir", str(data))
    assert dropped.returncode == 0, dropped.stderr
    assert dropped.stdout.startswith("dropped olympus_chunks__")


WINDS = {
    "boreas.txt": "Boreas, the north wind, brings the cold of winter.",
    "notus.txt": "Notus, the south wind, brings the storms of late summer.",
    "eurus.txt": "Eurus, the east wind, is the unlucky one.",
    "zephyrus.txt": "Zephyrus, the west wind, is the gentlest, the messenger of spring.",
}


class Asking(threading.Thread):
    """Ask the same questions over and over, every answer kept, until ``stop``."""

    def __init__(self, stack, key: str) -> None:
        super().__init__(daemon=True)
        self.stack, self.key = stack, key
        self.answers: list[tuple[str, int, str | None]] = []  # mode, status, first doc's name
        self.stopping = threading.Event()

    def run(self) -> None:
        with self.stack.client(self.key) as http:
            while not self.stopping.is_set():
                for mode in ("dense", "hybrid"):
                    r = http.post("/mcp/q/query", json={"input": "the gentle west wind",
                                                         "mode": mode})  # fmt: skip
                    found = r.json().get("retrieved_documents") if r.status_code == 200 else None
                    self.answers.append(
                        (mode, r.status_code, found[0]["filename"] if found else None)
                    )
                time.sleep(0.1)


def test_a_live_reindex_keeps_answering_and_switches_at_once(tmp_path):
    """Against the running stack, olympus reindex embeds every passage again under the new model
    while questions keep coming and documents keep arriving: no question fails or misses, what
    arrives meanwhile is in the new vectors too, and an embedder started later with the old
    setting follows the move."""
    data = tmp_path / "olympus"
    other = fine_tuned_encoder(tmp_path / "fine-tuned")
    running = start_stack("live-reindex", data)
    asking = Asking(running, running.key)
    try:
        with running.client() as http:
            for name, text in WINDS.items():
                indexed(http, name, text)
            asking.start()
            eventually(lambda: len(asking.answers) >= 6, "no answer before the reindex")
            reindex = subprocess.Popen(
                [sys.executable, "-m", "olympus.cli", "reindex", "--model", str(other),
                 "--data-dir", str(data)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            meanwhile = [
                http.post("/rag/add_document", json={"filename": f"breeze-{i}.txt",
                          "content": f"Breeze number {i} of the afternoon."}).json()
                for i in range(3)
            ]  # fmt: skip
            out, err = reindex.communicate(timeout=600)
            assert reindex.returncode == 0, err
            assert "while the stack kept answering" in out
            status = olympus("status", "--data-dir", str(data))
            assert "MODEL         fine-tuned@" in status.stdout, status.stdout
            assert "(in use; olympus reindex)" in status.stdout
            for sent in meanwhile:
                assert (
                    wait_for(http, sent["doc_id"], version=sent["version"])["status"] == "indexed"
                )
            after = indexed(http, "aura.txt", "Aura smells of violets and of the sea at dawn.")
            r = http.post("/mcp/m/query", json={"input": "violets by the sea", "mode": "dense"})
            assert r.status_code == 200, r.text
            assert r.json()["retrieved_documents"][0]["doc_id"] == after["doc_id"]
            asked_after = len(asking.answers)
            eventually(lambda: len(asking.answers) >= asked_after + 6, "no answer after it")
    finally:
        asking.stopping.set()
        asking.join(timeout=30)
        running.stack.stop()
    failed = [a for a in asking.answers if a[1] != 200 or a[2] != "zephyrus.txt"]
    assert not failed, f"{len(failed)} of {len(asking.answers)} questions went wrong: {failed[:5]}"

    index = MilvusVectorIndex(str(data / "milvus.db"), 384, term_key=b"")
    try:
        assert model_fingerprint(index.model or "") == model_fingerprint(f"x@{_digest(other)}")
        assert index.next is None
        chunks = sum(index.count(t) for t in ("default",))
        assert chunks == len(WINDS) + 3 + 1  # one passage each, none twice
    finally:
        index.close()

    # Started again with the old model's setting, the embedders follow the move.
    again = start_stack("live-reindex-again", data)
    try:
        with again.client(running.key) as http:
            later = indexed(http, "lips.txt", "Lips, the south-west wind, steers the ships home.")
            r = http.post("/mcp/m/query", json={"input": "wind that steers ships", "mode": "dense"})
            assert r.status_code == 200, r.text
            assert r.json()["retrieved_documents"][0]["doc_id"] == later["doc_id"]
            # And back: the embedders run the new model beside the one the index now holds.
            back = olympus("reindex", "--model", default_model_path(), "--data-dir", str(data))
            assert back.returncode == 0, back.stderr
            r = http.post("/mcp/m/query", json={"input": "violets by the sea", "mode": "hybrid"})
            assert r.json()["retrieved_documents"][0]["doc_id"] == after["doc_id"]
            nothing = olympus("reindex", "--cancel", "--data-dir", str(data))
            assert nothing.returncode == 0, nothing.stderr
            dropped = olympus("reindex", "--drop-old", "--data-dir", str(data))
            assert dropped.returncode == 0, dropped.stderr
            assert dropped.stdout.count("dropped olympus_chunks__") == 2, dropped.stdout
    finally:
        again.stack.stop()
    log = again.log.read_text()
    assert '"next_model": "all-MiniLM-L6-v2@' in log
    index = MilvusVectorIndex(str(data / "milvus.db"), 384, term_key=b"")
    try:
        assert model_fingerprint(index.model or "") == _digest(default_model_path())
        assert index.collections() == ["olympus_chunks"]
    finally:
        index.close()


def _digest(folder) -> str:
    from workers.embedder.encoder import fingerprint

    return fingerprint(str(folder))
