"""The indexer's write and read paths called directly, on real Milvus Lite and SQLite: what a
redelivered, stale or concurrent message does to the stores, and what a query gets back."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest

from hades import SearchQuery
from hades.milvus import MilvusVectorIndex
from hades.sqlite import SqliteDocumentGraph
from olympus.delivery import PermanentError
from schemas import subjects
from schemas.messages import (
    DeadLetter,
    DocumentEvent,
    IndexDelete,
    IndexStatus,
    IndexUpsert,
    IngestDocument,
    QueryRetrieve,
    ReindexBegin,
    ReindexCancel,
    ReindexDropOld,
    ReindexPage,
    ReindexSwitch,
    ReindexWrite,
    StatusChange,
)
from tests.support.hades_contract import TERM_KEY
from tests.support.messages import index_upsert, unit_vector
from workers.indexer.handlers import Indexer

pytestmark = pytest.mark.integration
DIMS = 16


def _upsert(doc_id: str, texts: list[str], version: int, tenant: str = "t") -> IndexUpsert:
    return index_upsert(doc_id, texts, version, DIMS, tenant)


@pytest.fixture
def events() -> list[DocumentEvent]:
    """What the indexer under test emitted, in order."""
    return []


def _started(
    tmp_path, events, vectors: MilvusVectorIndex | None = None, **settings: Any
) -> Indexer:
    async def emit(event: DocumentEvent) -> None:
        events.append(event)

    running = Indexer(
        vectors or MilvusVectorIndex(str(tmp_path / "milvus.db"), DIMS, term_key=TERM_KEY),
        SqliteDocumentGraph(tmp_path / "graph.sqlite3"),
        emit,
        **{"flush_idle_s": 0.05, **settings},
    )
    running.start()
    return running


@pytest.fixture
async def indexer(tmp_path, events):
    running = _started(tmp_path, events)
    yield running
    await running.stop()


async def test_a_redelivered_upsert_rewrites_the_same_rows(indexer, events):
    first = await indexer.upsert(_upsert("d", ["alpha one", "beta two", "gamma three"], 1))
    again = await indexer.upsert(_upsert("d", ["alpha one", "beta two", "gamma three"], 1))
    assert first is not None
    assert first.status == "indexed"
    assert again is None or again.status == "indexed"
    assert indexer.vectors.count("t", "d") == 3
    assert indexer.graph.get_document("t", "d").chunk_count == 3
    assert [e.status for e in events if e.doc_id == "d"].count("indexed") >= 1


async def test_a_new_version_replaces_and_a_stale_one_is_ignored(indexer):
    await indexer.upsert(_upsert("d", ["old one", "old two", "old three"], 1))
    await indexer.upsert(_upsert("d", ["new text"], 2))
    stale = await indexer.upsert(_upsert("d", ["older than new"], 1))
    assert stale is None
    assert indexer.vectors.count("t", "d") == 1
    assert [c.text for c in indexer.graph.chunks("t", "d")] == ["new text"]


async def test_documents_written_together_are_each_complete(indexer):
    ops = [_upsert(f"d{i}", [f"text {i} a", f"text {i} b"], 1) for i in range(12)]
    done = await asyncio.gather(*(indexer.upsert(op) for op in ops))
    assert all(e is not None and e.status == "indexed" for e in done)
    assert indexer.vectors.count("t") == 24
    assert {indexer.graph.get_document("t", f"d{i}").chunk_count for i in range(12)} == {2}


def _asked(text: str, tenant: str = "t", top_k: int = 5) -> QueryRetrieve:
    return QueryRetrieve(
        request_id="r1",
        tenant=tenant,
        input=text,
        top_k=top_k,
        mode="bm25",
        deadline=time.time() + 10,
    )


class _SealsCounted(MilvusVectorIndex):
    """The real index, counting the times it is asked to seal what was written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seals = 0
        self.sealed_twice = threading.Event()

    def flush(self) -> None:
        super().flush()
        self.seals += 1
        if self.seals == 2:
            self.sealed_twice.set()


