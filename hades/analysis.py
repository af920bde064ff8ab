"""Text analysis for BM25. Milvus Lite has no English analyzer (it silently ignores stemmer
filters), so H.A.D.E.S. stems text and queries itself, the same way, before Milvus sees them.
Porter stemming plus Lucene's English stop words recovers Anserini-like BM25 quality."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

import Stemmer

# Lucene's EnglishAnalyzer default stop set (33 words).
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "if",
        "in",
        "into",
        "is",
        "it",
        "no",
        "not",
        "of",
        "on",
        "or",
        "such",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "will",
        "with",
    ]
)
_TOKEN = re.compile(r"\w+", re.UNICODE)


@lru_cache(maxsize=1)
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("porter")


def bm25_terms(text: str) -> str:
    """Lower-cased, stop words dropped, Porter-stemmed terms joined by spaces."""
    words = [w for w in _TOKEN.findall(text.lower()) if w not in STOP_WORDS]
    return " ".join(_stemmer().stemWords(words))


def sealed_terms(terms: str, key: bytes) -> str:
    """Each term replaced by its keyed BLAKE2b digest (64 bits, hex): BM25 ranks the digests
    exactly as it ranks the words, and the vector store's files (segments and write-ahead log,
    which keep a deleted row until they are compacted) hold no word of the text."""
    return " ".join(
        hashlib.blake2b(t.encode(), digest_size=8, key=key).hexdigest() for t in terms.split()
    )
