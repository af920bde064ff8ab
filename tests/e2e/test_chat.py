"""Chat end to end: the real stack with the real packaged model, over SSE, JSON, WebSocket and
the official ``openai`` client. Assertions are on the events, citations and history — never on
the wording of a 135M model's answers."""

from __future__ import annotations

import json
import signal
import time

import openai
import pytest
from httpx_sse import connect_sse
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from olympus.client import Gateway
from tests.support.samples import ZEPHYR as DOC
from tests.support.stack import RunningStack, indexed, start_stack, wait_for_history

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
GRACE_S = 2
PING_S = 0.2


@pytest.fixture(scope="module")
def olympus(tmp_path_factory) -> RunningStack:
    running = start_stack(
        "chat",
        tmp_path_factory.mktemp("chat"),
        env={
            "OLYMPUS_GENERATOR_MAX_NEW_TOKENS": "48",
            "OLYMPUS_GENERATOR_CANCEL_GRACE_S": str(GRACE_S),
            # Probed often, so every answer here also shows a live generator is never cut off.
            "OLYMPUS_GATEWAY_CHAT_PROBE_S": "0.3",
            # Keep-alive comments many times per answer: every client here must skip them.
            "OLYMPUS_GATEWAY_SSE_PING_S": str(PING_S),
        },
    )
    yield running
    running.stack.stop()


@pytest.fixture(scope="module")
def doc(http) -> dict:
    return indexed(http, "zephyr.md", DOC)


def stream(http, path: str, body: dict, headers=None, stop_after: int | None = None):
    """The SSE events of one chat as (event, id, data); closes early after ``stop_after``."""
    events = []
    with connect_sse(http, "POST", path, json=body, headers=headers or {}) as source:
        assert source.response.status_code == 200, source.response.read()
        for sse in source.iter_sse():
            if not sse.data:  # after a keep-alive comment httpx-sse yields an empty event
                continue
            events.append((sse.event, sse.id, json.loads(sse.data)))
            if stop_after is not None and len(events) >= stop_after:
                break
    return events


def resume(http, session: str, request_id: str, last_event_id: str | None = None):
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    with connect_sse(http, "GET", f"/mcp/{session}/chat/{request_id}", headers=headers) as src:
        assert src.response.status_code == 200, src.response.read()
        return [(s.event, s.id, json.loads(s.data)) for s in src.iter_sse() if s.data]


def test_streamed_answer_cites_real_chunks_and_is_remembered(http, doc):
    events = stream(http, "/mcp/zephyr/chat", {"input": "Who invented the Zephyr valve?"})
    kinds = [e[0] for e in events]
    assert kinds[0] == "sources"
    assert kinds[-1] == "done"
    assert set(kinds[1:-1]) == {"token"}, kinds
    request_id = events[0][2]["request_id"]
    assert [e[1] for e in events] == [f"{request_id}:{i}" for i in range(len(events))]
    sources = events[0][2]["sources"]
    assert sources, "the indexed document was not retrieved"
    assert sources[0]["n"] == 1
    assert sources[0]["doc_id"] == doc["doc_id"]
    assert sources[0]["filename"] == "zephyr.md"
    assert sources[0]["text"] in DOC
    done = events[-1][2]
    assert done["text"] == "".join(e[2]["text"] for e in events[1:-1])
    assert set(done["cited"]) <= {s["n"] for s in sources}
    assert done["usage"]["completion_tokens"] >= len(events) - 2
    assert done["usage"]["prompt_tokens"] > 0
    assert {"retrieval_ms", "queue_and_prefill_ms", "tokens_per_s"} <= set(done["timings"])
    turns = wait_for_history(http, "zephyr", 1)
    assert turns[0]["request_id"] == request_id
    assert turns[0]["question"] == "Who invented the Zephyr valve?"
    assert turns[0]["answer"] == done["text"]
    assert [s["n"] for s in turns[0]["sources"]] == done["cited"]


