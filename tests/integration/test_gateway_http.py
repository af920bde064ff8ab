"""The gateway's HTTP edge with FastAPI's TestClient, on a real nats-server with no workers: what
it refuses before anything reaches the bus, and how each error is translated (one table, two
shapes: ``{"detail"}`` and OpenAI's ``{"error"}`` on ``/v1``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.settings import GatewaySettings
from olympus.keys import KeyStore
from olympus.settings import CommonSettings

pytestmark = pytest.mark.integration


@pytest.fixture
def streams(nats_url, tmp_path) -> CommonSettings:
    return CommonSettings(nats_url=nats_url, data_dir=tmp_path)


@pytest.fixture
def client(streams, tmp_path):
    key = KeyStore(tmp_path / "api_keys.json").create("acme")
    settings = GatewaySettings(max_query_chars=100, request_timeout_s=1.0)
    with TestClient(create_app(streams, settings)) as http:
        http.headers["Authorization"] = f"Bearer {key}"
        yield http


def test_no_key_is_401_with_a_bearer_challenge(client):
    r = client.get("/rag/documents", headers={"Authorization": ""})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert "API key" in r.json()["detail"]


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/mcp/s/query", {"input": "x" * 101}, 413, "longer than the limit of 100"),
        ("/mcp/s/query", {"input": "   "}, 422, "input is empty"),
        ("/mcp/s/chat", {"input": "x" * 101}, 413, "longer than the limit of 100"),
        ("/mcp/s/query", {"input": "q", "tenant": "other"}, 422, "tenant"),
        ("/rag/add_document", {"filename": "a.exe", "content": "x"}, 415, "unsupported"),
        (
            "/rag/add_document",
            {"filename": "a.txt", "content": "%%%", "encoding": "base64"},
            400,
            "base64",
        ),
    ],
)
def test_bad_input_is_refused_at_the_edge(client, path, body, status, says):
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    assert says in str(r.json()["detail"])


def test_a_stage_that_is_down_is_a_503_naming_it(client):
    r = client.post("/mcp/s/query", json={"input": "where is the valve?", "mode": "dense"})
    assert r.status_code == 503
    assert r.json() == {"detail": "the embedder is not running (olympus.query.embed)"}
    r = client.post("/mcp/s/query", json={"input": "where is the valve?", "mode": "bm25"})
    assert r.status_code == 503
    assert "indexer" in r.json()["detail"]  # bm25 goes straight to H.A.D.E.S.


def test_a_resume_of_an_unknown_answer_is_404_not_503(client):
    r = client.get("/mcp/s/chat/0123abcd")
    assert r.status_code == 404
    assert r.json() == {"detail": "no answer to resume under that id"}


@pytest.mark.parametrize(
    ("body", "status", "kind", "code"),
    [
        ({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}, 404,
         "invalid_request_error", "model_not_found"),
        ({"model": "olympus-chat", "messages": []}, 400, "invalid_request_error", None),
        ({"model": "olympus-chat", "messages": [{"role": "user", "content": "hi"}],
          "max_tokens": 10**6}, 400, "invalid_request_error", "max_tokens_too_large"),
        ({"model": "olympus-chat", "messages": [{"role": "assistant", "content": "hi"}]}, 400,
         "invalid_request_error", None),
        ({"model": "olympus-chat", "messages": [{"role": "user", "content": "hi"}]}, 503,
         "server_error", None),
    ],
)  # fmt: skip
def test_v1_errors_come_in_openai_shape(client, body, status, kind, code):
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["type"] == kind
    assert error["code"] == code
    assert error["message"]


def test_v1_without_a_key_is_openai_shaped_too(client):
    r = client.get("/v1/models", headers={"Authorization": ""})
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"


def test_the_bus_contract_is_served_without_any_worker(client):
    doc = client.get("/asyncapi.json").json()
    assert doc["asyncapi"].startswith("3.")
    assert any(c["address"] == "olympus.ingest.>" for c in doc["channels"].values())


@pytest.fixture
def make_client(streams, tmp_path):
    """A gateway with the given settings and a key of each scope (``client.keys[scope]``)."""
    opened = []

    def make(**settings) -> TestClient:
        store = KeyStore(tmp_path / "api_keys.json")
        keys = {s: store.create("acme", s) for s in ("read", "write", "admin")}
        chosen = GatewaySettings(**{"request_timeout_s": 1.0, **settings})
        http = TestClient(create_app(streams, chosen))
        http.__enter__()
        opened.append(http)
        http.headers["Authorization"] = f"Bearer {keys['read']}"
        http.keys = keys
        return http

    yield make
    for http in opened:
        http.__exit__(None, None, None)


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_read_key_reads_but_cannot_change_anything(make_client):
    http = make_client()
    read = _as(http.keys["read"])
    doc = {"filename": "a.txt", "content": "hello"}
    for method, path, kwargs in [
        ("POST", "/rag/add_document", {"json": doc}),
        ("POST", "/rag/documents", {"files": {"files": ("a.txt", b"hello")}}),
        ("DELETE", "/rag/documents/some-doc", {}),
        ("POST", "/mcp/s/add_context", {"json": {"content": "x"}}),
        ("DELETE", "/mcp/s/clear_context", {}),
        ("GET", "/admin/keys", {}),
    ]:
        r = http.request(method, path, headers=read, **kwargs)
        assert r.status_code == 403, (path, r.text)
        assert "scope is 'read'" in r.json()["detail"]
    # ...while reading is only refused by the bus being empty here (503), not by the key.
    assert http.get("/rag/documents", headers=read).status_code == 503
    r = http.post("/v1/embeddings", headers=read, json={"model": "olympus-embed", "input": "x"})
    assert r.status_code == 503


def test_an_admin_key_manages_its_tenants_keys_and_no_others(make_client, tmp_path):
    http = make_client()
    admin = _as(http.keys["admin"])
    r = http.post(
        "/admin/keys", headers=admin, json={"name": "ci", "scope": "read", "expires": "1d"}
    )
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["key"].startswith("oly_")
    assert (made["tenant"], made["scope"]) == ("acme", "read")
    assert made["expires_at"] == pytest.approx(made["created_at"] + 86400)
    listed = http.get("/admin/keys", headers=admin).json()["keys"]
    assert "ci" in {k["name"] for k in listed}
    assert all("key" not in k and "hash" not in k for k in listed)
    assert http.get("/rag/documents", headers=_as(made["key"])).status_code == 503  # accepted
    other = KeyStore(tmp_path / "api_keys.json").create("globex", "read", "theirs")
    assert http.delete("/admin/keys/theirs", headers=admin).status_code == 404
    assert http.get("/v1/models", headers=_as(other)).status_code == 200
    assert http.delete("/admin/keys/ci", headers=admin).json()["status"] == "revoked"
    r = http.get("/rag/documents", headers=_as(made["key"]))
    assert r.status_code == 401  # at once: no restart, no reload by hand
    r = http.post("/admin/keys", headers=admin, json={"name": "ci2", "scope": "root"})
    assert r.status_code == 422


def test_requests_over_a_keys_rate_limit_get_429_with_retry_after(make_client):
    http = make_client(rate_limit="3/minute")
    for _ in range(3):
        assert http.get("/v1/models").status_code == 200
    r = http.get("/v1/models")
    assert r.status_code == 429
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    r = http.get("/rag/documents")
    assert r.status_code == 429
    assert "slow down" in r.json()["detail"]
    # Another key of the same tenant has a window of its own.
    assert http.get("/v1/models", headers=_as(http.keys["write"])).status_code == 200


def test_failed_authentications_are_throttled_per_address(make_client):
    http = make_client(auth_failure_limit="5/minute")
    for _ in range(5):
        assert http.get("/v1/models", headers=_as("oly_guess")).status_code == 401
    r = http.get("/v1/models", headers=_as("oly_guess"))
    assert r.status_code == 429
    assert "failed authentications" in r.json()["error"]["message"]
    # Even the right key waits: a guesser cannot tell a hit from a miss any more.
    assert http.get("/v1/models").status_code == 429


def test_each_route_has_a_body_limit_of_its_own(make_client):
    http = make_client(max_request_bytes=64 * 1024, max_upload_bytes=512 * 1024)
    write = _as(http.keys["write"])
    r = http.post("/mcp/s/query", json={"input": "x" * 100_000})
    assert r.status_code == 413
    assert "limit of 65536 bytes" in r.json()["detail"]
    r = http.post("/v1/embeddings", json={"model": "olympus-embed", "input": ["x" * 8000] * 20})
    assert r.status_code == 413
    assert r.json()["error"]["type"] == "invalid_request_error"
    # An upload of 300 KB is over the JSON routes' limit and within the upload limit: the
    # gateway takes it (and answers 503 only because no stream... here the bus has streams).
    r = http.post("/rag/documents", headers=write, files={"files": ("a.txt", b"y" * 300_000)})
    assert r.status_code == 202, r.text


def test_a_key_streams_a_bounded_number_of_answers_at_once(make_client, nats_url):
    """A slot is held for as long as a response lasts. Here the first stage takes a question
    and never answers (a stalled embedder), so each request holds its slot for the 2 s
    timeout: two at once exceed a limit of one."""
    import asyncio
    import threading

    import nats

    from schemas import subjects

    http = make_client(max_streams_per_key=1, request_timeout_s=2.0)
    taken = threading.Event()
    done = threading.Event()

    def stalled_embedder() -> None:
        async def ignore(msg) -> None:
            pass

        async def run() -> None:
            nc = await nats.connect(nats_url)
            await nc.subscribe(subjects.QUERY_EMBED, cb=ignore)
            await nc.flush()
            taken.set()
            await asyncio.to_thread(done.wait)
            await nc.close()

        asyncio.run(run())

    embedder = threading.Thread(target=stalled_embedder)
    embedder.start()
    taken.wait(10)
    results: list[int] = []

    def ask() -> None:
        r = http.post("/mcp/s/chat", json={"input": "hello?", "stream": False})
        results.append(r.status_code)

    _middleware(http).renew_s = 0.3  # a long answer's slot is renewed (every 200 s in use)
    first = threading.Thread(target=ask)
    first.start()
    while not _slots_taken(nats_url):  # until the first holds its slot
        threading.Event().wait(0.01)
    held, deadline = _slot_stream(nats_url), time.monotonic() + 10
    while _slot_stream(nats_url).first_seq == held.first_seq:  # renewed: a new slot...
        assert time.monotonic() < deadline, "the slot was never renewed"
        threading.Event().wait(0.05)
    assert _slot_stream(nats_url).messages == 1  # ...in place of the old one
    # The second, while the first waits, through another gateway: the limit is every replica's.
    other = make_client(max_streams_per_key=1, request_timeout_s=2.0)
    r = other.post(
        "/mcp/s/chat", json={"input": "hello?", "stream": False}, headers=dict(http.headers)
    )
    results.append(r.status_code)
    first.join()
    done.set()
    embedder.join()
    assert results == [429, 503]
    deadline = time.monotonic() + 10  # each answer gives its slot back once its last byte went
    while _slots_taken(nats_url):
        assert time.monotonic() < deadline, "a slot was never given back"
        threading.Event().wait(0.05)


def _slot_stream(nats_url: str):
    """The OLYMPUS_SLOTS stream's state: the answers streaming now, as the gateways count them."""
    import asyncio

    import nats

    from schemas import subjects

    async def state():
        nc = await nats.connect(nats_url)
        info = await nc.jetstream().stream_info(subjects.SLOTS_STREAM.name)
        await nc.close()
        return info.state

    return asyncio.run(state())