async def test_a_long_run_of_writes_is_sealed_as_it_goes_not_only_when_it_pauses(tmp_path, events):
    vectors = _SealsCounted(str(tmp_path / "milvus.db"), DIMS, term_key=TERM_KEY)
    running = _started(tmp_path, events, vectors, flush_idle_s=3600, flush_rows=8)
    try:
        for i in range(6):  # 18 chunks, one document after another: writes never pause
            await running.upsert(_upsert(f"d{i}", [f"run {i} a", f"run {i} b", f"run {i} c"], 1))
        # Sealed after the 9th chunk and the 18th (once the 18th is acknowledged), although
        # writes never paused for an hour.
        assert await asyncio.to_thread(vectors.sealed_twice.wait, 30)
        assert vectors.seals == 2
        reply = await running.retrieve(_asked("run", top_k=20))
        assert reply is not None
        assert len(reply.hits) == 18  # sealed and unsealed alike are found
    finally:
        await running.stop()


async def test_delete_leaves_no_vector_no_chunk_and_blocks_a_late_write(indexer, events):
    await indexer.upsert(_upsert("d", ["to be removed", "also removed"], 1))
    deleted = await indexer.delete(IndexDelete(tenant="t", collection="c", doc_id="d", version=2))
    assert deleted is not None
    assert deleted.status == "deleted"
    late = await indexer.upsert(_upsert("d", ["to be removed", "also removed"], 1))
    assert late is None
    assert [e.status for e in events] == ["indexed", "deleted"]  # the late write said nothing
    assert indexer.vectors.count("t", "d") == 0
    assert indexer.graph.get_document("t", "d") is None


def _letter(original: IngestDocument | IndexUpsert, subject: str, sequence: int) -> DeadLetter:
    return DeadLetter(
        stage="index" if subject == subjects.INDEX_UPSERT else "ingest",
        subject=subject,
        error="the worker stopped while handling it",
        error_type="WorkerLost",
        deliveries=5,
        original=original.model_dump_json(),
        original_encoding="utf-8",
        sequence=sequence,
    )


async def test_a_dead_letter_marks_its_document_failed_unless_overtaken(indexer):
    """However a message failed for good (a worker dying on it included), its document says
    so with the letter's error; a newer version, a forged subject, a delete are left alone."""
    doc = IngestDocument(tenant="t", collection="c", filename="a.txt", content="words")
    processing = StatusChange(
        collection="c", doc_id=doc.doc_id, filename="a.txt", version=7, status="processing"
    )
    await indexer.status(IndexStatus(tenant="t", changes=[processing]))

    forged = _letter(doc, subjects.ingest_subject("intruder", "c"), 7)
    assert await indexer.dead_letter(forged) == []
    deleting = doc.model_copy(update={"op": "delete"})
    assert await indexer.dead_letter(_letter(deleting, subjects.ingest_subject("t", "c"), 8)) == []
    assert indexer.graph.get_document("t", doc.doc_id).status == "processing"

    (event,) = await indexer.dead_letter(_letter(doc, subjects.ingest_subject("t", "c"), 7))
    assert (event.status, event.error) == (
        "failed",
        "WorkerLost: the worker stopped while handling it",
    )
    assert indexer.graph.get_document("t", doc.doc_id).status == "failed"

    # The document indexed again since: an old letter of it changes nothing.
    await indexer.upsert(_upsert("e", ["fresh text"], 9))
    assert (
        await indexer.dead_letter(_letter(_upsert("e", ["old text"], 3), subjects.INDEX_UPSERT, 40))
        == []
    )
    (event,) = await indexer.dead_letter(_letter(_upsert("f", ["x"], 4), subjects.INDEX_UPSERT, 41))
    assert (event.doc_id, event.status, event.version) == ("f", "failed", 4)


async def test_vectors_of_the_wrong_size_are_refused_for_good(indexer):
    body = _upsert("d", ["x"], 1).model_dump()
    body["chunks"][0]["vector"] = [0.1, 0.2]
    with pytest.raises(PermanentError, match="OLYMPUS_INDEXER_DIMS"):
        await indexer.upsert(IndexUpsert.model_validate(body))


