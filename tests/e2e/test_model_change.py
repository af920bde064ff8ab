"""Changing the embedder's model under an index another filled: vectors of two models are not
comparable, even of one size, so the stack refuses to mix them and says what to do; and
``olympus reindex`` embeds every passage again under the new model, uploading nothing."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from hades.milvus import MilvusVectorIndex
from tests.support.samples import fine_tuned_encoder
from tests.support.stack import eventually, indexed, start_stack, wait_for

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
            running = olympus("reindex", "--model", str(other), "--data-dir", str(data))
            assert running.returncode == 1
            assert "stop it first" in running.stderr
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
