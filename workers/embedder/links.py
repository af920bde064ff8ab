"""Links and references a document makes to others, for H.A.D.E.S. to relate them.

Where a link is marked up, the format's own parser finds it: BeautifulSoup's ``a[href]`` for
HTML (in the reader process, with the rest of the page) and markdown-it-py's link tokens for
Markdown (inline and reference links alike). Plain mentions in any text — a URL, or a filename
with an extension Olympus reads — are found by two regular expressions: no library finds "a
filename in prose", and the patterns are bounded (no nested repetition).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from urllib.parse import unquote, urldefrag, urlsplit

from schemas.formats import MEDIA_TYPES
from schemas.messages import FoundLink

_URL = re.compile(r"https?://[^\s<>\"'()\[\]{}]{1,2000}")
_EXTENSIONS = "|".join(sorted(ext.lstrip(".") for ext in MEDIA_TYPES))
_FILENAME = re.compile(rf"(?<![\w/.-])[\w][\w.-]{{0,200}}\.(?:{_EXTENSIONS})\b", re.IGNORECASE)
_NOT_DOCUMENTS = ("mailto:", "javascript:", "data:", "tel:", "ftp:", "file:")
_TRAILING = ".,;:!?"


def markdown_links(text: str) -> list[str]:
    """The targets of a Markdown text's links, in order."""
    from markdown_it import MarkdownIt

    targets: list[str] = []
    for token in MarkdownIt("commonmark").parse(text):
        for child in token.children or ():
            if child.type == "link_open":
                href = child.attrGet("href")
                if isinstance(href, str):
                    targets.append(href)
    return targets


def mentions(text: str) -> list[str]:
    """URLs and filenames named in running text."""
    found = [m.group(0).rstrip(_TRAILING) for m in _URL.finditer(text)]
    without_urls = _URL.sub(" ", text)
    return found + [m.group(0) for m in _FILENAME.finditer(without_urls)]


def as_link(target: str) -> FoundLink | None:
    """A link's target as what names a document: an http(s) URL without its fragment, or the
    last part of a relative path (``../guide/setup.md?x#y`` -> ``setup.md``); None for what
    names no document (an anchor in the page, ``mailto:``, ``javascript:``)."""
    target = target.strip()
    if not target or target.startswith("#") or target.lower().startswith(_NOT_DOCUMENTS):
        return None
    parts = urlsplit(target)
    if parts.scheme in ("http", "https") and parts.netloc:
        url = urldefrag(target).url
        return FoundLink(ref=url, kind="url") if len(url) <= 2048 else None
    if parts.scheme or parts.netloc:
        return None
    name = posixpath.basename(unquote(parts.path))
    if not name or name in (".", "..") or len(name) > 255:
        return None
    return FoundLink(ref=name, kind="name")


def found_links(targets: Iterable[str], limit: int) -> tuple[list[FoundLink], int]:
    """Each distinct document link once, in order of appearance, at most ``limit`` of them;
    and how many more there were."""
    distinct: dict[FoundLink, None] = {}
    for target in targets:
        link = as_link(target)
        if link is not None:
            distinct.setdefault(link, None)
    links = list(distinct)
    return links[:limit], max(0, len(links) - limit)
