"""The ``llamacpp`` backend: the GGUF file in this process through llama.cpp (llama-cpp-python).

On a CPU it decodes 4-6x faster than the transformers engine, though it reads a long prompt
~2x slower (bench/generation.py measures both in one run); it reads the quantized GGUF as it is
(no conversion) and needs no torch at inference. It answers one request at a time: llama.cpp's
Python binding has no batching, so requests wait in order, and four answers at once still got
1.2-2x the batched engine's aggregate tokens/s here.

The prompt is the transformers tokenizer's encoding of the same chat template, the very ids the
transformers engine would see, so both backends answer the same prompt.
"""

from __future__ import annotations

import os
import queue
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from olympus import metrics
from olympus.logging import get_logger
from schemas.messages import ErrorCode
from workers.generator.backend import FinishReason, Job, OnThread, Piece

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from workers.generator.settings import GeneratorSettings

log = get_logger("olympus.generator")


class LlamaCppBackend(OnThread):
    system = "llama.cpp"

    def __init__(
        self, llama: Any, tokenizer: PreTrainedTokenizerBase, model: str, context_tokens: int
    ) -> None:
        self.llama = llama
        self.tokenizer = tokenizer
        self.model = model
        self.context_tokens = min(context_tokens, int(llama.n_ctx()))
        super().__init__("llama.cpp")

    @classmethod
    def from_settings(cls, settings: GeneratorSettings, models_dir: Path) -> LlamaCppBackend:
        from workers.generator.weights import (
            DEFAULT_NAME,
            GeneratorConfigError,
            packaged_gguf,
            tokenizer_for,
        )

        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise GeneratorConfigError(
                "OLYMPUS_GENERATOR_BACKEND=llamacpp needs llama-cpp-python: `make llamacpp` "
                "or pip install 'olympus[llamacpp]' (it builds llama.cpp from source)"
            ) from exc
        gguf = Path(settings.model) if settings.model else packaged_gguf()
        if gguf.suffix != ".gguf" or not gguf.is_file():
            raise GeneratorConfigError(
                "the llamacpp backend reads a .gguf file; "
                f"OLYMPUS_GENERATOR_MODEL={gguf} is not one"
            )
        tokenizer = tokenizer_for(settings.tokenizer, models_dir, gguf)
        llama = Llama(
            model_path=str(gguf),
            n_ctx=settings.context_tokens,
            n_threads=settings.threads or os.cpu_count() or 1,
            n_gpu_layers=-1
            if settings.device != "cpu"
            else 0,  # all of it, where a GPU is built in
            verbose=False,
        )
        return cls(
            llama,
            tokenizer,
            DEFAULT_NAME if not settings.model else gguf.stem,
            settings.context_tokens,
        )

    def describe(self) -> dict[str, object]:
        return {"threads": int(self.llama.n_threads), "context_window": int(self.llama.n_ctx())}

    # --- the llama.cpp thread ----------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                job = self._waiting.get(timeout=0.25)
            except queue.Empty:
                continue
            # No deadline here: the handler checked it when it accepted the request, and an
            # accepted answer waits its turn as long as its reader does (one who leaves
            # cancels it, and a cancelled answer is dropped before any work).
            if job.cancelled:
                self._finish(job, "cancelled")
            else:
                try:
                    self._finish(job, self._generate(job))
                except Exception as exc:  # a failed evaluation must not take the worker down
                    log.exception("generation failed")
                    self._finish(job, "error", f"{type(exc).__name__}: {exc}")

    def _generate(self, job: Job) -> FinishReason:
        # From an empty cache: llama-cpp-python would otherwise re-evaluate only what differs
        # from the previous prompt, and a token evaluated alone gives slightly different logits
        # than in a batch (seen on an AVX-512 CPU: the same prompt, two greedy answers). An
        # answer must not depend on whose question came before it.
        self.llama.reset()
        stream = self.llama.create_completion(
            prompt=job.prompt_ids,
            max_tokens=job.max_new_tokens,
            temperature=job.temperature,
            top_p=job.top_p,
            stream=True,
        )
        reason: FinishReason = "stop"
        for chunk in stream:
            if job.cancelled:
                stream.close()  # llama.cpp stops evaluating at once
                return "cancelled"
            choice = chunk["choices"][0]
            # The chunk with the finish reason closes the stream and brings no token of its
            # own: counted, every answer was one token longer than it was.
            if not choice.get("finish_reason"):
                if job.first_token_at is None:
                    job.first_token_at = time.perf_counter()
                    metrics.TIME_TO_FIRST_TOKEN.observe(job.first_token_at - job.submitted_at)
                job.completion_tokens += 1
                metrics.GENERATED_TOKENS.inc()
            if choice["text"]:
                job.sent += choice["text"]
                job.emit(Piece(choice["text"], job.completion_tokens))
            if choice.get("finish_reason"):
                reason = "length" if choice["finish_reason"] == "length" else "stop"
        return reason

    def _finish(
        self,
        job: Job,
        reason: FinishReason,
        error: str | None = None,
        code: ErrorCode = "internal",
    ) -> None:
        self._forget(job)
        metrics.ANSWERS.labels(reason).inc()
        job.emit(Piece("", job.completion_tokens, reason, error, code, len(job.prompt_ids)))
