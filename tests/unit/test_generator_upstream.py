"""The openai backend facing servers that answer wrongly, and the settings that choose a backend.

The servers here are not fakes of Olympus: they stand for a broken third-party model server
(a proxy's HTML error page, a stream that is not JSON, chunks of another API), which the real
server in tests/e2e/test_generator_backends.py never sends.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import openai
import pytest
import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from olympus import natsserver
from workers.generator.backend import Job, Piece
from workers.generator.settings import GeneratorSettings
from workers.generator.upstream import OpenAIBackend

pytestmark = pytest.mark.unit

CHUNK = (
    '{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    '"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}'
)


async def completions(request: Request) -> Response:
    behaviour = (await request.json())["model"]
    if behaviour == "html-500":
        return HTMLResponse("<html><body>502 Bad Gateway (nginx)</body></html>", 500)
    if behaviour == "unknown":
        return JSONResponse({"error": {"message": "model 'unknown' not found"}}, 404)
    if behaviour == "too-long":
        return JSONResponse({"error": {"message": "the prompt exceeds the context"}}, 400)

    async def lines() -> Iterator[bytes]:
        yield f"data: {CHUNK}\n\n".encode()
        if behaviour == "not-json":
            yield b"data: {this is not json\n\n"
        elif behaviour == "not-chunks":
            yield b'data: {"completion": "hello", "ok": true}\n\n'
        yield b"data: [DONE]\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream")


@pytest.fixture(scope="module")
def broken_server() -> Iterator[str]:
    port = natsserver.free_port()
    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(10)


async def answer(base_url: str, model: str) -> tuple[str, Piece]:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0)
    backend = OpenAIBackend(client, model, None, 2048, 4, idle_s=5)  # type: ignore[arg-type]
    pieces: asyncio.Queue[Piece] = asyncio.Queue()
    backend.submit(Job("r1", [], 16, pieces.put_nowait, [{"role": "user", "content": "Hi"}]))
    text = ""
    try:
        while True:
            piece = await pieces.get()
            text += piece.text
            if piece.finish_reason:
                return text, piece
    finally:
        await backend.close()


@pytest.mark.parametrize(
    ("model", "code", "said"),
    [
        ("not-json", "unavailable", "not an OpenAI chat-completion stream"),
        ("not-chunks", "unavailable", "not an OpenAI chat-completion stream"),
        ("html-500", "unavailable", "answered 500"),
        ("unknown", "unavailable", "has no model 'unknown' (404)"),
        ("too-long", "bad_request", "refused the prompt (400)"),
    ],
)
async def test_a_broken_server_ends_the_answer_with_an_error_that_says_what_it_sent(
    broken_server, model, code, said
):
    text, last = await answer(broken_server, model)
    assert last.finish_reason == "error"
    assert last.code == code
    assert said in (last.error or ""), last.error
    assert "the generator's model server at http://127.0.0.1" in (last.error or "")
    if model in ("not-json", "not-chunks"):
        assert text == "Hel", "what came before the bad chunk still reached the user"


def test_the_openai_backend_refuses_to_start_without_a_server_or_a_model():
    with pytest.raises(ValidationError, match="OLYMPUS_GENERATOR_OPENAI_BASE_URL and"):
        GeneratorSettings(backend="openai")
    with pytest.raises(ValidationError, match="needs OLYMPUS_GENERATOR_OPENAI_MODEL"):
        GeneratorSettings(backend="openai", openai_base_url="http://vllm:8000/v1")
    with pytest.raises(ValidationError, match="must start with http"):
        GeneratorSettings(backend="openai", openai_base_url="vllm:8000", openai_model="m")
    GeneratorSettings(backend="openai", openai_base_url="http://vllm:8000/v1", openai_model="m")
