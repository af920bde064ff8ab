"""A small typed client for the gateway's HTTP API, shared by Athena's pages and the command
line (``olympus ingest``, ``ask``, ``search``, ``documents``, ``mcp``): they hold only their own
UI code.

Every failure becomes a ``GatewayError`` with a sentence a person can read: the pages and the
commands show it, never a traceback. Streams (chat, document progress) use httpx-sse.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import connect_sse
from tenacity import RetryCallState, wait_exponential

TERMINAL = {"indexed", "failed", "deleted"}
CHAT_EVENTS = frozenset({"sources", "token", "done", "error"})
STATUS_EVENTS = frozenset({"status"})


class GatewayError(Exception):
    def __init__(self, status: int, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s  # what a 429 or 503 said to wait

    def __str__(self) -> str:
        return self.message if not self.status else f"{self.message} (HTTP {self.status})"


@dataclass
class Document:
    doc_id: str
    filename: str
    collection: str
    status: str
    chunk_count: int = 0
    error: str | None = None
    updated_at: float = 0.0
    content_hash: str | None = None


@dataclass(frozen=True)
class Formats:
    media_types: dict[str, str]
    max_upload_bytes: int
    max_files_per_request: int


@dataclass
class Passage:
    doc_id: str
    filename: str
    chunk_id: str
    text: str
    score: float
    n: int = 0
    found_by: str = "search"


@dataclass
class Turn:
    question: str
    answer: str
    sources: list[Passage] = field(default_factory=list)


@dataclass
class ChatEvent:
    event: str  # sources | token | done | error
    data: dict[str, Any]

    @property
    def request_id(self) -> str:
        return str(self.data.get("request_id", ""))

    @property
    def sources(self) -> list[Passage]:
        """The passages a ``sources`` event lists, numbered as the answer cites them."""
        return [_passage(s, s["n"]) for s in self.data.get("sources", [])]


class Gateway:
    def __init__(self, url: str, api_key: str, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            timeout=httpx.Timeout(timeout_s, read=300.0),
        )

    def close(self) -> None:
        self.http.close()

    # --- plumbing --------------------------------------------------------------------------
    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise GatewayError(0, f"cannot reach the gateway at {self.url}: {exc}") from exc
        raise_for_gateway(response)
        return response.json() if response.content else None

    def _stream(
        self,
        method: str,
        path: str,
        events: frozenset[str],
        on_open: Callable[[httpx.Response], None] | None = None,
        **kwargs: Any,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """The stream's ``events`` with their JSON data. Anything else is skipped: keep-alive
        comments (after which httpx-sse yields an empty event, keeping the last id as the SSE
        spec says), events without data, and kinds this client does not know."""
        try:
            with connect_sse(self.http, method, path, **kwargs) as source:
                if source.response.status_code >= 400:
                    source.response.read()
                    raise GatewayError(source.response.status_code, _detail(source.response))
                if on_open is not None:
                    on_open(source.response)
                for sse in source.iter_sse():
                    if sse.event not in events or not sse.data.strip():
                        continue
                    try:
                        data = json.loads(sse.data)
                    except ValueError as exc:
                        raise GatewayError(
                            0, f"the gateway sent an unreadable event: {exc}"
                        ) from exc
                    yield sse.event, data
        except httpx.HTTPError as exc:
            raise GatewayError(0, f"the connection to the gateway broke: {exc}") from exc

    # --- health ----------------------------------------------------------------------------
    def ready(self) -> dict[str, Any]:
        try:
            response = self.http.get("/readyz")
        except httpx.HTTPError as exc:
            raise GatewayError(0, f"cannot reach the gateway at {self.url}: {exc}") from exc
        if response.status_code == 401:
            raise GatewayError(401, "the API key was refused")
        return response.json()

    # --- documents -------------------------------------------------------------------------
    def documents(self, collection: str | None = None, status: str | None = None) -> list[Document]:
        """All of them, most recently changed first."""
        items: list[Document] = []
        while True:
            page, total = self.documents_page(collection, status, offset=len(items))
            items += page
            if len(items) >= total or not page:
                return items

    def documents_page(
        self,
        collection: str | None = None,
        status: str | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> tuple[list[Document], int]:
        """One page, most recently changed first, and how many there are in all."""
        params = {k: v for k, v in {"collection": collection, "status": status}.items() if v}
        page = self._call(
            "GET", "/rag/documents", params=params | {"limit": limit, "offset": offset}
        )
        return [_document(d) for d in page["items"]], int(page["total"])

    def document(self, doc_id: str) -> Document:
        return _document(self._call("GET", f"/rag/documents/{doc_id}"))

    def chunks(self, doc_id: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/rag/documents/{doc_id}/chunks")["chunks"])

    def upload(self, files: list[tuple[str, bytes]], collection: str) -> list[Document]:
        body = [("files", (name, data)) for name, data in files]
        reply = self._call("POST", "/rag/documents", params={"collection": collection}, files=body)
        return [_document(d) for d in reply["documents"]]

    def formats(self) -> Formats:
        """The file types and sizes the gateway accepts."""
        reply = self._call("GET", "/rag/formats")
        return Formats(
            media_types=dict(reply["media_types"]),
            max_upload_bytes=int(reply["max_upload_bytes"]),
            max_files_per_request=int(reply["max_files_per_request"]),
        )

    def follow(self, doc_id: str) -> Iterator[Document]:
        """The document's status as it changes, until it is indexed, failed or deleted."""
        for _, data in self._stream("GET", f"/rag/documents/{doc_id}/events", STATUS_EVENTS):
            yield _document(data)

    def retry(self, doc_id: str) -> str:
        """Process a failed document again from what the bus holds; its status now (queued)."""
        return str(self._call("POST", f"/rag/documents/{doc_id}/retry")["status"])

    def delete(self, doc_id: str) -> bool:
        self._call("DELETE", f"/rag/documents/{doc_id}")
        return True

    # --- sessions --------------------------------------------------------------------------
    def context(self, session: str) -> list[str]:
        return list(self._call("GET", f"/mcp/{session}/get_context")["context"])

    def add_context(self, session: str, content: str) -> list[str]:
        reply = self._call("POST", f"/mcp/{session}/add_context", json={"content": content})
        return list(reply["context"])

    def clear_context(self, session: str) -> None:
        self._call("DELETE", f"/mcp/{session}/clear_context")

    def graph(self, doc_id: str, depth: int = 1) -> dict[str, Any]:
        """The documents and relations within ``depth`` hops of the document, either way."""
        return dict(self._call("GET", f"/rag/documents/{doc_id}/graph", params={"depth": depth}))

    def related(self, doc_id: str, limit: int = 10) -> list[dict[str, Any]]:
        """The documents related to this one, best first, each with its relations."""
        reply = self._call("GET", f"/rag/documents/{doc_id}/related", params={"limit": limit})
        return list(reply["items"])

    def query(
        self,
        session: str,
        text: str,
        mode: str,
        top_k: int,
        collection: str | None = None,
        expand: str = "none",
    ) -> list[Passage]:
        body = {
            "input": text,
            "mode": mode,
            "top_k": top_k,
            "collection": collection or None,
            "expand": expand,
        }
        reply = self._call("POST", f"/mcp/{session}/query", json=body)
        return [_passage(p, i + 1) for i, p in enumerate(reply["retrieved_documents"])]

    def history(self, session: str) -> list[Turn]:
        turns = self._call("GET", f"/mcp/{session}/history")["turns"]
        return [
            Turn(t["question"], t["answer"], [_passage(s, s["n"]) for s in t["sources"]])
            for t in turns
        ]

    def chat(
        self,
        session: str,
        text: str,
        mode: str = "hybrid",
        collection: str | None = None,
        on_start: Callable[[str], None] | None = None,
        max_tokens: int | None = None,
        expand: str | None = None,
    ) -> Iterator[ChatEvent]:
        """The answer's events. ``on_start`` gets the answer's request id as soon as the
        pipeline has accepted the question, before any event: a stop pressed then works."""
        body: dict[str, Any] = {
            "input": text,
            "mode": mode,
            "collection": collection or None,
        }
        if expand is not None:  # else the gateway's default
            body["expand"] = expand
        if max_tokens is not None:
            body["max_tokens"] = max_tokens

        def opened(response: httpx.Response) -> None:
            if on_start is not None and response.headers.get("x-request-id"):
                on_start(response.headers["x-request-id"])

        path = f"/mcp/{session}/chat"
        for event, data in self._stream("POST", path, CHAT_EVENTS, opened, json=body):
            yield ChatEvent(event, data)

    def cancel(self, session: str, request_id: str) -> None:
        self._call("POST", f"/mcp/{session}/chat/{request_id}/cancel")


