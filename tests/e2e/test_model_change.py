"""Changing the embedder's model under an index another filled: vectors of two models are not
comparable, even of one size, so the stack refuses to mix them and says what to do."""

from __future__ import annotations

import shutil

import pytest

from tests.support.stack import indexed, start_stack, wait_for
from workers.embedder.encoder import default_model_path

pytestmark = pytest.mark.e2e


def test_a_model_changed_under_the_index_is_refused_with_what_to_do(tmp_path):
    data = tmp_path / "olympus"
    first = start_stack("model-first", data)
    try:
        with first.client() as http:
            kept = indexed(http, "valve.txt", "The zephyr valve opens at dawn.")
    finally:
        first.stack.stop()

    # Another model of the same size and config: the packaged one with other weights.
    other = tmp_path / "fine-tuned"
    shutil.copytree(default_model_path(), other)
    weights = next(f for f in other.iterdir() if f.name.endswith((".safetensors", ".bin")))
    data_bytes = bytearray(weights.read_bytes())
    data_bytes[1 << 19] ^= 0xFF
    weights.write_bytes(bytes(data_bytes))

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
