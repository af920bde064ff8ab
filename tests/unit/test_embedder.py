"""The embedder's model, chunker and batcher, on the real packaged MiniLM."""

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.support.samples import fine_tuned_encoder
from workers.embedder.batching import EmbeddingBatcher, length_batches
from workers.embedder.chunking import Chunker
from workers.embedder.encoder import Encoder, default_model_path, fingerprint

pytestmark = pytest.mark.unit

SENTENCES = [
    "The cat sat on the mat.",
    "Quantum chromodynamics describes the strong interaction between quarks and gluons.",
    "A short one.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen in plants.",
]


@pytest.fixture(scope="module")
def fp32():
    return Encoder(dtype="float32", batch_size=2)


@pytest.fixture(scope="module")
def bf16():
    return Encoder(dtype="bfloat16", batch_size=2)


def test_matches_sentence_transformers(fp32):
    from sentence_transformers import SentenceTransformer

    from workers.embedder.encoder import default_model_path

    reference = SentenceTransformer(default_model_path(), device="cpu").encode(SENTENCES)
    ours = fp32.embed(SENTENCES)
    assert ours.shape == (4, 384)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_the_models_identity_follows_its_weights_not_its_folder(fp32, tmp_path):
    """The index refuses vectors of another model by this identity: a copy of the same weights
    elsewhere is the same model (bf16 or fp32 alike), a fine-tune sharing its config is not."""
    source = Path(default_model_path())
    assert fp32.identity == f"all-MiniLM-L6-v2@{fingerprint(str(source))}"
    assert len(fingerprint(str(source))) == 12
    copy = tmp_path / "elsewhere"
    shutil.copytree(source, copy)
    assert fingerprint(str(copy)) == fingerprint(str(source))
    assert fingerprint(str(fine_tuned_encoder(tmp_path / "tuned"))) != fingerprint(str(source))
    assert fingerprint("sentence-transformers/all-MiniLM-L6-v2") == ""


def test_bf16_stays_close_to_fp32(fp32, bf16):
    cosine = (fp32.embed(SENTENCES) * bf16.embed(SENTENCES)).sum(axis=1)
    assert cosine.min() >= 0.99


def test_batches_are_sorted_by_token_count_and_cover_everything(fp32):
    # Characters mislead: the shorter string is the longer one in tokens.
    texts = [
        "the cat sat on the mat and the dog lay on the rug",
        "QCD: \u03b1s(MZ)\u22480.118\u00b10.001",
    ]
    lengths = [len(ids) for ids in fp32.tokenize(texts)]
    assert lengths[1] > lengths[0]
    assert len(texts[1]) < len(texts[0])
    batches = length_batches([*lengths, 3, 40], batch_size=3)
    assert batches == [[3, 1, 0], [2]]


def test_texts_longer_than_the_model_reads_are_counted(fp32):
    words = "the west wind brings rain to the valley "
    fitting = words * (fp32.max_length // 12)
    assert fp32.too_long([fitting, "short", words * fp32.max_length]) == 1
    assert len(fp32.tokenize([fitting])[0]) < fp32.max_length


def test_chunks_fit_the_model_and_overlap(fp32):
    chunker = Chunker(fp32.tokenizer, fp32.max_length, overlap=32)
    text = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(400))
    chunks = chunker.split(text)
    assert len(chunks) > 3
    assert max(len(fp32.tokenizer(c)["input_ids"]) for c in chunks) <= fp32.max_length
    # Overlap: the start of each chunk repeats words from the end of the one before.
    assert chunks[1].split()[0] in chunks[0]
    assert chunker.split("   \n  ") == []


def _prose(rng) -> str:
    words = [
        "valve",
        "pressure",
        "steam",
        "turbine",
        "Zephyr",
        "measured",
        "flow",
        "rate",
        "the",
        "a",
        "of",
        "in",
        "to",
        "and",
    ]
    paragraphs = []
    for _ in range(rng.randint(1, 6)):
        sentences = []
        for _ in range(rng.randint(1, 12)):
            said = [rng.choice(words) for _ in range(rng.choice([3, 8, 15, 25, 40, 90]))]
            ending = rng.choice([".", "!", "?", " (p = .05).", ", e.g. the valve."])
            sentences.append(" ".join(said).capitalize() + ending)
        paragraphs.append(" ".join(sentences))
    return rng.choice(["\n\n", "\n"]).join(paragraphs)