async def test_the_index_keeps_one_models_vectors_and_refuses_anothers(tmp_path, events):
    """Vectors of two models are not comparable even when their sizes agree: the collection
    keeps the model it was filled with, across restarts, and refuses another's writes and
    searches with what to do; bm25 needs no vector and goes on working."""
    indexer = _started(tmp_path, events)
    try:
        first = _upsert("d", ["the zephyr valve opens at dawn"], 1).model_copy(
            update={"model": "minilm@aaaaaaaaaaaa"}
        )
        await indexer.upsert(first)
        other = _upsert("e", ["x"], 1).model_copy(update={"model": "bge-small@bbbbbbbbbbbb"})
        with pytest.raises(PermanentError, match="holds vectors of minilm@aaaaaaaaaaaa"):
            await indexer.upsert(other)

        def query(mode: str, model: str) -> QueryRetrieve:
            vector = None if mode == "bm25" else [0.25] * DIMS
            return QueryRetrieve(
                request_id="r", tenant="t", input="zephyr valve", mode=mode, vector=vector,
                model=model, deadline=time.time() + 10,
            )  # fmt: skip

        refused = await indexer.retrieve(query("dense", "bge-small@bbbbbbbbbbbb"))
        assert refused is not None
        assert refused.error is not None
        assert refused.error.code == "unavailable"
        assert "OLYMPUS_EMBEDDER_MODEL" in refused.error.message
        for mode, model in (("dense", "minilm@aaaaaaaaaaaa"), ("bm25", "")):
            found = await indexer.retrieve(query(mode, model))
            assert found is not None
            assert found.error is None
            assert [h.doc_id for h in found.hits] == ["d"]
        # The same weights loaded from another folder are the same model.
        moved = _upsert("g", ["z"], 1).model_copy(update={"model": "model@aaaaaaaaaaaa"})
        await indexer.upsert(moved)
        # An older embedder's bare name is compared with nothing: in flight across an upgrade.
        await indexer.upsert(_upsert("f", ["y"], 1).model_copy(update={"model": "minilm"}))

    finally:
        await indexer.stop()
    reopened = MilvusVectorIndex(str(tmp_path / "milvus.db"), DIMS, term_key=TERM_KEY)
    try:
        assert reopened.model == "minilm@aaaaaaaaaaaa"
    finally:
        reopened.close()


async def test_retrieval_finds_what_was_written_and_only_the_tenants(indexer):
    await indexer.upsert(_upsert("mine", ["the zephyr valve opens at dawn"], 1, tenant="a"))
    await indexer.upsert(_upsert("theirs", ["the zephyr valve of tenant b"], 1, tenant="b"))
    reply = await indexer.retrieve(_asked("zephyr valve", tenant="a"))
    assert reply is not None
    assert reply.error is None
    assert [h.doc_id for h in reply.hits] == ["mine"]
    assert reply.hits[0].filename == "mine.txt"


async def test_an_expired_query_is_dropped(indexer):
    query = QueryRetrieve(
        request_id="r2", tenant="a", input="anything", top_k=5, mode="bm25", deadline=time.time()
    )
    await asyncio.sleep(0.01)
    assert await indexer.retrieve(query) is None


# --- a live reindex: the next model's vectors filled beside, then switched to at once ---------
OLD, NEW, NEW_DIMS = "old@aaaaaaaaaaaa", "new@bbbbbbbbbbbb", 8


def _of_old(doc_id: str, texts: list[str], version: int, *, also_new: bool = False) -> IndexUpsert:
    """A document embedded by the old model, and by the new one besides when ``also_new``
    (an embedder that has loaded it)."""
    op = _upsert(doc_id, texts, version).model_copy(update={"model": OLD})
    if not also_new:
        return op
    chunks = [
        c.model_copy(update={"next_vector": unit_vector(7 + c.position, NEW_DIMS)})
        for c in op.chunks
    ]
    return op.model_copy(update={"next_model": NEW, "chunks": chunks})


