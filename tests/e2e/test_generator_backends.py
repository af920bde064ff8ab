"""The generator backends other than the default, end to end. ``openai`` against a real
OpenAI-compatible server that is not Olympus: llama-cpp-python's server on the packaged GGUF
(streaming and citations through every client, cancel closing the upstream stream, a stalled
server, a server that is down); ``llamacpp``, the GGUF in the worker, answering through chat.

The server's own log is the witness for what happened upstream: it prints "Disconnected from
client" when a client closes a stream it is still writing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from httpx_sse import connect_sse

from olympus import natsserver
from tests.support.samples import ZEPHYR as DOC
from tests.support.stack import (
    OUTPUT,
    RunningStack,
    eventually,
    indexed,
    start_stack,
    wait_for_history,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
IDLE_S = 3  # the generator's patience with a silent model server, here


def _require_llama_cpp() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        if os.environ.get("CI"):
            pytest.fail("llama-cpp-python is missing: `make install` installs it")
        pytest.skip("llama-cpp-python is not installed (make install builds it)")


class Upstream:
    """llama-cpp-python's OpenAI-compatible server, in a process of its own."""

    def __init__(self, log: Path) -> None:
        from workers.generator.weights import packaged_gguf

        self.port = natsserver.free_port()
        self.log = log
        self.url = f"http://127.0.0.1:{self.port}/v1"
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(packaged_gguf()),
            "--model_alias",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            "2048",
            # by default a new request interrupts the one running: several answers must share
            "--interrupt_requests",
            "False",
        ]
        self.proc = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/models", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")

    def said(self, text: str) -> int:
        return self.log.read_text(errors="replace").count(text)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(20)