def test_plain_text_is_cut_where_semantic_text_splitter_cuts_it(fp32):
    """Our cuts come from one tokenization; the library's from tokenizing candidate pieces.
    Paragraphs, lines, sentences and words in the same order of preference, the same overlap:
    the same chunks."""
    import random

    from semantic_text_splitter import TextSplitter

    chunker = Chunker(fp32.tokenizer, fp32.max_length, overlap=32)
    library = TextSplitter.from_huggingface_tokenizer(
        chunker._tokenizer, chunker.capacity, chunker.overlap
    )
    rng = random.Random(7)
    compared = 0
    for _ in range(120):
        text = _prose(rng)
        ours = chunker.split(text)
        assert max(len(fp32.tokenizer(c)["input_ids"]) for c in ours) <= fp32.max_length
        if len(ours) > 1:
            compared += 1
            assert ours == [c for c in library.chunks(text) if c.strip()]
    assert compared >= 80


def test_text_without_any_break_is_still_cut_to_fit(fp32):
    chunker = Chunker(fp32.tokenizer, 64, overlap=8)
    blob = "x" * 3000  # no space, no punctuation: nothing but token boundaries
    chunks = chunker.split(blob)
    assert "".join(chunks) == blob
    assert max(len(fp32.tokenizer(c)["input_ids"]) for c in chunks) <= 64


def test_markdown_chunks_follow_headings(fp32):
    chunker = Chunker(fp32.tokenizer, 64, overlap=0)
    text = "# One\n\n" + "alpha " * 40 + "\n\n# Two\n\n" + "beta " * 40
    chunks = chunker.split(text, markdown=True)
    assert any(c.startswith("# Two") for c in chunks)


async def test_batcher_gives_each_caller_its_own_vectors(fp32):
    batcher = EmbeddingBatcher(fp32.tokenize, fp32.embed_tokens, fp32.dims, batch_size=3)
    batcher.start()
    try:
        docs = [SENTENCES[:2], SENTENCES[2:], SENTENCES[1:3]]
        results = await asyncio.gather(
            *(batcher.embed(d) for d in docs), batcher.embed(["a query"], lane="query")
        )
    finally:
        await batcher.stop()
    for texts, vectors in zip(docs, results, strict=False):
        np.testing.assert_allclose(vectors, fp32.embed(texts), atol=1e-5)
    np.testing.assert_allclose(results[3], fp32.embed(["a query"]), atol=1e-5)


async def test_waiting_queries_share_one_forward_pass(fp32):
    calls: list[int] = []

    def counting(batch):
        calls.append(len(batch))
        return fp32.embed_tokens(batch)

    batcher = EmbeddingBatcher(fp32.tokenize, counting, fp32.dims, batch_size=8)
    questions = [[s] for s in SENTENCES] + [["two texts", "in one request"]]
    pending = [asyncio.ensure_future(batcher.embed(q, lane="query")) for q in questions]
    await asyncio.sleep(0)  # all five are waiting before the loop starts
    batcher.start()
    try:
        results = await asyncio.gather(*pending)
        await asyncio.sleep(0.2)  # time for a lane sent after questions already gone to run
    finally:
        await batcher.stop()
    assert calls == [6]
    for texts, vectors in zip(questions, results, strict=True):
        np.testing.assert_allclose(vectors, fp32.embed(texts), atol=1e-5)


async def test_a_large_bulk_request_does_not_hold_up_a_question(fp32):
    """Three /v1/embeddings requests of 256 texts each once went through the model with every
    question in one pass; a question now waits for one batch at most."""
    calls: list[str] = []
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    question_tokens = fp32.tokenize(["where is the valve?"])

    def recording(batch):  # in the encoder's thread
        calls.append("question" if batch == question_tokens else "bulk")
        loop.call_soon_threadsafe(started.set)
        return fp32.embed_tokens(batch)

    batcher = EmbeddingBatcher(fp32.tokenize, recording, fp32.dims, batch_size=8)
    batcher.start()
    try:
        bulk = [
            asyncio.ensure_future(batcher.embed([f"text {i} {j}" for j in range(256)], lane="bulk"))
            for i in range(3)
        ]
        await started.wait()  # the bulk work has started
        question = await batcher.embed(["where is the valve?"], lane="query")
        assert not all(f.done() for f in bulk)
        await asyncio.gather(*bulk)
    finally:
        await batcher.stop()
    np.testing.assert_allclose(question, fp32.embed(["where is the valve?"]), atol=1e-5)
    asked = calls.index("question")
    assert asked <= 2  # after at most the batch in flight and one more
    assert calls.count("bulk") == 3 * 256 // 8  # in batches, never all at once