def _written_anew(indexer: Indexer, doc_id: str, version: int) -> ReindexWrite:
    """What olympus reindex writes for a document: its passages under the new model."""
    return ReindexWrite(
        model=NEW, tenant="t", doc_id=doc_id, version=version,
        chunks=[
            {"chunk_id": c.chunk_id, "position": c.position,
             "vector": unit_vector(7 + c.position, NEW_DIMS)}
            for c in indexer.graph.chunks("t", doc_id)
        ],
    )  # fmt: skip


async def _missing(indexer: Indexer) -> list[str]:
    page = await indexer.reindex_page(ReindexPage())
    assert page.error is None, page.error
    return sorted(d.doc_id for d in page.missing)


def _dense(vector: list[float] | None, model: str, **beside: Any) -> QueryRetrieve:
    return QueryRetrieve(
        request_id="r", tenant="t", input="zephyr", mode="dense", vector=vector, model=model,
        deadline=time.time() + 10, **beside,
    )  # fmt: skip


async def test_a_live_reindex_switches_only_once_every_document_is_in_the_new_model(
    tmp_path, events
):
    """The new vectors fill a collection beside the index while it answers: written with each
    document the embedder sends (when it has both models), or by olympus reindex, but never a
    version older than the document's. The switch happens only when nothing is missing; from
    then on the index holds the new model (and size), and a question carrying both vectors is
    answered with the new one, across a restart."""
    indexer = _started(tmp_path, events)
    try:
        for doc_id in ("a", "b"):
            await indexer.upsert(_of_old(doc_id, [f"zephyr {doc_id} one", f"{doc_id} two"], 1))
        begun = await indexer.reindex_begin(ReindexBegin(model=NEW, dims=NEW_DIMS))
        assert begun.error is None
        assert await _missing(indexer) == ["a", "b"]

        await indexer.upsert(_of_old("c", ["zephyr c"], 1, also_new=True))
        assert await _missing(indexer) == ["a", "b"]  # c came with both models' vectors

        assert (await indexer.reindex_write(_written_anew(indexer, "a", 1))).written == 2
        stale = _written_anew(indexer, "b", 1).model_copy(update={"version": 0})
        assert (await indexer.reindex_write(stale)).written == 0
        refused = await indexer.reindex_switch(ReindexSwitch(model=NEW))
        assert (refused.switched, refused.missing) == (False, 1)

        # An embedder that has not loaded the new model yet: "a" loses its new vectors.
        await indexer.upsert(_of_old("a", ["zephyr a again"], 2))
        assert await _missing(indexer) == ["a", "b"]
        for doc_id, version in (("a", 2), ("b", 1)):
            await indexer.reindex_write(_written_anew(indexer, doc_id, version))
        old_question = _dense(unit_vector(1, DIMS), OLD)
        assert (await indexer.retrieve(old_question)).error is None  # still the old index

        switched = await indexer.reindex_switch(ReindexSwitch(model=NEW))
        assert switched.switched, switched
        assert (indexer.vectors.model, indexer.vectors.dims) == (NEW, NEW_DIMS)
        refused_question = await indexer.retrieve(old_question)
        assert refused_question.error is not None
        assert refused_question.error.code == "unavailable"
        both = _dense(
            unit_vector(1, DIMS), OLD, next_vector=unit_vector(7, NEW_DIMS), next_model=NEW
        )
        found = await indexer.retrieve(both)
        assert found.error is None
        assert sorted({h.doc_id for h in found.hits}) == ["a", "b", "c"]

        # In flight across the switch: a document with both models' vectors gets the new ones.
        late = await indexer.upsert(_of_old("d", ["zephyr d"], 1, also_new=True))
        assert late is not None
        assert late.status == "indexed"
        assert indexer.vectors.count("t") == 5
        with pytest.raises(PermanentError, match=f"holds vectors of {NEW}"):
            await indexer.upsert(_of_old("e", ["old model only"], 1))
        # A deletion reaches the kept copy of the old vectors too.
        await indexer.delete(IndexDelete(tenant="t", collection="c", doc_id="a", version=9))
        assert indexer.vectors.milvus.count(switched.kept_as, 'doc_id == "a"') == 0
        dropped = await indexer.reindex_drop_old(ReindexDropOld())
        assert dropped.dropped == [switched.kept_as]
        assert indexer.vectors.collections() == ["olympus_chunks"]
        await indexer.delete(IndexDelete(tenant="t", collection="c", doc_id="b", version=9))
    finally:
        await indexer.stop()
    reopened = MilvusVectorIndex(str(tmp_path / "milvus.db"), DIMS, term_key=TERM_KEY)
    try:
        assert (reopened.model, reopened.dims, reopened.next) == (NEW, NEW_DIMS, None)
        assert reopened.count("t") == 2  # c and d
    finally:
        reopened.close()