def test_the_next_question_sees_the_conversation_and_clearing_forgets_it(http, doc):
    first = http.post(
        "/mcp/memory/chat", json={"input": "What does the Zephyr valve do?", "stream": False}
    )
    assert first.status_code == 200, first.text
    wait_for_history(http, "memory", 1)
    second = http.post("/mcp/memory/chat", json={"input": "Who invented it?", "stream": False})
    assert second.status_code == 200, second.text
    # The earlier turn went into the prompt: the second prompt is longer than the first.
    assert second.json()["usage"]["prompt_tokens"] > first.json()["usage"]["prompt_tokens"]
    assert len(wait_for_history(http, "memory", 2)) == 2
    assert http.delete("/mcp/memory/clear_context").status_code == 200
    assert http.get("/mcp/memory/history").json()["turns"] == []


def test_nothing_relevant_says_no_sources_were_used(http, doc):
    r = http.post(
        "/mcp/empty/chat", json={"input": "anything", "collection": "nowhere", "stream": False}
    )
    assert r.status_code == 200, r.text
    assert r.json()["sources"] == []
    assert r.json()["cited"] == []


def test_a_dropped_client_resumes_the_same_answer(http, doc):
    body = {"input": "Write a long story about the Zephyr valve.", "max_tokens": 40}
    head = stream(http, "/mcp/resume/chat", body, stop_after=3)  # sources + 2 tokens, then drop
    request_id = head[0][2]["request_id"]
    rest = stream(http, "/mcp/resume/chat", body, headers={"Last-Event-ID": head[-1][1]})
    assert rest[0][1] == f"{request_id}:3", "resumed from the wrong place, or a new answer"
    assert rest[-1][0] == "done"
    assert rest[-1][2]["finish_reason"] in ("stop", "length"), "the answer was cancelled"
    text = "".join(e[2]["text"] for e in head[1:] + rest[:-1])
    assert text == rest[-1][2]["text"]


def test_a_client_that_leaves_for_good_cancels_the_generation(http, doc):
    body = {"input": "Write a very long story about the Zephyr valve.", "max_tokens": 400}
    head = stream(http, "/mcp/leave/chat", body, stop_after=2)
    request_id = head[0][2]["request_id"]
    time.sleep(GRACE_S + 2)
    events = resume(http, "leave", request_id)  # the stored events, to see how it ended
    assert events[-1][0] == "done"
    assert events[-1][2]["finish_reason"] == "cancelled"
    assert events[-1][2]["usage"]["completion_tokens"] < 400


def test_the_stop_button_cancels(http, doc):
    body = {"input": "Write a very long story about the Zephyr valve.", "max_tokens": 400}
    head = stream(http, "/mcp/stop/chat", body, stop_after=2)
    request_id = head[0][2]["request_id"]
    assert http.post(f"/mcp/stop/chat/{request_id}/cancel").status_code == 202
    events = resume(http, "stop", request_id, last_event_id=head[-1][1])
    assert events[-1][2]["finish_reason"] == "cancelled"


def test_resume_is_refused_for_unknown_or_foreign_answers(http, olympus, doc):
    r = http.post("/mcp/x/chat", json={"input": "q"}, headers={"Last-Event-ID": "nope"})
    assert r.status_code == 422  # the header's pattern, in the OpenAPI document
    assert r.json()["detail"][0]["loc"] == ["header", "Last-Event-ID"]
    r = http.post("/mcp/x/chat", json={"input": "q"}, headers={"Last-Event-ID": "abc123:4"})
    assert r.status_code == 404
    answer = http.post("/mcp/x/chat", json={"input": "Zephyr?", "stream": False}).json()
    from olympus.keys import KeyStore

    other = KeyStore(olympus.data_dir / "api_keys.json").create("another-tenant")
    with olympus.client(other) as intruder:
        r = intruder.get(f"/mcp/x/chat/{answer['request_id']}")
        assert r.status_code == 404
        r = intruder.post(f"/mcp/x/chat/{answer['request_id']}/cancel")
        assert r.status_code == 404


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"input": ""}, 422),
        ({"input": "   "}, 422),
        ({"input": "x" * 5000}, 413),
        ({"input": "q", "max_tokens": 100_000}, 422),
        ({"input": "q", "top_k": 0}, 422),
        ({"input": "q", "unknown": 1}, 422),
    ],
)
def test_bad_chat_requests_get_a_clear_4xx(http, body, status):
    r = http.post("/mcp/bad/chat", json=body)
    assert r.status_code == status, r.text
    assert "detail" in r.json()


