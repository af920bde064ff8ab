"""The document formats Olympus accepts, by extension and media type (the gateway's 415 list)."""

from __future__ import annotations

from pathlib import PurePath

MEDIA_TYPES: dict[str, str] = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".json": "application/json",
}
SUPPORTED_MEDIA_TYPES = frozenset(MEDIA_TYPES.values())
BINARY_MEDIA_TYPES = frozenset({MEDIA_TYPES[".pdf"], MEDIA_TYPES[".docx"]})


def media_type_of(filename: str, declared: str | None = None) -> str | None:
    """The media type to parse a document as, or None when Olympus cannot read it."""
    if declared:
        base = declared.split(";")[0].strip().lower()
        if base in SUPPORTED_MEDIA_TYPES:
            return base
    return MEDIA_TYPES.get(PurePath(filename).suffix.lower())
