"""Relations between documents, end to end: declared at ingest and over the API, found in the
text, similar by their vectors; the graph and related documents; graph-expanded retrieval;
tenants kept apart. The real stack, as `olympus up` starts it."""

from __future__ import annotations

import asyncio
import hashlib
import json

import httpx
import nats
import pytest

from olympus.keys import KeyStore
from tests.support.stack import RunningStack, eventually, producer_login, start_stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
LINK_CAP = 5


@pytest.fixture(scope="module")
def olympus(tmp_path_factory) -> RunningStack:
    running = start_stack(
        "relations",
        tmp_path_factory.mktemp("olympus"),
        env={"OLYMPUS_EMBEDDER_MAX_LINKS_PER_DOCUMENT": str(LINK_CAP)},
    )
    yield running
    running.stack.stop()


def add(http: httpx.Client, filename: str, content: str, **extra) -> str:
    r = http.post("/rag/add_document", json={"filename": filename, "content": content, **extra})
    assert r.status_code == 202, r.text
    doc_id = r.json()["doc_id"]
    assert wait_for(http, doc_id, version=r.json()["version"])["status"] == "indexed"
    return doc_id


def outgoing(http: httpx.Client, doc_id: str) -> dict[str, str | None]:
    """kind:what-it-names -> the target's doc_id (None while it waits)."""
    r = http.get("/rag/relations", params={"doc_id": doc_id})
    assert r.status_code == 200, r.text
    return {
        f"{i['kind']}:{i['target_ref'] or i['target']}": i["target"]
        for i in r.json()["items"]
        if i["source"] == doc_id and i["origin"] != "similar"
    }


@pytest.fixture(scope="module")
def gods(http) -> dict[str, str]:
    """zeus.md links to hera.md (sent after it), to athena by URL, and mentions poseidon.txt
    (never sent); notes.txt declares that it cites zeus."""
    zeus = add(
        http,
        "zeus.md",
        "# Zeus\n\nZeus rules Mount Olympus and wields the thunderbolt. His wife is "
        "[Hera](../gods/hera.md#queen); his daughter is described at "
        "https://example.org/athena. His brother is in poseidon.txt.",
    )
    athena = add(
        http,
        "athena.html",
        "<html><body><h1>Athena</h1><p>Athena, goddess of wisdom, sprang from the head of "
        "<a href='zeus.md'>Zeus</a>.</p></body></html>",
        metadata={"url": "https://example.org/athena"},
    )
    hera = add(http, "hera.md", "# Hera\n\nHera is the queen of the gods and protects marriage.")
    notes = add(
        http,
        "notes.txt",
        "Notes on the thunderbolt of the king of the gods.",
        relations=[{"kind": "cites", "target": zeus}],
    )
    return {"zeus": zeus, "athena": athena, "hera": hera, "notes": notes}


def test_relations_come_from_links_references_declarations_and_similarity(http, gods):
    zeus, athena, hera = gods["zeus"], gods["athena"], gods["hera"]
    assert outgoing(http, zeus) == {
        "links_to:hera.md": hera,  # hera arrived after zeus: the link waited for it
        "links_to:https://example.org/athena": athena,  # by the document's url metadata
        "links_to:poseidon.txt": None,  # still waiting
    }
    assert outgoing(http, athena) == {"links_to:zeus.md": zeus}  # an HTML href
    assert outgoing(http, gods["notes"]) == {f"cites:{zeus}": zeus}

    def similar() -> list[dict]:
        items = http.get("/rag/relations", params={"doc_id": zeus}).json()["items"]
        return [i for i in items if i["origin"] == "similar" and i["source"] == zeus]

    eventually(lambda: len(similar()) > 0, "zeus was never related to a similar document")
    assert all(i["kind"] == "similar_to" and 0 < i["weight"] <= 0.5 for i in similar())


def test_the_graph_around_a_document_and_its_related_documents(http, gods):
    zeus, athena, hera, notes = gods["zeus"], gods["athena"], gods["hera"], gods["notes"]
    out = http.get(f"/rag/documents/{zeus}/graph", params={"direction": "out", "kind": "links_to"})
    assert out.status_code == 200, out.text
    assert {n["doc_id"]: n["depth"] for n in out.json()["nodes"]} == {zeus: 0, hera: 1, athena: 1}
    into = http.get(
        f"/rag/documents/{hera}/graph",
        params={"direction": "in", "depth": 2, "kind": ["links_to", "cites"]},
    ).json()
    # hera <- zeus <- (athena, notes): two hops in; the cycle zeus <-> athena ends
    assert {n["doc_id"]: n["depth"] for n in into["nodes"]} == {
        hera: 0,
        zeus: 1,
        athena: 2,
        notes: 2,
    }
    assert all(e["target"] in {n["doc_id"] for n in into["nodes"]} for e in into["edges"])

    related = http.get(f"/rag/documents/{zeus}/related").json()["items"]
    ranked = [item["document"]["doc_id"] for item in related]
    # notes cites zeus (1.0 declared) and athena links both ways (0.5 + 0.5): both above hera
    assert set(ranked[:2]) == {notes, athena}
    assert hera in ranked
    assert all(item["relations"] for item in related)
    assert related == sorted(related, key=lambda item: -item["score"])