async def test_a_live_reindex_under_way_is_resumed_after_a_restart_and_can_be_cancelled(
    tmp_path, events
):
    indexer = _started(tmp_path, events)
    try:
        await indexer.upsert(_of_old("a", ["zephyr a"], 1))
        await indexer.reindex_begin(ReindexBegin(model=NEW, dims=NEW_DIMS))
        await indexer.upsert(_of_old("b", ["zephyr b"], 1, also_new=True))
    finally:
        await indexer.stop()
    indexer = _started(tmp_path, events)
    try:
        assert indexer.vectors.next is not None
        assert await _missing(indexer) == ["a"]  # b's new vectors survived the restart
        await indexer.reindex_cancel(ReindexCancel(model=NEW))
        assert indexer.vectors.next is None
        assert (await indexer.reindex_page(ReindexPage())).error is not None
        assert indexer.vectors.model == OLD
        assert indexer.vectors.count("t") == 2

        # A run whose switch happened but whose answer was lost: cancelling it changes nothing.
        await indexer.reindex_begin(ReindexBegin(model=NEW, dims=NEW_DIMS))
        for doc_id in ("a", "b"):
            await indexer.reindex_write(_written_anew(indexer, doc_id, 1))
        assert (await indexer.reindex_switch(ReindexSwitch(model=NEW))).switched
        late = await indexer.reindex_cancel(ReindexCancel(model=NEW))
        assert late.switched
        assert (indexer.vectors.model, indexer.vectors.count("t")) == (NEW, 2)
    finally:
        await indexer.stop()


def test_pages_ask_the_index_for_bounded_rows():
    from workers.indexer.handlers import _bounded

    sizes = [("a", 3), ("b", 5), ("c", 9), ("d", 1), ("e", 2)]
    assert _bounded(sizes, 8) == [["a", "b"], ["c"], ["d", "e"]]
    assert _bounded([], 8) == []


async def test_documents_written_together_are_related_within_their_own_tenant(indexer):
    """Once writes pause each document is related to its nearest ones: a tenant's documents are
    searched in one call (``nearest_documents``), and none finds another tenant's."""
    words = ["wombat", "koala", "dingo", "emu", "quokka", "platypus", "numbat"]
    ops = [
        _upsert(f"{tenant}{d}", [f"{w} {tenant} {d}" for w in words[d : d + 3]], 1, tenant)
        for tenant in ("a", "b")
        for d in range(5)
    ]
    await asyncio.gather(*(indexer.upsert(op) for op in ops))
    similar = {}
    deadline = time.monotonic() + 60  # the store thread relates them once writes have paused
    while time.monotonic() < deadline:
        similar = {
            (op.tenant, op.doc_id): [
                r.target for r in indexer.graph.relations(op.tenant, op.doc_id)
                if r.origin == "similar" and r.source == op.doc_id
            ]
            for op in ops
        }  # fmt: skip
        if all(similar.values()):
            break
        await asyncio.sleep(0.05)
    for op in ops:
        mean = np.mean([c.vector for c in op.chunks], axis=0).tolist()  # searches normalise it
        alone = indexer.vectors.search(
            SearchQuery(op.tenant, "dense", 4, vector=mean, unique_documents=True)
        )
        expected = [h.doc_id for h in alone if h.doc_id != op.doc_id][:3]
        assert len(expected) == 3
        assert similar[(op.tenant, op.doc_id)] == expected, op.doc_id
