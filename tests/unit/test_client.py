"""Athena's gateway client reading event streams as a server sends them: keep-alive comments,
events without data and kinds it does not know are skipped, never a traceback (issue 10)."""

from __future__ import annotations

import httpx
import pytest

from olympus.client import Gateway, GatewayError

pytestmark = pytest.mark.unit

STREAM = (
    ": ping\n\n"
    'event: sources\nid: r:0\ndata: {"request_id": "r", "seq": 0, "sources": []}\n\n'
    ": ping\n\n"  # httpx-sse then yields an empty event that keeps the last id
    'event: token\nid: r:1\ndata: {"request_id": "r", "seq": 1, "text": "Hel"}\n\n'
    ": ping\n\n"
    'event: token\nid: r:2\ndata: {"request_id": "r", "seq": 2, "text": "lo"}\n\n'
    'event: newfangled\nid: r:3\ndata: {"anything": true}\n\n'
    "event: token\nid: r:4\ndata: \n\n"
    'event: done\nid: r:5\ndata: {"request_id": "r", "seq": 5, "cited": [], "text": "Hello"}\n\n'
)


def _gateway(body: str, status: int = 200) -> Gateway:
    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream", "x-request-id": "r"}
        return httpx.Response(status, text=body, headers=headers)

    gateway = Gateway("http://gateway.test", "key")
    gateway.http = httpx.Client(base_url=gateway.url, transport=httpx.MockTransport(answer))
    return gateway


def test_comments_empty_and_unknown_events_are_skipped():
    events = list(_gateway(STREAM).chat("s", "hello?"))
    assert [e.event for e in events] == ["sources", "token", "token", "done"]
    assert "".join(e.data["text"] for e in events if e.event == "token") == "Hello"
    assert events[0].request_id == "r"


def test_an_unreadable_event_is_a_readable_error():
    broken = 'event: token\ndata: {"text": \n\n'
    with pytest.raises(GatewayError, match="unreadable event"):
        list(_gateway(broken).chat("s", "hello?"))


def test_progress_streams_skip_pings_too():
    body = (
        ": ping\n\n"
        'event: status\nid: 1-queued\ndata: {"doc_id": "d", "status": "queued"}\n\n'
        ": ping\n\n"
        'event: status\nid: 1-indexed\ndata: {"doc_id": "d", "status": "indexed"}\n\n'
    )
    assert [d.status for d in _gateway(body).follow("d")] == ["queued", "indexed"]


def test_the_request_id_is_known_before_the_first_event():
    """So a Stop pressed before any passage or token arrived still cancels the answer."""
    seen: list[str] = []
    events = _gateway(STREAM).chat("s", "hello?", on_start=seen.append)
    first = next(events)
    assert seen == ["r"]
    assert first.event == "sources"
