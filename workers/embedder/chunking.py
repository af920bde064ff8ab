"""Token-sized chunks, counted by the embedder's own tokenizer, cut where the text has its
strongest break: between paragraphs, else lines, else sentences, else words.

Markdown goes through semantic-text-splitter's ``MarkdownSplitter`` (headings, lists and code
blocks need its parser). Plain text, most of what is ingested, is cut here from one
tokenization of the document: semantic-text-splitter tokenized ~15 candidate pieces per
SciFact abstract to find the same cuts, 5.7x the CPU (3.4 of the embedder's ~75 CPU-s per
1,000 documents). Its rule is kept, and so are its cuts: the same chunks for 5,143 of the first
5,183 SciFact documents (tests/unit/test_embedder.py holds the two side by side). A chunk is the
most text, from where the last one ended, that fits, ending at the strongest kind of break
within reach; the next begins up to ``overlap`` tokens earlier, at a break of that same kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from semantic_text_splitter import MarkdownSplitter
from tokenizers import Tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

WORD, SENTENCE, LINE, PARAGRAPH = 1, 2, 3, 4
_ENDS = ".!?"
_CLOSERS = "\"')]}\u201d\u2019\u00bb"


def break_levels(text: str, offsets: list[tuple[int, int]]) -> list[int]:
    """For each token, the kind of break before it (0: none, inside a word or at punctuation)."""
    levels = [0] * len(offsets)
    for i in range(1, len(offsets)):
        prev_end, start = offsets[i - 1][1], offsets[i][0]
        if start <= prev_end:
            continue
        newlines = text.count("\n", prev_end, start)
        if newlines >= 2:
            levels[i] = PARAGRAPH
        elif newlines:
            levels[i] = LINE
        else:
            last = prev_end - 1
            while last > 0 and text[last] in _CLOSERS:
                last -= 1
            # A sentence ends at . ! ? unless the next word starts lower-case ("e.g. the").
            ends = text[last] in _ENDS and not text[start].islower()
            levels[i] = SENTENCE if ends else WORD
    return levels


def cut(text: str, offsets: list[tuple[int, int]], capacity: int, overlap: int) -> list[str]:
    """``text``, whose tokens span ``offsets``, in chunks of at most ``capacity`` tokens."""
    levels = break_levels(text, offsets)
    total = len(offsets)
    chunks: list[str] = []
    start = last_end = 0
    while total - start > capacity:
        reach = range(start + 1, start + capacity + 1)
        best = max(levels[b] for b in reach)
        end = max(b for b in reach if levels[b] == best)  # no break at all: cut mid-word
        if end > last_end:  # (an overlap that reaches no further than the last chunk: skipped)
            chunks.append(text[offsets[start][0] : offsets[end - 1][1]])
            last_end = end
        following = end
        if best:
            for b in range(max(start + 1, end - overlap), end):
                if levels[b] >= best:
                    following = b
                    break
        start = following
    chunks.append(text[offsets[start][0] : offsets[total - 1][1]])
    return chunks


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
        self.overlap = overlap
        self._tokenizer = backend
        self._markdown = MarkdownSplitter.from_huggingface_tokenizer(backend, capacity, overlap)

    def split(self, text: str, markdown: bool = False) -> list[str]:
        text = text.strip()
        if not text:
            return []
        encoded = self._tokenizer.encode(text, add_special_tokens=False)
        if len(encoded.ids) <= self.capacity:
            return [text]  # a text that fits is one chunk
        if markdown:
            return [c for c in self._markdown.chunks(text) if c.strip()]
        return [c for c in cut(text, encoded.offsets, self.capacity, self.overlap) if c.strip()]