@pytest.fixture(scope="module")
def upstream() -> Upstream:
    _require_llama_cpp()
    OUTPUT.mkdir(exist_ok=True)
    server = Upstream(OUTPUT / "llama-cpp-server.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def olympus(upstream, tmp_path_factory) -> RunningStack:
    running = start_stack(
        "openai-backend",
        tmp_path_factory.mktemp("openai-backend"),
        env={
            "OLYMPUS_GENERATOR_BACKEND": "openai",
            "OLYMPUS_GENERATOR_OPENAI_BASE_URL": upstream.url,
            "OLYMPUS_GENERATOR_OPENAI_MODEL": "smollm2",
            "OLYMPUS_GENERATOR_OPENAI_IDLE_S": str(IDLE_S),
            "OLYMPUS_GENERATOR_MAX_NEW_TOKENS": "48",
            "OLYMPUS_GATEWAY_CHAT_PROBE_S": "0.3",
        },
    )
    yield running
    running.stack.stop()


@pytest.fixture(scope="module")
def doc(http) -> dict:
    return indexed(http, "zephyr.md", DOC)


def events_of(http, session: str, body: dict, stop_after: int | None = None):
    events = []
    with connect_sse(http, "POST", f"/mcp/{session}/chat", json=body) as source:
        assert source.response.status_code == 200, source.response.read()
        for sse in source.iter_sse():
            if sse.data:
                events.append((sse.event, json.loads(sse.data)))
            if stop_after is not None and len(events) >= stop_after:
                break
    return events


def resume(http, session: str, request_id: str):
    with connect_sse(http, "GET", f"/mcp/{session}/chat/{request_id}") as source:
        return [(s.event, json.loads(s.data)) for s in source.iter_sse() if s.data]


def test_the_server_writes_the_answer_olympus_streams_cites_and_remembers(http, doc):
    events = events_of(http, "upstream", {"input": "Who invented the Zephyr valve?"})
    kinds = [e[0] for e in events]
    assert kinds[0] == "sources", kinds
    assert kinds[-1] == "done", kinds
    assert "token" in kinds
    sources, done = events[0][1]["sources"], events[-1][1]
    assert sources
    assert sources[0]["doc_id"] == doc["doc_id"]
    assert done["text"] == "".join(e[1]["text"] for e in events if e[0] == "token")
    assert set(done["cited"]) <= {s["n"] for s in sources}
    assert done["usage"]["completion_tokens"] > 0
    assert done["finish_reason"] in ("stop", "length")
    assert wait_for_history(http, "upstream", 1)[-1]["answer"] == done["text"]


def test_the_openai_client_streams_through_olympus_from_the_server(olympus, doc):
    client = openai.OpenAI(base_url=f"{olympus.url}/v1", api_key=olympus.key)
    stream = client.chat.completions.create(
        model="olympus-chat",
        messages=[{"role": "user", "content": "Who invented the Zephyr valve?"}],
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.strip()


def test_cancelling_an_answer_closes_the_servers_stream(http, doc, upstream):
    before = upstream.said("Disconnected from client")
    body = {"input": "Write a very long story about the Zephyr valve.", "max_tokens": 400}
    head = events_of(http, "cancel", body, stop_after=3)
    request_id = head[0][1]["request_id"]
    assert http.post(f"/mcp/cancel/chat/{request_id}/cancel").status_code == 202
    events = resume(http, "cancel", request_id)
    assert events[-1][1]["finish_reason"] == "cancelled"
    assert events[-1][1]["usage"]["completion_tokens"] < 400
    # The server itself says its client went away: it stopped writing the answer.
    eventually(lambda: upstream.said("Disconnected from client") > before)


def test_a_stalled_server_ends_the_answer_with_an_error_naming_it(http, doc, upstream):
    body = {"input": "Write a very long story about the Zephyr valve.", "max_tokens": 400}
    with connect_sse(http, "POST", "/mcp/stall/chat", json=body) as source:
        events = []
        for sse in source.iter_sse():
            if not sse.data:
                continue
            events.append((sse.event, json.loads(sse.data)))
            if len(events) == 2:
                upstream.proc.send_signal(signal.SIGSTOP)  # alive, connected, silent
    upstream.proc.send_signal(signal.SIGCONT)
    kind, data = events[-1]
    assert kind == "error", events[-3:]
    message = data["error"]["message"]
    # The generator's own timeout, not the gateway's: the probe kept finding it at work.
    assert f"sent nothing for {IDLE_S}s" in message, message
    assert "model server" in message
    assert data["error"]["code"] == "unavailable"


def test_the_llamacpp_backend_answers_through_chat_and_cites(tmp_path_factory):
    _require_llama_cpp()
    running = start_stack(
        "llamacpp-backend",
        tmp_path_factory.mktemp("llamacpp-backend"),
        env={"OLYMPUS_GENERATOR_BACKEND": "llamacpp", "OLYMPUS_GENERATOR_MAX_NEW_TOKENS": "48"},
    )
    try:
        with running.client() as http:
            doc = indexed(http, "zephyr.md", DOC)
            events = events_of(http, "llama", {"input": "Who invented the Zephyr valve?"})
            kinds = [e[0] for e in events]
            assert kinds[0] == "sources", kinds
            assert kinds[-1] == "done", kinds
            assert events[0][1]["sources"][0]["doc_id"] == doc["doc_id"]
            done = events[-1][1]
            assert done["text"] == "".join(e[1]["text"] for e in events if e[0] == "token")
            assert done["text"].strip()
            assert set(done["cited"]) <= {s["n"] for s in events[0][1]["sources"]}
            assert done["usage"]["prompt_tokens"] > 0
            assert "llamacpp" in running.log.read_text(), "the generator did not say its engine"
    finally:
        running.stack.stop()


def test_a_server_that_is_down_is_an_error_event_and_a_503(http, olympus, doc, upstream):
    """Last on purpose: it stops the server."""
    upstream.stop()
    events = events_of(http, "down", {"input": "Who invented the Zephyr valve?"})
    assert [e[0] for e in events] == ["sources", "error"], events
    message = events[-1][1]["error"]["message"]
    # Refused at once and said so: not a timeout ("sent nothing for ...") waited out.
    assert "cannot be reached" in message, message
    assert upstream.url in message, message
    r = http.post(
        "/v1/chat/completions",
        json={"model": "olympus-chat", "messages": [{"role": "user", "content": "Hello?"}]},
    )
    assert r.status_code == 503, r.text
    assert "generator" in r.json()["error"]["message"], r.text
