"""Links and references found in documents (workers/embedder/links.py)."""

from __future__ import annotations

from schemas.formats import MEDIA_TYPES
from schemas.messages import FoundLink
from tests.support.samples import render
from workers.embedder.extract import extract_text
from workers.embedder.links import as_link, found_links, markdown_links, mentions

DOCX = MEDIA_TYPES[".docx"]


def test_markdown_inline_and_reference_links_are_found():
    text = (
        "# Zeus\n\nSee [Hera](../gods/hera.md#wife) and [the sea][sea].\n\n"
        "`[not](a-link.md)` in code is not a link.\n\n[sea]: https://example.org/poseidon\n"
    )
    assert markdown_links(text) == ["../gods/hera.md#wife", "https://example.org/poseidon"]


def test_html_hrefs_come_from_the_reader():
    html = (
        b"<html><body><p>Read <a href='athena.html'>Athena</a>, "
        b"<a href='mailto:x@example.org'>mail</a>, <a href='#top'>top</a>.</p></body></html>"
    )
    extracted = extract_text(html, "text/html")
    assert extracted.links == ("athena.html", "mailto:x@example.org", "#top")
    assert "Athena" in extracted.text


def test_mentions_in_running_text():
    text = "Details are in handbook.pdf, see also https://example.org/a/b?x=1, and notes.md."
    assert mentions(text) == ["https://example.org/a/b?x=1", "handbook.pdf", "notes.md"]
    assert mentions("version 1.2 of report.exe and an e.g. abbreviation") == []


def test_a_link_names_a_document_by_url_or_by_its_last_path_part():
    assert as_link("https://example.org/docs/zeus.md#top") == FoundLink(
        ref="https://example.org/docs/zeus.md", kind="url"
    )
    assert as_link("../guide/set%20up.md?raw=1#x") == FoundLink(ref="set up.md", kind="name")
    for nothing in ("#top", "mailto:a@b.c", "javascript:alert(1)", "data:text/html,x", "", "..",
                    "ftp://example.org/x", "//example.org"):  # fmt: skip
        assert as_link(nothing) is None, nothing


def test_links_are_distinct_in_order_and_capped_with_a_count():
    targets = [f"doc{i}.md" for i in range(10)] + ["doc0.md", "#x"]
    links, dropped = found_links(targets, limit=4)
    assert [link.ref for link in links] == ["doc0.md", "doc1.md", "doc2.md", "doc3.md"]
    assert dropped == 6


def test_a_docx_mentions_are_read_too():
    extracted = extract_text(render("a.docx", "See zeus.md for more."), DOCX)
    assert "zeus.md" in mentions(extracted.text)
