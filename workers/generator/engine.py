"""Batched, streaming generation with requests joining a running batch between tokens.

transformers' ``generate`` streams only a batch of one, and its continuous-batching manager ran
~6 tokens/s here on CPU (against ~40 for a plain decode loop) without streaming before the end.
So this is a small decode loop of our own over the model's KV cache: waiting requests are
prefilled together (left-padded) and merged into the running batch at the next token; a
finished or cancelled request leaves the batch at once. Every token reaches its request's
``emit`` callback, on the engine thread.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from transformers import DynamicCache, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicLayer

from olympus import metrics
from olympus.logging import get_logger
from schemas.messages import ErrorCode
from workers.generator.backend import FinishReason, Job, OnThread, Piece

if TYPE_CHECKING:
    from workers.generator.settings import GeneratorSettings

log = get_logger("olympus.generator")


class Engine(OnThread):
    """The ``transformers`` backend: the model in this process, on a GPU when there is one."""

    system = "transformers"

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        device: str,
        max_batch: int,
        name: str = "",
        context_tokens: int = 2048,
    ) -> None:
        self.lm = model
        self.tokenizer = tokenizer
        self.device = device
        self.max_batch = max_batch
        self.model = name or type(model).__name__
        window = getattr(model.config, "max_position_embeddings", context_tokens)
        self.context_tokens = min(context_tokens, window)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.stop_ids = _stop_ids(model, tokenizer)
        super().__init__("generator")
        self.batch_sizes: list[int] = []  # one entry per decode step, for metrics and tests

    @classmethod
    def from_settings(cls, settings: GeneratorSettings, models_dir: Path) -> Engine:
        from workers.generator.weights import load

        model, tokenizer, device, name = load(
            settings.model,
            models_dir,
            device=settings.device,
            dtype=settings.dtype,
            quantization=settings.quantization,
            threads=settings.threads,
        )
        return cls(model, tokenizer, device, settings.max_batch, name, settings.context_tokens)

    def describe(self) -> dict[str, object]:
        return {"device": self.device, "dtype": str(self.lm.dtype), "max_batch": self.max_batch}

    # --- the engine thread -------------------------------------------------------------------
    def _run(self) -> None:
        batch: _Batch | None = None
        while not self._stopping.is_set():
            room = self.max_batch - (batch.size if batch else 0)
            new = self._take(room, block=batch is None)
            try:
                with torch.inference_mode():
                    if new:
                        batch = self._admit(batch, new)
                    if batch is not None:
                        batch = self._step(batch)
            except Exception as exc:  # a failed forward pass must not take the worker down
                log.exception("generation failed")
                for job in (batch.jobs if batch else []) + new:
                    self._finish(job, "error", error=f"{type(exc).__name__}: {exc}")
                batch = None

    def _take(self, room: int, block: bool) -> list[Job]:
        jobs: list[Job] = []
        if block:
            try:
                jobs.append(self._waiting.get(timeout=0.25))
            except queue.Empty:
                return jobs
        while len(jobs) < room:
            try:
                jobs.append(self._waiting.get_nowait())
            except queue.Empty:
                break
        live = []
        now = time.time()
        for job in jobs:
            if job.cancelled:
                self._finish(job, "cancelled")
            elif job.deadline is not None and job.deadline < now:
                self._finish(
                    job, "error", error="expired while waiting for the generator", code="expired"
                )
            else:
                live.append(job)
        return live

    def _admit(self, batch: _Batch | None, jobs: list[Job]) -> _Batch | None:
        """Prefill the new requests together and merge them into the running batch."""
        width = max(len(j.prompt_ids) for j in jobs)
        ids = torch.full((len(jobs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for row, job in enumerate(jobs):
            ids[row, width - len(job.prompt_ids) :] = torch.tensor(job.prompt_ids)
            mask[row, width - len(job.prompt_ids) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.lm(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            cache=DynamicCache(),
            use_cache=True,
            logits_to_keep=1,  # only the last position's: the vocabulary projection is costly
        )
        tokens = self._sample(out.logits[:, -1, :], jobs)
        fresh = self._emit(_Batch(jobs, out.cache, mask, tokens))
        if batch is None:
            return fresh
        if fresh is None:
            return batch
        return batch.merge(fresh)

    def _step(self, batch: _Batch) -> _Batch | None:
        mask = torch.cat([batch.mask, torch.ones_like(batch.mask[:, :1])], dim=1)
        positions = mask.sum(-1, keepdim=True) - 1
        self.batch_sizes.append(batch.size)
        metrics.GENERATE_BATCH.observe(batch.size)
        out = self.lm(
            input_ids=batch.last.unsqueeze(-1),
            attention_mask=mask,
            position_ids=positions,
            cache=batch.cache,
            use_cache=True,
        )
        batch.mask = mask
        batch.last = self._sample(out.logits[:, -1, :], batch.jobs)
        return self._emit(batch)

    def _sample(self, logits: torch.Tensor, jobs: list[Job]) -> torch.Tensor:
        logits = logits.float()
        chosen = logits.argmax(-1)
        if all(j.temperature == 0 for j in jobs):
            return chosen
        temps = torch.tensor([j.temperature or 1.0 for j in jobs], device=logits.device)
        probs = torch.softmax(logits / temps.unsqueeze(-1), dim=-1)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        top_p = torch.tensor([j.top_p for j in jobs], device=logits.device).unsqueeze(-1)
        # keep the smallest set of tokens whose probability reaches top_p (always the first)
        outside = sorted_probs.cumsum(-1) - sorted_probs > top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0)
        picked = order.gather(-1, torch.multinomial(sorted_probs, 1)).squeeze(-1)
        greedy = torch.tensor([j.temperature == 0 for j in jobs], device=logits.device)
        return torch.where(greedy, chosen, picked)

    def _emit(self, batch: _Batch) -> _Batch | None:
        """Hand each request its token; drop the requests that are over from the batch."""
        keep = []
        now = time.perf_counter()
        for row, (job, token) in enumerate(zip(batch.jobs, batch.last.tolist(), strict=True)):
            if job.cancelled:
                self._finish(job, "cancelled")
                continue
            if job.first_token_at is None:
                job.first_token_at = now
                metrics.TIME_TO_FIRST_TOKEN.observe(now - job.submitted_at)
            if token in self.stop_ids:
                self._finish(job, "stop")
                continue
            job.generated.append(token)
            metrics.GENERATED_TOKENS.inc()
            if len(job.generated) >= job.max_new_tokens:
                self._finish(job, "length")
                continue
            self._send(job)
            keep.append(row)
        return batch.select(keep)

    def _send(
        self,
        job: Job,
        finish_reason: str | None = None,
        error: str | None = None,
        code: ErrorCode = "internal",
    ) -> None:
        text = self.tokenizer.decode(job.generated, skip_special_tokens=True)
        assert isinstance(text, str)  # one sequence decodes to one string
        if text.endswith("\ufffd") and finish_reason is None:
            return  # half a character: wait for the rest of its bytes
        piece, job.sent = text[len(job.sent) :], text
        if piece or finish_reason:
            job.emit(Piece(piece, len(job.generated), finish_reason, error, code))

    def _finish(
        self,
        job: Job,
        reason: FinishReason,
        error: str | None = None,
        code: ErrorCode = "internal",
    ) -> None:
        self._forget(job)
        metrics.ANSWERS.labels(reason).inc()
        self._send(job, reason, error, code)


def _filled(cache: DynamicCache) -> list[DynamicLayer]:
    """The cache's layers, each holding keys and values (a model whose cache layers are of
    another kind, linear attention say, cannot be batched this way: say so)."""
    layers = list(cache.layers)
    for layer in layers:
        if not isinstance(layer, DynamicLayer):
            raise TypeError(f"cannot batch a {type(layer).__name__} cache layer")
    return cast(list[DynamicLayer], layers)


def _tensor(value: torch.Tensor | None) -> torch.Tensor:
    if value is None:
        raise ValueError("an empty cache layer: the prefill has not run")
    return value


@dataclass
class _Batch:
    jobs: list[Job]
    cache: DynamicCache
    mask: torch.Tensor  # (batch, cached tokens): 0 where a row is left padding
    last: torch.Tensor  # (batch,): each row's newest token, fed at the next step

    @property
    def size(self) -> int:
        return len(self.jobs)

    def select(self, rows: list[int]) -> _Batch | None:
        if not rows:
            return None
        if len(rows) == self.size:
            return self
        index = torch.tensor(rows, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        # columns that are padding in every remaining row need no attention at all
        start = int((mask.sum(0) > 0).long().argmax())
        for layer in _filled(self.cache):
            layer.keys = _tensor(layer.keys).index_select(0, index)[:, :, start:]
            layer.values = _tensor(layer.values).index_select(0, index)[:, :, start:]
        return _Batch([self.jobs[r] for r in rows], self.cache, mask[:, start:], self.last[index])

    def merge(self, other: _Batch) -> _Batch:
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(_filled(self.cache), _filled(other.cache), strict=True):
            mine.keys = torch.cat(
                [_pad_left(_tensor(mine.keys), width), _pad_left(_tensor(theirs.keys), width)]
            )
            mine.values = torch.cat(
                [_pad_left(_tensor(mine.values), width), _pad_left(_tensor(theirs.values), width)]
            )
        mask = torch.cat([_pad_left(self.mask, width), _pad_left(other.mask, width)])
        return _Batch(self.jobs + other.jobs, self.cache, mask, torch.cat([self.last, other.last]))


def _pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Zeros on the left of the sequence axis (2 for a cache tensor, 1 for a mask)."""
    axis = 2 if tensor.dim() == 4 else 1
    missing = width - tensor.shape[axis]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[axis] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=axis)


def _stop_ids(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        eos = getattr(source, "eos_token_id", None)
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    for special in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        token = tokenizer.convert_tokens_to_ids(special)
        if isinstance(token, int) and token != tokenizer.unk_token_id:
            ids.add(token)
    return ids
