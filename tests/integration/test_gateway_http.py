"""The gateway's HTTP edge with FastAPI's TestClient, on a real nats-server with no workers: what
it refuses before anything reaches the bus, and how each error is translated (one table, two
shapes: ``{"detail"}`` and OpenAI's ``{"error"}`` on ``/v1``)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.settings import GatewaySettings
from olympus.delivery import prepare_streams
from olympus.keys import KeyStore
from olympus.settings import CommonSettings

pytestmark = pytest.mark.integration


@pytest.fixture
async def streams(nats_url, tmp_path) -> CommonSettings:
    common = CommonSettings(nats_url=nats_url, data_dir=tmp_path)
    await prepare_streams(common)
    return common


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
