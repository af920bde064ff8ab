import json

import pytest
from nats.aio.msg import Msg
from pydantic import ValidationError

from olympus import delivery
from schemas import subjects
from schemas.formats import media_type_of
from schemas.ids import chunk_id, document_id, ingest_msg_id
from schemas.messages import MAX_METADATA_BYTES, IngestDocument, QueryEmbed

pytestmark = pytest.mark.unit


def test_document_id_derives_from_tenant_collection_and_filename():
    doc = IngestDocument(tenant="t", collection="c", filename="a.txt", content="x")
    assert doc.doc_id == document_id("t", "c", "a.txt")
    assert doc.doc_id != document_id("u", "c", "a.txt")
    assert IngestDocument(tenant="t", doc_id="mine", content="x").doc_id == "mine"


def test_chunk_ids_come_from_tenant_content_and_position():
    assert chunk_id("t", "d", 0, "hello") == chunk_id("t", "d", 0, "hello")
    made = {
        chunk_id("t", "d", 0, "a"),
        chunk_id("t", "d", 1, "a"),
        chunk_id("t", "d", 0, "b"),
        chunk_id("u", "d", 0, "a"),  # another tenant's document of the same id and text
    }
    assert len(made) == 4
    assert ingest_msg_id("d", "upsert", "ab" * 40) == ingest_msg_id("d", "upsert", "ab" * 40)


@pytest.mark.parametrize(
    "change",
    [
        {"unexpected": 1},
        {"tenant": "a.b"},  # a dot would split the subject
        {"collection": "has space"},
        {"encoding": "rot13"},
        {"schema_version": 2},
        {"relations": [{"kind": "Cites", "target": "d"}]},  # kinds are lower case
        {"relations": [{"kind": "cites", "target": "a b"}]},
        {"relations": [{"kind": "cites", "target": "x"}] * 65},
        {"doc_id": "me", "relations": [{"kind": "cites", "target": "me"}]},  # itself
    ],
)
def test_ingest_document_refuses_what_it_does_not_know(change):
    with pytest.raises(ValidationError):
        IngestDocument(**{"tenant": "t", "filename": "a.txt", "content": "x", **change})


def test_query_bounds():
    base = {"request_id": "r", "tenant": "t", "input": "q", "deadline": 1.0}
    with pytest.raises(ValidationError):
        QueryEmbed(**base, top_k=0)
    with pytest.raises(ValidationError):
        QueryEmbed(**base, top_k=101)
    with pytest.raises(ValidationError):
        QueryEmbed(**{**base, "input": ""})


def test_subjects_are_built_in_one_place():
    assert subjects.ingest_subject("acme", "docs") == "olympus.ingest.acme.docs"
    assert subjects.ingest_owner("olympus.ingest.acme.docs") == ("acme", "docs")
    assert subjects.ingest_owner("olympus.ingest.docs") is None
    assert subjects.event_subject("indexed") == "olympus.events.document.indexed"
    assert subjects.dlq_subject("ingest") == "olympus.dlq.ingest"
    filed = subjects.dlq_subject("ingest", "acme", "report.v2:1")
    assert filed.startswith("olympus.dlq.ingest.acme.")
    assert filed.count(".") == 4  # the id's dots and colon do not reach the subject
    # the filter: any stage, this tenant, this document (erased for real in tests/e2e)
    assert subjects.dlq_document("acme", "report.v2:1") == "olympus.dlq.*." + filed.split(".", 3)[3]
    assert subjects.reply_subject("r1") == "olympus.reply.r1"
    assert {s.name for s in subjects.STREAMS} == {
        "OLYMPUS_INGEST",
        "OLYMPUS_INDEX",
        "OLYMPUS_EVENTS",
        "OLYMPUS_DLQ",
        "OLYMPUS_REPLY",
        "OLYMPUS_SLOTS",
    }
    assert subjects.SLOTS_STREAM.memory
    assert subjects.SLOTS_STREAM.max_age_s == subjects.SLOT_LEASE_S
    assert subjects.REPLY_STREAM.memory
    assert subjects.REPLY_STREAM.max_age_s > 0


@pytest.mark.parametrize(
    ("filename", "declared", "expected"),
    [
        ("a.PDF", None, "application/pdf"),
        ("notes.md", None, "text/markdown"),
        ("page.htm", None, "text/html"),
        ("blob.bin", None, None),
        ("blob.bin", "text/plain; charset=utf-8", "text/plain"),
        ("x.txt", "application/octet-stream", "text/plain"),
    ],
)
def test_media_types(filename, declared, expected):
    assert media_type_of(filename, declared) == expected


def test_metadata_is_bounded_so_listings_stay_small():
    fine = {f"k{i}": "v" * 100 for i in range(64)}
    assert IngestDocument(tenant="t", doc_id="d", metadata=fine).metadata == fine
    with pytest.raises(ValidationError, match="more than the limit of 16384"):
        IngestDocument(tenant="t", doc_id="d", metadata={"k": "v" * MAX_METADATA_BYTES})
    with pytest.raises(ValidationError, match="at most 64"):
        IngestDocument(tenant="t", doc_id="d", metadata={f"k{i}": 1 for i in range(65)})


@pytest.mark.parametrize(
    ("subject", "body", "owner"),
    [
        ("olympus.index.upsert", {"tenant": "acme", "doc_id": "d.1"}, ("acme", "d.1")),
        # an ingest subject's tenant is the producer's: it wins over the body's
        ("olympus.ingest.acme.docs", {"tenant": "other", "doc_id": "d"}, ("acme", "d")),
        # no doc_id: the id ingest would give it
        (
            "olympus.ingest.acme.docs",
            {"filename": "a.txt"},
            ("acme", document_id("acme", "docs", "a.txt")),
        ),
        ("olympus.index.upsert", {"tenant": "a.b", "doc_id": "d"}, None),
        ("olympus.index.upsert", {"tenant": "acme", "doc_id": "d\n"}, None),
        ("olympus.index.upsert", {"tenant": "acme", "doc_id": 7}, None),
        ("olympus.index.upsert", [1, 2], None),
    ],
)
def test_a_dead_letter_is_filed_under_the_document_it_names(subject, body, owner):
    raw = Msg(_client=None, subject=subject, data=json.dumps(body).encode())
    assert delivery.letter_owner(raw) == owner


def test_a_letter_of_no_document_is_filed_by_stage():
    assert (
        delivery.letter_owner(Msg(_client=None, subject="olympus.index.upsert", data=b"{")) is None
    )