async def test_a_question_is_answered_while_every_lane_is_busy_with_chunks(fp32):
    """Questions have a lane of their own: one asked while both lanes encode a document's
    chunks gets its vector before either batch ends (it once waited for them)."""
    import threading

    release = threading.Event()
    question_tokens = fp32.tokenize(["where is the valve?"])

    def held(batch):  # in a lane's thread: chunks wait until the question has its answer
        if batch != question_tokens:
            release.wait(timeout=120)
        return fp32.embed_tokens(batch)

    batcher = EmbeddingBatcher(fp32.tokenize, held, fp32.dims, batch_size=2, lanes=2)
    batcher.start()
    try:
        document = asyncio.ensure_future(batcher.embed(SENTENCES[:4]))  # two batches
        await asyncio.sleep(0.2)  # both lanes have taken one
        try:
            question = await asyncio.wait_for(
                batcher.embed(["where is the valve?"], lane="query"), timeout=60
            )
            assert not document.done()
        finally:
            release.set()
        vectors = await document
    finally:
        await batcher.stop()
    np.testing.assert_allclose(question, fp32.embed(["where is the valve?"]), atol=1e-5)
    np.testing.assert_allclose(vectors, fp32.embed(SENTENCES[:4]), atol=1e-5)


async def test_lanes_encode_batches_at_once_and_each_caller_gets_its_own(fp32):
    import threading

    both_in = threading.Barrier(2, timeout=60)  # broken unless two batches are in at once

    def together(batch):
        both_in.wait()
        return fp32.embed_tokens(batch)

    batcher = EmbeddingBatcher(fp32.tokenize, together, fp32.dims, batch_size=2, lanes=2)
    batcher.start()
    try:
        docs = [SENTENCES[:3], SENTENCES[3:4]]  # four texts: two batches, one in each lane
        results = await asyncio.gather(*(batcher.embed(d) for d in docs))
    finally:
        await batcher.stop()
    for texts, vectors in zip(docs, results, strict=True):
        np.testing.assert_allclose(vectors, fp32.embed(texts), atol=1e-5)


def test_a_cpu_gets_one_single_threaded_lane_per_core_and_a_gpu_one_lane():
    from workers.embedder.encoder import pick_lanes

    assert pick_lanes(0, "cpu", 4) == (4, 1)
    assert pick_lanes(2, "cpu", 8) == (2, 4)
    assert pick_lanes(0, "cuda", 0) == (1, 0)


async def test_batcher_reports_model_failures_to_the_caller():
    def broken(_batch):
        raise RuntimeError("out of memory")

    batcher = EmbeddingBatcher(lambda texts: [[1, 2]] * len(texts), broken, 4, batch_size=2)
    batcher.start()
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            await batcher.embed(["x", "y", "z"])
        with pytest.raises(RuntimeError, match="out of memory"):
            await batcher.embed(["q"], lane="query")
    finally:
        await batcher.stop()


async def test_texts_of_a_caller_that_left_are_not_encoded(fp32):
    """A deleted document's chunks (or a hung-up client's texts) still waiting for the model
    leave the pool: only the batch already running is encoded."""
    encoded: list[int] = []
    running = asyncio.Event()
    release = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow(batch):  # in the encoder's thread
        loop.call_soon_threadsafe(running.set)
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=60)
        encoded.append(len(batch))
        return fp32.embed_tokens(batch)

    batcher = EmbeddingBatcher(fp32.tokenize, slow, fp32.dims, batch_size=4)
    batcher.start()
    try:
        doomed = asyncio.ensure_future(batcher.embed([f"chunk {i}" for i in range(40)]))
        await running.wait()  # the first batch of 4 is in the model, 36 texts wait
        doomed.cancel()
        await asyncio.sleep(0)
        release.set()
        kept = await batcher.embed(["another document"])
    finally:
        await batcher.stop()
    assert encoded == [4, 1]
    np.testing.assert_allclose(kept, fp32.embed(["another document"]), atol=1e-5)


