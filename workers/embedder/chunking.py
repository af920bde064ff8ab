"""Token-sized chunks with semantic-text-splitter, counted by the embedder's own tokenizer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from semantic_text_splitter import MarkdownSplitter, TextSplitter
from tokenizers import Tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class Chunker:
    def __init__(
        self, hf_tokenizer: PreTrainedTokenizerBase, max_tokens: int, overlap: int
    ) -> None:
        # The embedder adds [CLS] and [SEP]: leave room for them.
        capacity = max(8, max_tokens - 2)
        overlap = min(overlap, capacity // 2)
        fast = getattr(hf_tokenizer, "backend_tokenizer", None)
        if fast is None:
            raise ValueError("the embedder counts chunk tokens with a fast (Rust) tokenizer")
        backend = Tokenizer.from_str(fast.to_str())
        backend.no_truncation()
        backend.no_padding()
        self.capacity = capacity
        self._tokenizer = backend
        self._text = TextSplitter.from_huggingface_tokenizer(backend, capacity, overlap)
        self._markdown = MarkdownSplitter.from_huggingface_tokenizer(backend, capacity, overlap)

    def split(self, text: str, markdown: bool = False) -> list[str]:
        text = text.strip()
        if not text:
            return []
        # A text that fits is one chunk: one encode instead of the splitter's many.
        if len(self._tokenizer.encode(text, add_special_tokens=False).ids) <= self.capacity:
            return [text]
        splitter = self._markdown if markdown else self._text
        return [c for c in splitter.chunks(text) if c.strip()]
