"""Text out of documents, with well-kept libraries: pypdf, python-docx, BeautifulSoup."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

from schemas.formats import MEDIA_TYPES


class ExtractionError(Exception):
    """The document cannot be read; the reason is shown to the user as the failure."""


@dataclass(frozen=True)
class Extracted:
    text: str
    markdown: bool


def extract_text(data: bytes, media_type: str) -> Extracted:
    if not data.strip():
        raise ExtractionError("the document is empty")
    try:
        reader = _READERS[media_type]
    except KeyError:
        raise ExtractionError(f"unsupported format {media_type!r}") from None
    try:
        text = reader(data)
    except ExtractionError:
        raise
    except Exception as exc:  # every parser has its own error types; the message is what matters
        raise ExtractionError(f"cannot read {media_type} document: {exc}") from exc
    if not text.strip():
        raise ExtractionError("no text found in the document")
    return Extracted(text=text, markdown=media_type == MEDIA_TYPES[".md"])


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        if b"\x00" in data:
            raise ExtractionError("the text file is binary, not text") from None
        return data.decode("cp1252", errors="replace")


def _html(data: bytes) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "lxml")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    lines = (line.strip() for line in soup.get_text(separator="\n").splitlines())
    return "\n".join(line for line in lines if line)


def _pdf(data: bytes) -> str:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        raise ExtractionError("the PDF is encrypted")
    return "\n\n".join(page.extract_text() or "" for page in reader.pages)


def _docx(data: bytes) -> str:
    import docx

    document = docx.Document(io.BytesIO(data))
    parts = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            parts.append(" | ".join(cell.text for cell in row.cells))
    return "\n".join(parts)


def _json(data: bytes) -> str:
    try:
        value = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ExtractionError(f"invalid JSON: {exc}") from exc
    lines: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list):
            for child in node:
                walk(child, path)
        elif isinstance(node, str) and node.strip():
            lines.append(f"{path}: {node}" if path else node)
        elif node is not None and not isinstance(node, str):
            lines.append(f"{path}: {node}" if path else str(node))

    walk(value, "")
    return "\n".join(lines)


_READERS = {
    MEDIA_TYPES[".txt"]: _decode,
    MEDIA_TYPES[".md"]: _decode,
    MEDIA_TYPES[".html"]: _html,
    MEDIA_TYPES[".pdf"]: _pdf,
    MEDIA_TYPES[".docx"]: _docx,
    MEDIA_TYPES[".json"]: _json,
}