class _HeldBatcher:
    """Holds every document in the model until released: the work stays in flight."""

    def __init__(self):
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def embed(self, texts, *, lane="document"):
        self.entered.set()
        await self.release.wait()
        return np.zeros((len(texts), 4), dtype=np.float32)


async def test_a_delete_abandons_the_documents_work_in_flight(fp32):
    from schemas import subjects
    from schemas.messages import IngestDocument
    from workers.embedder.handlers import IngestHandler

    publish = _Recorder()
    batcher = _HeldBatcher()
    handler = IngestHandler(
        Chunker(fp32.tokenizer, fp32.max_length, 32), batcher, publish, "m", 100
    )
    doc = IngestDocument(tenant="t", filename="a.txt", content="a long document to embed")
    other = IngestDocument(tenant="t", filename="b.txt", content="another document")
    upsert = asyncio.ensure_future(handler.handle(doc, version=3))
    unrelated = asyncio.ensure_future(handler.handle(other, version=4))
    await batcher.entered.wait()
    deleted = await handler.handle(doc.model_copy(update={"op": "delete"}), version=5)
    assert (deleted, await upsert) == ("deleted", "abandoned")
    batcher.release.set()
    assert await unrelated == "embedded"
    await handler.statuses.close()
    written = [
        (subject, m.doc_id) for subject, m in publish.sent if subject != subjects.INDEX_STATUS
    ]
    assert written == [(subjects.INDEX_DELETE, doc.doc_id), (subjects.INDEX_UPSERT, other.doc_id)]


async def test_a_worker_stopping_hands_the_work_back_instead_of_abandoning_it(fp32):
    from schemas.messages import IngestDocument
    from workers.embedder.handlers import IngestHandler

    batcher = _HeldBatcher()
    handler = IngestHandler(
        Chunker(fp32.tokenizer, fp32.max_length, 32), batcher, _Recorder(), "m", 100
    )
    doc = IngestDocument(tenant="t", filename="a.txt", content="a long document to embed")
    upsert = asyncio.ensure_future(handler.handle(doc, version=3))
    await batcher.entered.wait()
    upsert.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upsert
    await handler.statuses.close()


class _Recorder:
    def __init__(self):
        self.sent = []

    async def __call__(self, subject, message, msg_id=None):
        self.sent.append((subject, message))


class _BrokenBatcher:
    async def embed(self, texts, *, query=False):
        raise RuntimeError("the encoder crashed")


async def test_a_failed_try_propagates_with_the_document_processing(fp32):
    """The error goes up (the message is retried); marking the document failed is left to its
    dead letter (tests/integration/test_indexer.py), which covers the worker dying too."""
    from schemas.messages import IngestDocument
    from workers.embedder.handlers import IngestHandler

    publish = _Recorder()
    handler = IngestHandler(
        Chunker(fp32.tokenizer, fp32.max_length, 32), _BrokenBatcher(), publish, "m", 100
    )
    doc = IngestDocument(tenant="t", filename="a.txt", content="some text to embed")
    with pytest.raises(RuntimeError, match="the encoder crashed"):
        await handler.handle(doc, version=3)
    await handler.statuses.close()  # "processing" is not waited for: it goes with the next
    assert [c.status for _, m in publish.sent for c in m.changes] == ["processing"]


async def test_status_changes_that_come_together_travel_together():
    """A status message per document cost the bus and H.A.D.E.S. as much as the chunks did:
    changes within the delay go in one message per tenant; a failed publish reaches whoever
    waits for it."""
    from schemas.messages import StatusChange
    from workers.embedder.handlers import Statuses

    publish = _Recorder()
    statuses = Statuses(publish, delay_s=0.05)

    def change(doc: str, status: str = "processing") -> StatusChange:
        return StatusChange(
            collection="c", doc_id=doc, filename=f"{doc}.txt", version=1, status=status
        )

    await statuses.record("t", change("a"), wait=False)
    await statuses.record("u", change("b"), wait=False)
    await statuses.record("t", change("c", "failed"), wait=True)
    assert sorted((m.tenant, [c.doc_id for c in m.changes]) for _, m in publish.sent) == [
        ("t", ["a", "c"]),
        ("u", ["b"]),
    ]

    async def broken(subject, message, msg_id=None):
        raise ConnectionError("the bus is down")

    failing = Statuses(broken, delay_s=0.01)
    with pytest.raises(ConnectionError):
        await failing.record("t", change("d", "failed"), wait=True)