def test_openai_client_streams_and_answers(olympus, doc):
    client = openai.OpenAI(base_url=f"{olympus.url}/v1", api_key=olympus.key)
    assert {m.id for m in client.models.list()} == {"olympus-rag", "olympus-chat", "olympus-embed"}
    completion = client.chat.completions.create(
        model="olympus-rag",
        messages=[{"role": "user", "content": "Who invented the Zephyr valve?"}],
        max_tokens=32,
    )
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens > 0
    sources = completion.model_extra["olympus"]["sources"]
    assert sources[0]["doc_id"] == doc["doc_id"]
    chunks = list(
        client.chat.completions.create(
            model="olympus-chat",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Say hello."},
            ],
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage.completion_tokens > 0
    embedded = client.embeddings.create(model="olympus-embed", input=["a", "b c"])
    assert [len(d.embedding) for d in embedded.data] == [384, 384]


def test_openai_errors_come_in_openai_shape(olympus):
    client = openai.OpenAI(base_url=f"{olympus.url}/v1", api_key=olympus.key, max_retries=0)
    message = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=message)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="olympus-rag", messages=message, max_tokens=10**6)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="olympus-rag", messages=[])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{olympus.url}/v1", api_key="wrong").models.list()


def test_websocket_chat_streams_and_reports_bad_input(olympus, doc):
    url = olympus.url.replace("http", "ws") + "/ws/chat/socket"
    with ws_connect(f"{url}?api_key={olympus.key}") as socket:
        socket.send(json.dumps({"input": ""}))
        error = json.loads(socket.recv(timeout=30))
        assert error["event"] == "error"
        assert error["data"]["status"] == 422
        socket.send(json.dumps({"input": "Where was the Zephyr valve invented?"}))
        events = []
        while not events or events[-1]["event"] not in ("done", "error"):
            events.append(json.loads(socket.recv(timeout=60)))
        assert events[0]["event"] == "sources"
        assert events[-1]["event"] == "done"
        assert events[-1]["data"]["text"] == "".join(
            e["data"]["text"] for e in events if e["event"] == "token"
        )
    with pytest.raises(InvalidStatus, match="403"):  # refused at the handshake
        ws_connect(f"{url}?api_key=wrong")


def test_athena_reads_an_answer_slower_than_the_keep_alive(olympus, doc):
    """Issue 10: every answer slower than the ping interval crashed Athena's chat page."""
    with olympus.client() as http:
        raw = http.post(
            "/mcp/athena-ping/chat", json={"input": "What does the Zephyr valve do?"}
        ).text
    comments = raw.count(": ping")
    assert comments >= 3, f"the answer came too fast to show anything ({comments} pings)"
    gateway = Gateway(olympus.url, olympus.key)
    try:
        events = list(gateway.chat("athena-ping", "And when does it open?"))
    finally:
        gateway.close()
    kinds = [e.event for e in events]
    assert kinds[0] == "sources"
    assert kinds[-1] == "done"
    assert set(kinds) == {"sources", "token", "done"}


def test_a_generator_killed_mid_answer_ends_the_stream_with_an_error(http, olympus, doc):
    """Last on purpose: it kills the generator (the supervisor restarts it)."""
    generator = next(c for c in olympus.stack.supervisor._children if c.name == "generator")
    body = {"input": "Write a very long story about the Zephyr valve.", "max_tokens": 400}
    with connect_sse(http, "POST", "/mcp/killed/chat", json=body) as source:
        events = []
        for sse in source.iter_sse():
            if not sse.data:  # a keep-alive
                continue
            events.append(sse)
            if len(events) == 2:
                generator.proc.send_signal(signal.SIGKILL)
                generator.proc.wait()
                down = http.post("/mcp/killed/chat", json={"input": "still there?"})
        assert events[-1].event == "error"
        # The probe found nobody working on the answer: not the 30 s idle timeout ("sent
        # nothing for 30s"), which a dead generator would otherwise wait out.
        message = json.loads(events[-1].data)["error"]["message"]
        assert "the generator working on this answer stopped" in message, message
    assert down.status_code == 503, down.text
    assert "generator" in down.json()["detail"]