def test_relations_over_the_api_and_their_bad_input(http, gods):
    zeus, hera = gods["zeus"], gods["hera"]
    made = http.post("/rag/relations", json={"source": hera, "target": zeus, "kind": "part_of"})
    assert made.status_code == 201, made.text
    again = http.post("/rag/relations", json={"source": hera, "target": zeus, "kind": "part_of"})
    assert again.json()["relation_id"] == made.json()["relation_id"]
    assert outgoing(http, hera)[f"part_of:{zeus}"] == zeus
    bad = [
        ({"source": hera, "target": "nowhere", "kind": "cites"}, 404),
        ({"source": hera, "target": hera, "kind": "cites"}, 422),
        ({"source": hera, "target": zeus, "kind": "Not A Kind"}, 422),
        ({"source": hera, "target": zeus, "kind": "cites", "weight": 2}, 422),
        ({"source": hera, "target": zeus}, 422),
    ]
    for body, expected in bad:
        r = http.post("/rag/relations", json=body)
        assert r.status_code == expected, (body, r.text)
        assert "detail" in r.json()
    assert http.get(f"/rag/documents/{zeus}/graph", params={"depth": 4}).status_code == 422
    assert http.get(f"/rag/documents/{zeus}/graph", params={"direction": "up"}).status_code == 422
    assert http.get("/rag/documents/nowhere/graph").status_code == 404
    assert http.get("/rag/documents/nowhere/related").status_code == 404
    assert http.get("/rag/relations", params={"doc_id": "nowhere"}).status_code == 404
    # declared with a document: the target must exist, and must not be the document itself
    r = http.post(
        "/rag/add_document",
        json={"filename": "x.txt", "content": "x", "relations": [{"kind": "cites",
                                                                 "target": "nowhere"}]},
    )  # fmt: skip
    assert r.status_code == 404, r.text
    r = http.post(
        "/rag/documents",
        files=[("files", ("y.txt", b"y", "text/plain"))],
        data={"relations": "[{not json"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][:2] == ["body", "relations"]

    removed = http.delete(f"/rag/relations/{made.json()['relation_id']}")
    assert removed.status_code == 204
    assert http.delete(f"/rag/relations/{made.json()['relation_id']}").status_code == 404
    assert f"part_of:{zeus}" not in outgoing(http, hera)


def test_an_upload_declares_relations_for_every_file(http, gods):
    r = http.post(
        "/rag/documents",
        files=[
            ("files", ("ode-1.txt", b"An ode to the queen of the gods.", "text/plain")),
            ("files", ("ode-2.txt", b"A second ode to the queen of the gods.", "text/plain")),
        ],
        data={"relations": json.dumps([{"kind": "mentions", "target": gods["hera"]}])},
    )
    assert r.status_code == 202, r.text
    for accepted in r.json()["documents"]:
        assert wait_for(http, accepted["doc_id"])["status"] == "indexed"
        assert outgoing(http, accepted["doc_id"]) == {f"mentions:{gods['hera']}": gods["hera"]}


def test_sending_a_document_again_replaces_its_found_relations_and_keeps_declared_ones(http, gods):
    zeus, hera = gods["zeus"], gods["hera"]
    kept = http.post("/rag/relations", json={"source": zeus, "target": hera, "kind": "mentions"})
    assert kept.status_code == 201
    add(http, "zeus.md", "# Zeus\n\nZeus, king of the gods, now links only to poseidon.txt.")
    assert outgoing(http, zeus) == {
        f"mentions:{hera}": hera,
        "links_to:poseidon.txt": None,
    }


def test_a_document_with_many_links_keeps_the_cap_and_counts_the_rest(http):
    links = " ".join(f"[{i}](doc{i}.md)" for i in range(LINK_CAP + 7))
    doc_id = add(http, "index.md", f"# Index\n\n{links}")
    assert len(outgoing(http, doc_id)) == LINK_CAP
    assert http.get(f"/rag/documents/{doc_id}").json()["links_dropped"] == 7


def test_retrieval_expands_to_neighbours_and_to_related_documents(http, gods):
    # A document long enough for several chunks: the middle one is found, its neighbours added
    sections = [
        f"## Labour {i}\n\n" + f"Heracles performed labour number {i} for Eurystheus. " * 60
        for i in range(1, 4)
    ]
    sections[1] = sections[1].replace("labour number 2", "the capture of the Cretan bull")
    labours = add(http, "labours.md", "# The labours\n\n" + "\n\n".join(sections))
    chunks = http.get(f"/rag/documents/{labours}/chunks").json()["chunks"]
    assert len(chunks) >= 3, "the document should span several chunks"

    question = {"input": "capture of the Cretan bull", "top_k": 1, "doc_ids": [labours]}
    plain = http.post("/mcp/rel/query", json=question).json()["retrieved_documents"]
    assert [d["found_by"] for d in plain] == ["search"]
    wide = http.post("/mcp/rel/query", json={**question, "expand": "neighbours"}).json()
    found = wide["retrieved_documents"]
    hit = next(d for d in found if d["found_by"] == "search")
    beside = [d["position"] for d in found if d["found_by"] == "neighbour"]
    assert beside
    assert all(abs(p - hit["position"]) == 1 for p in beside)
    assert [d["position"] for d in found] == sorted(d["position"] for d in found)

    # graph: passages of the documents related to the top hits join them, after them
    ask = {"input": "notes on the thunderbolt of the king", "top_k": 2, "mode": "dense"}
    searched = http.post("/mcp/rel/query", json=ask).json()["retrieved_documents"]
    passages = http.post("/mcp/rel/query", json={**ask, "expand": "graph"}).json()[
        "retrieved_documents"
    ]
    assert [p["chunk_id"] for p in passages[:2]] == [p["chunk_id"] for p in searched]
    added = passages[2:]
    assert len(added) == 1
    assert added[0]["found_by"] == "graph"
    neighbours = {
        item["document"]["doc_id"]
        for top in {p["doc_id"] for p in searched}
        for item in http.get(f"/rag/documents/{top}/related").json()["items"]
    }
    assert added[0]["doc_id"] in neighbours


def test_a_producer_declares_relations_that_wait_for_their_document(olympus, http):
    login = producer_login(olympus, "default", "relations")

    async def publish(doc: dict) -> None:
        nc = await nats.connect(**login)
        js = nc.jetstream()
        body = json.dumps(doc).encode()
        msg_id = f"{doc['doc_id']}:upsert:{hashlib.sha256(body).hexdigest()[:32]}"
        await js.publish("olympus.ingest.default.feeds", body, headers={"Nats-Msg-Id": msg_id})
        await nc.close()

    asyncio.run(publish({"tenant": "default", "collection": "feeds", "doc_id": "reply-1",
                         "filename": "reply.txt", "content": "A reply to the first post.",
                         "relations": [{"kind": "replies_to", "target": "post-1"}]}))  # fmt: skip
    wait_for(http, "reply-1")
    assert outgoing(http, "reply-1") == {"replies_to:post-1": None}
    asyncio.run(publish({"tenant": "default", "collection": "feeds", "doc_id": "post-1",
                         "filename": "post.txt", "content": "The first post."}))  # fmt: skip
    wait_for(http, "post-1")
    assert outgoing(http, "reply-1") == {"replies_to:post-1": "post-1"}


def test_tenants_never_relate_or_see_each_others_documents(olympus, http, gods):
    zeus = gods["zeus"]
    other = KeyStore(olympus.data_dir / "api_keys.json").create("olympians")
    with olympus.client(other) as them:
        # their own poseidon.txt: zeus's waiting link (another tenant's) never points at it
        r = them.post("/rag/add_document", json={"filename": "poseidon.txt", "content": "sea"})
        assert r.status_code == 202
        theirs = wait_for(them, r.json()["doc_id"])
        assert theirs["status"] == "indexed"
        for path in (f"/rag/documents/{zeus}/graph", f"/rag/documents/{zeus}/related"):
            assert them.get(path).status_code == 404
        assert them.get("/rag/relations", params={"doc_id": zeus}).status_code == 404
        r = them.post(
            "/rag/relations", json={"source": theirs["doc_id"], "target": zeus, "kind": "cites"}
        )
        assert r.status_code == 404
        mine = http.get("/rag/relations", params={"doc_id": zeus}).json()["items"]
        assert all(theirs["doc_id"] not in (i["source"], i["target"]) for i in mine)
    assert outgoing(http, zeus)["links_to:poseidon.txt"] is None


def test_deleting_a_document_removes_every_relation_touching_it(http, gods):
    zeus, hera = gods["zeus"], gods["hera"]
    assert http.delete(f"/rag/documents/{hera}").status_code == 202
    eventually(lambda: http.get(f"/rag/documents/{hera}").status_code == 404)
    items = http.get("/rag/relations", params={"doc_id": zeus}).json()["items"]
    assert all(hera not in (i["source"], i["target"]) for i in items)
    assert http.get("/rag/relations", params={"doc_id": hera}).status_code == 404
