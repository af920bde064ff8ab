"""What writes the answers: one interface, several engines behind the same bus contract.

The handler builds the prompt (numbered passages, history, notes), streams the events, maps the
citations and keeps the turn; a backend only turns a prompt into text, piece by piece:

- ``transformers`` (engine.py): the model in this process, batched, on a GPU when present;
- ``openai`` (upstream.py): any OpenAI-compatible chat-completions server — vLLM, TGI, Ollama,
  llama.cpp's server, a hosted API — so generation scales out on an engine built for it;
- ``llamacpp`` (llamacpp.py): the packaged GGUF in this process through llama.cpp, the fast
  path on a CPU.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from schemas.messages import ErrorCode

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from olympus.settings import CommonSettings
    from workers.generator.settings import GeneratorSettings

FinishReason = str  # "stop" | "length" | "cancelled" | "error"


@dataclass
class Piece:
    """What one step produced for one request: new text, and whether the answer is over."""

    text: str
    completion_tokens: int
    finish_reason: FinishReason | None = None
    error: str | None = None
    code: ErrorCode = "internal"  # with an error: what kind, as the gateway's table says it
    prompt_tokens: int | None = None  # on the last piece, when the engine counted them itself


@dataclass
class Job:
    request_id: str
    prompt_ids: list[int]
    max_new_tokens: int
    emit: Callable[[Piece], object]
    messages: list[dict[str, str]] = field(default_factory=list)  # the same prompt, as messages
    temperature: float = 0.0
    top_p: float = 1.0
    deadline: float | None = None  # unix time; a request still waiting then is dropped
    cancelled: bool = False
    generated: list[int] = field(default_factory=list)  # token ids, where the engine has them
    completion_tokens: int = 0  # where it has none: the pieces counted
    sent: str = ""
    submitted_at: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None


class Backend(Protocol):
    """An engine that writes answers. ``submit`` and ``cancel`` are called on the event loop;
    every piece of an answer reaches its job's ``emit``, the last one with a finish reason."""

    tokenizer: PreTrainedTokenizerBase  # measures prompts against the context budget
    model: str  # the model's name, as spans and logs give it
    system: str  # the engine, for the LLM span's ``llm.system``
    context_tokens: int  # prompt + answer, at most

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def submit(self, job: Job) -> None: ...

    def cancel(self, request_id: str) -> bool:
        """Ask an answer to stop; it ends before its next piece. False if it is not here."""
        ...

    def describe(self) -> dict[str, object]:
        """What the ``generator ready`` log line says about it."""
        ...


class OnThread:
    """What the in-process engines share: jobs queue for one thread of their own (the model
    runs there, off the event loop); ``cancel`` marks a job, the thread ends it before its next
    token. A subclass writes ``_run``, taking jobs from ``_waiting`` until ``_stopping``."""

    def __init__(self, name: str) -> None:
        self._waiting: queue.Queue[Job] = queue.Queue()
        self._jobs: dict[str, Job] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)

    async def open(self) -> None:
        self.start()

    async def close(self) -> None:
        self.stop()

    def submit(self, job: Job) -> None:
        self._jobs[job.request_id] = job
        self._waiting.put(job)

    def cancel(self, request_id: str) -> bool:
        """Ask a request to stop; it ends before its next token. False if it is not here."""
        job = self._jobs.get(request_id)
        if job is None:
            return False
        job.cancelled = True
        return True

    def _forget(self, job: Job) -> None:
        self._jobs.pop(job.request_id, None)


def create(settings: GeneratorSettings, common: CommonSettings) -> Backend:
    """The backend the settings name, loaded (heavy imports happen here, not at import)."""
    models_dir = settings.models_dir or common.data_dir / "models"
    if settings.backend == "openai":
        from workers.generator.upstream import OpenAIBackend

        return OpenAIBackend.from_settings(settings, models_dir)
    if settings.backend == "llamacpp":
        from workers.generator.llamacpp import LlamaCppBackend

        return LlamaCppBackend.from_settings(settings, models_dir)
    from workers.generator.engine import Engine

    return Engine.from_settings(settings, models_dir)
