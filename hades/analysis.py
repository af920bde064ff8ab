"""Text analysis for BM25. Milvus Lite has no English analyzer (it silently ignores stemmer
filters), so H.A.D.E.S. stems text and queries itself, the same way, before Milvus sees them.
Porter stemming plus Lucene's English stop words recovers Anserini-like BM25 quality."""

from __future__ import annotations

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
