"""Changing the embedder's model under an index another filled: vectors of two models are not
comparable, even of one size, so the stack refuses to mix them and says what to do."""

from __future__ import annotations

import pytest

from tests.support.samples import fine_tuned_encoder
from tests.support.stack import indexed, start_stack, wait_for

pytestmark = pytest.mark.e2e


def test_a_model_changed_under_the_index_is_refused_with_what_to_do(tmp_path):
    data = tmp_path / "olympus"
    first = start_stack("model-first", data)
    try:
        with first.client() as http:
            kept = indexed(http, "valve.txt", "The zephyr valve opens at dawn.")
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
    finally:
        second.stack.stop()