def _slots_taken(nats_url: str) -> int:
    return _slot_stream(nats_url).messages


def _middleware(http):
    from gateway.limits import StreamSlots

    app = http.app.middleware_stack
    while app is not None and not isinstance(app, StreamSlots):
        app = getattr(app, "app", None)
    assert app is not None
    return app


@pytest.mark.parametrize(
    ("filename", "content", "says"),
    [
        ("report.pdf", Path("/bin/ls").read_bytes()[:4096], "not a PDF (it looks like: ELF"),
        ("notes.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 64, "not text"),
        ("letter.docx", b"PK\x03\x04 a zip in name only", "not a DOCX document"),
    ],
)
def test_the_type_is_decided_by_the_content_as_well_as_the_name(
    make_client, filename, content, says
):
    http = make_client()
    write = _as(http.keys["write"])
    r = http.post("/rag/documents", headers=write, files={"files": (filename, content)})
    assert r.status_code == 415, r.text
    assert says in r.json()["detail"]


def test_filenames_lose_their_path_and_control_characters(make_client):
    http = make_client()
    write = _as(http.keys["write"])
    r = http.post(
        "/rag/documents", headers=write, files={"files": ("../../etc/passwd.txt", b"words")}
    )
    assert r.status_code == 202, r.text
    assert r.json()["documents"][0]["filename"] == "passwd.txt"
    r = http.post(
        "/rag/add_document",
        headers=write,
        json={"filename": "..\\notes\u0007\u202e\u001b.txt ", "content": "words"},
    )
    assert r.status_code == 202, r.text
    assert r.json()["filename"] == "notes.txt"
    r = http.post(
        "/rag/add_document", headers=write, json={"filename": "C:\\temp\\..", "content": "x"}
    )
    assert r.status_code == 400
    assert "not a usable filename" in r.json()["detail"]


def test_an_upload_carries_a_bounded_number_of_files(make_client):
    http = make_client(max_files_per_request=3)
    files = [("files", (f"f{i}.txt", b"words")) for i in range(4)]
    r = http.post("/rag/documents", headers=_as(http.keys["write"]), files=files)
    assert r.status_code == 413
    assert "4 files in one request, more than the limit of 3" in r.json()["detail"]