def _document(data: dict[str, Any]) -> Document:
    return Document(
        doc_id=data["doc_id"],
        filename=data.get("filename", ""),
        collection=data.get("collection", ""),
        status=data.get("status", ""),
        chunk_count=data.get("chunk_count", 0),
        error=data.get("error"),
        updated_at=data.get("updated_at", data.get("at", 0.0)),
        content_hash=data.get("content_hash"),
    )


def _passage(data: dict[str, Any], n: int) -> Passage:
    return Passage(
        doc_id=data["doc_id"],
        filename=data["filename"],
        chunk_id=data["chunk_id"],
        text=data["text"],
        score=data["score"],
        n=n,
        found_by=data.get("found_by", "search"),
    )


def raise_for_gateway(response: httpx.Response) -> None:
    """A GatewayError for a 4xx or 5xx, with the message and the Retry-After it gave."""
    if response.status_code >= 400:
        wait = response.headers.get("retry-after", "")
        retry_after = float(wait) if wait.replace(".", "", 1).isdigit() else None
        raise GatewayError(response.status_code, _detail(response), retry_after)


def told_to_wait(exc: BaseException) -> bool:
    """A 429 or 503: the request may go again once the gateway's wait is over."""
    return isinstance(exc, GatewayError) and exc.status in (429, 503)


def wait_as_told(state: RetryCallState) -> float:
    """As long as a 429 or 503 said (its Retry-After), else backing off from half a second."""
    exc = state.outcome.exception() if state.outcome else None
    said = exc.retry_after_s if isinstance(exc, GatewayError) else None
    return said if said is not None else _backoff(state)


_backoff = wait_exponential(multiplier=0.5, max=10)


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        return response.text or response.reason_phrase
    if isinstance(detail, list):  # a validation error: say which field and why
        return "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', [])[1:]) or 'request'}: {e.get('msg')}"
            for e in detail
        )
    return str(detail)
