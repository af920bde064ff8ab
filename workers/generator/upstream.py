"""The ``openai`` backend: answers written by an OpenAI-compatible chat-completions server.

vLLM, TGI, Ollama, llama.cpp's server and the hosted APIs all speak it. Olympus keeps
everything else: retrieval, the prompt with numbered passages, citations, streaming, resume,
cancel, history, tracing. Each answer is one streamed request on the official ``openai``
client; cancelling the answer cancels its task, which closes the upstream stream, so the server
stops generating too.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from olympus import metrics
from olympus.logging import get_logger
from schemas.messages import ErrorCode
from workers.generator.backend import FinishReason, Job, Piece

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from workers.generator.settings import GeneratorSettings

log = get_logger("olympus.generator")
_MESSAGE_CHARS = 300  # of an upstream error message, in the answer's error event


class OpenAIBackend:
    system = "openai"

    def __init__(
        self,
        client: AsyncOpenAI,
        model: str,
        tokenizer: PreTrainedTokenizerBase,
        context_tokens: int,
        concurrency: int,
        idle_s: float,
    ) -> None:
        self.client = client
        self.idle_s = idle_s
        self.model = model
        self.tokenizer = tokenizer
        self.context_tokens = context_tokens
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._running: dict[str, tuple[Job, asyncio.Task[None]]] = {}

    @classmethod
    def from_settings(cls, settings: GeneratorSettings, models_dir: Path) -> OpenAIBackend:
        from workers.generator.weights import tokenizer_for

        client = AsyncOpenAI(
            base_url=settings.openai_base_url,
            # The SDK insists on a key; servers that want none ignore the header.
            api_key=settings.openai_api_key.get_secret_value() or "none",
            # read: the longest silence between two bytes of the stream, the first included.
            timeout=openai.Timeout(
                settings.openai_idle_s, connect=settings.openai_connect_s, pool=None
            ),
            max_retries=1,  # one more try on a refused connection or a 5xx before any token
        )
        # Without a tokenizer of its own, the packaged model's estimates the prompt's size.
        tokenizer = tokenizer_for(settings.tokenizer, models_dir)
        return cls(
            client,
            settings.openai_model,
            tokenizer,
            settings.context_tokens,
            settings.openai_concurrency,
            settings.openai_idle_s,
        )

    @property
    def where(self) -> str:
        return f"the generator's model server at {str(self.client.base_url).rstrip('/')}"

    def describe(self) -> dict[str, object]:
        return {"base_url": str(self.client.base_url), "concurrency": self.concurrency}

    async def open(self) -> None:
        # The server may come up after us, or go away and come back: each answer finds out,
        # and says so in its error event. Starting never waits for it.
        return None

    async def close(self) -> None:
        for job, task in list(self._running.values()):
            job.cancelled = True
            task.cancel()
        await asyncio.gather(*(t for _, t in self._running.values()), return_exceptions=True)
        await self.client.close()

    def submit(self, job: Job) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(job))
        self._running[job.request_id] = (job, task)
        task.add_done_callback(lambda _: self._running.pop(job.request_id, None))

    def cancel(self, request_id: str) -> bool:
        running = self._running.get(request_id)
        if running is None:
            return False
        job, task = running
        job.cancelled = True
        task.cancel()  # ends the stream's read at once: the connection closes, the server stops
        return True

    async def _answer(self, job: Job) -> None:
        try:
            async with self._slots:
                if job.deadline is not None and job.deadline < time.time():
                    self._finish(
                        job, 0, "error", "expired while waiting for the generator", "expired"
                    )
                    return
                reason, tokens, prompt_tokens = await self._stream(job)
                self._finish(job, tokens, reason, prompt_tokens=prompt_tokens)
        except asyncio.CancelledError:
            if not job.cancelled:
                raise  # the worker is stopping
            self._finish(job, job.completion_tokens, "cancelled")
        except openai.APIStatusError as exc:
            self._finish(job, job.completion_tokens, "error", *self._refusal(exc))
        except openai.APITimeoutError:
            self._finish(
                job,
                job.completion_tokens,
                "error",
                f"{self.where} sent nothing for {self.idle_s:g}s",
                "unavailable",
            )
        except openai.APIConnectionError as exc:
            self._finish(
                job,
                job.completion_tokens,
                "error",
                f"{self.where} cannot be reached: {_cause(exc)}",
                "unavailable",
            )
        except Exception as exc:  # a malformed stream: not JSON, not chat-completion chunks
            log.warning("the model server's answer could not be read", exc_info=True)
            self._finish(
                job,
                job.completion_tokens,
                "error",
                f"{self.where} sent an answer that is not an OpenAI chat-completion stream: "
                f"{type(exc).__name__}: {_cut(str(exc))}",
                "unavailable",
            )

    async def _stream(self, job: Job) -> tuple[FinishReason, int, int | None]:
        """Stream one answer into ``job``: (finish reason, completion tokens, prompt tokens)."""
        stream = await self.client.chat.completions.create(
            model=self.model,
            messages=cast(list[ChatCompletionMessageParam], job.messages),
            max_tokens=job.max_new_tokens,
            temperature=job.temperature,
            top_p=job.top_p if job.temperature > 0 else openai.omit,
            stream=True,
            stream_options={"include_usage": True},
        )
        reason: FinishReason = "stop"
        usage = None
        async with stream:
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    if choice.delta is not None and choice.delta.content:
                        if job.first_token_at is None:
                            job.first_token_at = time.perf_counter()
                            metrics.TIME_TO_FIRST_TOKEN.observe(
                                job.first_token_at - job.submitted_at
                            )
                        # A chunk is a token on every server seen; the usage corrects it.
                        job.completion_tokens += 1
                        job.sent += choice.delta.content
                        metrics.GENERATED_TOKENS.inc()
                        job.emit(Piece(choice.delta.content, job.completion_tokens))
                    if choice.finish_reason is not None:
                        reason = "length" if choice.finish_reason == "length" else "stop"
        if usage is not None:
            return reason, usage.completion_tokens, usage.prompt_tokens
        return reason, job.completion_tokens, None

    def _refusal(self, exc: openai.APIStatusError) -> tuple[str, ErrorCode]:
        """An error status of the server, as the answer's error and its kind."""
        said = _cut(str(exc.message))
        where = self.where
        if exc.status_code == 404:
            return f"{where} has no model {self.model!r} (404): {said}", "unavailable"
        if exc.status_code in (400, 413, 422):
            return f"{where} refused the prompt ({exc.status_code}): {said}", "bad_request"
        return f"{where} answered {exc.status_code}: {said}", "unavailable"

    def _finish(
        self,
        job: Job,
        tokens: int,
        reason: FinishReason,
        error: str | None = None,
        code: ErrorCode = "internal",
        prompt_tokens: int | None = None,
    ) -> None:
        metrics.ANSWERS.labels(reason).inc()
        if reason == "error":
            log.warning("the model server failed an answer", error=error)
        job.emit(Piece("", tokens, reason, error, code, prompt_tokens))


def _cause(exc: BaseException) -> str:
    """The innermost reason of a connection error ("Connection refused", not "Connection
    error.")."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return _cut(str(exc) or type(exc).__name__)


def _cut(text: str) -> str:
    return text if len(text) <= _MESSAGE_CHARS else text[:_MESSAGE_CHARS] + "…"
