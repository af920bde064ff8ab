"""Text out of documents, with well-kept libraries: pypdf, python-docx, BeautifulSoup.

The formats whose parsers can be made to blow up (a DOCX is a zip: 0.5 MB that inflates to
100 MB of XML; a PDF's streams are compressed; HTML goes through lxml) are read by ``Reader`` in
processes of their own, each with a memory limit, a time limit per document (pebble) and a
limit on what an archive may inflate to. A document over a limit fails with that reason; the
reader process that ran out is replaced and the embedder goes on.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import multiprocessing
import resource
import zipfile
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from schemas.formats import MEDIA_TYPES


class ExtractionError(Exception):
    """The document cannot be read; the reason is shown to the user as the failure."""


@dataclass(frozen=True)
class Extracted:
    text: str
    markdown: bool
    links: tuple[str, ...] = ()
    """Link targets the format marks up (HTML ``href``s); Markdown's are read from ``text``."""


@dataclass(frozen=True)
class ReadLimits:
    memory_bytes: int = 1536 * 1024 * 1024
    timeout_s: float = 120.0
    inflated_bytes: int = 64 * 1024 * 1024  # what the parts of a DOCX may add up to
    archive_parts: int = 10_000


class Reader:
    """``extract_text`` with limits: in-process for plain text, in a reader process for the
    formats in ``ISOLATED``."""

    ISOLATED = frozenset({MEDIA_TYPES[".pdf"], MEDIA_TYPES[".docx"], MEDIA_TYPES[".html"]})

    def __init__(self, limits: ReadLimits, processes: int = 1) -> None:
        self.limits = limits
        self.processes = processes
        self._pool: Any = None  # started with the first document that needs it

    def _readers(self) -> Any:
        if self._pool is None:
            from pebble import ProcessPool

            # spawn: the embedder has torch's threads; a fork of it could inherit a held lock.
            self._pool = ProcessPool(
                max_workers=self.processes,
                initializer=_start_reader,
                initargs=(self.limits.memory_bytes,),
                context=multiprocessing.get_context("spawn"),
            )
        return self._pool

    async def read(self, data: bytes, media_type: str) -> Extracted:
        if media_type not in self.ISOLATED:
            return await asyncio.to_thread(extract_text, data, media_type, self.limits)
        from pebble import ProcessExpired

        future = self._readers().schedule(
            extract_text, (data, media_type, self.limits), timeout=self.limits.timeout_s
        )
        try:
            return await asyncio.wrap_future(future)
        except FutureTimeout:
            raise ExtractionError(
                f"reading the document took longer than {self.limits.timeout_s:g}s"
            ) from None
        except MemoryError:
            raise ExtractionError(self._too_big()) from None
        except ProcessExpired as exc:  # killed (out of memory) or crashed: it ran alone
            raise ExtractionError(f"{self._too_big()} (the reader stopped: {exc})") from None

    def _too_big(self) -> str:
        return f"reading the document needs more than {self.limits.memory_bytes >> 20} MB"

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()  # no new work; the readers leave once idle
            self._pool.join(timeout=5)
            if self._pool.active:
                self._pool.stop()
                self._pool.join(timeout=5)


def _start_reader(memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    # What a parser says of the document it reads (pypdf: "EOF marker not found") is said by the
    # document's failure, if it fails; printed bare on the embedder's stderr, it broke the JSON
    # lines of its log.
    logging.getLogger().addHandler(logging.NullHandler())


def extract_text(data: bytes, media_type: str, limits: ReadLimits | None = None) -> Extracted:
    limits = limits or ReadLimits()
    if not data.strip():
        raise ExtractionError("the document is empty")
    try:
        reader = _READERS[media_type]
    except KeyError:
        raise ExtractionError(f"unsupported format {media_type!r}") from None
    try:
        if media_type == MEDIA_TYPES[".docx"]:
            _check_archive(data, limits)
        text, links = reader(data)
    except (ExtractionError, MemoryError):
        raise
    except Exception as exc:  # every parser has its own error types; the message is what matters
        raise ExtractionError(f"cannot read {media_type} document: {exc}") from exc
    if not text.strip():
        raise ExtractionError("no text found in the document")
    return Extracted(text=text, markdown=media_type == MEDIA_TYPES[".md"], links=links)


def _check_archive(data: bytes, limits: ReadLimits) -> None:
    """Refuse an archive whose parts would inflate past the limits, before inflating any.
    (zipfile stops reading a part at its declared size, so the declared sizes bound it.)"""
    try:
        parts = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except zipfile.BadZipFile as exc:
        raise ExtractionError(f"cannot read the DOCX, not a valid zip archive: {exc}") from None
    if len(parts) > limits.archive_parts:
        raise ExtractionError(
            f"the DOCX has {len(parts)} parts, more than the limit of {limits.archive_parts}"
        )
    inflated = sum(p.file_size for p in parts)
    if inflated > limits.inflated_bytes:
        raise ExtractionError(
            f"the DOCX inflates to {inflated >> 20} MB, more than the limit of "
            f"{limits.inflated_bytes >> 20} MB"
        )


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        if b"\x00" in data:
            raise ExtractionError("the text file is binary, not text") from None
        return data.decode("cp1252", errors="replace")


Read = tuple[str, tuple[str, ...]]
"""A format reader's text, and the link targets its markup holds."""


def _text(read: Callable[[bytes], str]) -> Callable[[bytes], Read]:
    return lambda data: (read(data), ())


def _html(data: bytes) -> Read:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "lxml")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    links = tuple(
        href for a in soup.find_all("a", href=True) if isinstance(href := a.get("href"), str)
    )
    lines = (line.strip() for line in soup.get_text(separator="\n").splitlines())
    return "\n".join(line for line in lines if line), links


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


_READERS: dict[str, Callable[[bytes], Read]] = {
    MEDIA_TYPES[".txt"]: _text(_decode),
    MEDIA_TYPES[".md"]: _text(_decode),
    MEDIA_TYPES[".html"]: _html,
    MEDIA_TYPES[".pdf"]: _text(_pdf),
    MEDIA_TYPES[".docx"]: _text(_docx),
    MEDIA_TYPES[".json"]: _text(_json),
}