# --- the query handler, called directly -------------------------------------------------------
async def test_a_query_gets_its_vector_or_skips_the_model_for_bm25(fp32):
    import time

    from schemas.messages import QueryEmbed
    from workers.embedder.handlers import QueryHandler

    batcher = EmbeddingBatcher(fp32.tokenize, fp32.embed_tokens, fp32.dims, fp32.batch_size)
    batcher.start()
    try:
        handler = QueryHandler(batcher, fp32.name, fp32.tokenizer, fp32.identity)

        def query(mode: str, deadline_s: float = 10.0) -> QueryEmbed:
            return QueryEmbed(
                request_id=f"r-{mode}",
                tenant="t",
                input=SENTENCES[1],
                top_k=3,
                mode=mode,
                deadline=time.time() + deadline_s,
            )

        dense = await handler.handle(query("hybrid"))
        assert dense.request_id == "r-hybrid"
        assert np.allclose(dense.vector, fp32.embed([SENTENCES[1]])[0], atol=1e-5)
        assert dense.model == fp32.identity  # the index checks the vector's model
        assert (await handler.handle(query("bm25"))).vector is None
        assert await handler.handle(query("dense", deadline_s=-1)) is None
    finally:
        await batcher.stop()


async def test_an_embedder_follows_the_model_move_olympus_reindex_writes():
    """What ``Models.follow`` runs in each phase of two live reindexes in a row, which models
    it loads (one started after a switch loads only the new one), and that a cancel puts back
    what was before while a move of some other model leaves it alone. The loader stands in for
    ``app.load``: what is tested is which model embeds when, not the encoders."""
    from types import SimpleNamespace

    from schemas.messages import ModelMove
    from workers.embedder.models import Model, Models

    loaded: list[str] = []
    a, b, c = "a" * 12, "b" * 12, "c" * 12

    async def load(path: str) -> Model:
        if path == "/nowhere":
            raise OSError("no such folder")
        loaded.append(path)
        identity = f"{path.strip('/')}@{path.strip('/')[0] * 12}"
        return Model(SimpleNamespace(identity=identity, name=path), None, None)  # type: ignore[arg-type]

    def running(models: Models) -> tuple[str, str | None]:
        return models.current.identity, models.next.identity if models.next else None

    to_b = ModelMove(moved=[a], to="/b", phase="building")
    on_b = ModelMove(moved=[a], to="/b", phase="switched")
    to_c = ModelMove(moved=[a, b], to="/c", phase="building", current="/b", previous=on_b)

    started_late = Models("/a", a, load)
    assert await started_late.follow(on_b)
    assert (running(started_late), loaded) == ((f"b@{b}", None), ["/b"])

    loaded.clear()
    models = Models("/a", a, load)
    await models.follow(None)
    assert running(models) == (f"a@{a}", None)
    assert await models.follow(to_b)
    assert running(models) == (f"a@{a}", f"b@{b}")
    assert not await models.follow(to_b)  # read again: nothing changes
    assert await models.follow(on_b)
    assert running(models) == (f"b@{b}", None)
    assert await models.follow(to_c)  # the second reindex: from b, not from its own a
    assert running(models) == (f"b@{b}", f"c@{c}")
    assert await models.follow(to_c.previous)  # cancelled: back to what was before
    assert running(models) == (f"b@{b}", None)
    assert await models.follow(None)  # the first one cancelled too
    assert running(models) == (f"a@{a}", None)
    assert not await models.follow(ModelMove(moved=[c], to="/b", phase="switched"))
    assert not await models.follow(ModelMove(moved=[a], to="/nowhere", phase="building"))
    assert loaded == ["/a", "/b", "/c"]  # each loaded once
