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


_KINDS = {"application/pdf": "a PDF"}


def content_problem(media_type: str, data: bytes) -> str | None:
    """Why ``data`` is not what its media type says (an executable renamed ``.pdf``), or None.

    The rules are the formats' own: a PDF has ``%PDF-`` in its first 1024 bytes, a DOCX is a
    zip holding ``word/document.xml``, a text format has no NUL byte. puremagic only names
    what the content looks like instead, for the message.
    """
    if media_type == MEDIA_TYPES[".pdf"]:
        ok = b"%PDF-" in data[:1024]
    elif media_type == MEDIA_TYPES[".docx"]:
        ok = _is_docx(data)
    else:
        ok = b"\x00" not in data[:8192]
    if ok:
        return None
    if media_type == MEDIA_TYPES[".docx"]:
        return "the content is not a DOCX document: no zip holding word/document.xml"
    return f"the content is not {_KINDS.get(media_type, 'text')}{_looks_like(data)}"


def _is_docx(data: bytes) -> bool:
    import io
    import zipfile

    try:
        names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    except (zipfile.BadZipFile, ValueError):
        return False
    return "word/document.xml" in names


def _looks_like(data: bytes) -> str:
    import puremagic

    try:
        matches = puremagic.magic_string(data[:8192])
    except (puremagic.PureError, ValueError):
        return ""
    named = [m.name for m in matches if m.name and m.confidence >= 0.4]
    return f" (it looks like: {named[0]})" if named else ""
