import pytest

from schemas.formats import media_type_of
from tests.support.samples import TOPICS, docx_bomb, render
from workers.embedder.extract import ExtractionError, Reader, ReadLimits, extract_text

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("filename", sorted(TOPICS))
def test_every_format_yields_its_text(filename):
    text, _ = TOPICS[filename]
    extracted = extract_text(render(filename, text), media_type_of(filename))
    first_words = " ".join(text.split("\n")[-1].split()[:4])
    assert first_words in " ".join(extracted.text.split())
    assert extracted.markdown == filename.endswith(".md")


def test_html_drops_scripts_and_styles():
    extracted = extract_text(render("a.html", "visible words"), "text/html")
    assert "visible words" in extracted.text
    assert "never indexed" not in extracted.text
    assert "color" not in extracted.text


@pytest.mark.parametrize(
    ("data", "media_type", "reason"),
    [
        (b"%PDF-1.7\n garbage that is not a pdf", "application/pdf", "cannot read"),
        (b"PK\x03\x04 not really a zip", media_type_of("x.docx"), "cannot read"),
        (b"   \n ", "text/plain", "empty"),
        (b"{not json", "application/json", "invalid JSON"),
        (b"\x00\x01\xff\xfe\x00binary", "text/plain", "binary"),
        (b"<html><body><script>x()</script></body></html>", "text/html", "no text"),
    ],
)
def test_unreadable_documents_fail_with_a_reason(data, media_type, reason):
    with pytest.raises(ExtractionError, match=reason):
        extract_text(data, media_type)


def test_a_docx_that_inflates_past_the_limit_is_refused_before_inflating():
    bomb = docx_bomb(100)
    assert len(bomb) < 1024 * 1024  # small on the wire...
    limits = ReadLimits(inflated_bytes=64 << 20)
    with pytest.raises(ExtractionError, match=r"inflates to 100 MB, more than the limit of 64 MB"):
        extract_text(bomb, media_type_of("x.docx"), limits)


async def test_the_reader_outlives_a_document_that_needs_too_much():
    """A document over the reader's memory or time fails with that reason; the next one is
    read by a fresh reader process."""
    huge_html = b"<html><body>" + b"<div><p>deep words</p>" * 400_000 + b"</body></html>"
    reader = Reader(ReadLimits(memory_bytes=300 << 20, inflated_bytes=1 << 30), processes=1)
    try:
        with pytest.raises(ExtractionError, match="needs more than 300 MB"):
            await reader.read(docx_bomb(200), media_type_of("x.docx"))
        after = await reader.read(render("chess.docx", "still reading"), media_type_of("x.docx"))
        assert "still reading" in after.text
    finally:
        reader.close()
    slow = Reader(ReadLimits(timeout_s=0.2), processes=1)
    try:
        with pytest.raises(ExtractionError, match=r"took longer than 0.2s"):
            await slow.read(huge_html, "text/html")
        after = await slow.read(render("a.html", "visible words"), "text/html")
        assert "visible words" in after.text
    finally:
        slow.close()


async def test_a_reader_process_prints_no_parsers_remark(capfd):
    """The reader processes share the embedder's stderr, which is its JSON log: pypdf's
    warnings about a broken PDF were printed there bare."""
    reader = Reader(ReadLimits(), processes=1)
    try:
        with pytest.raises(ExtractionError, match="cannot read"):
            await reader.read(b"%PDF-1.7\n garbage that is not a pdf", "application/pdf")
    finally:
        reader.close()
    assert "EOF marker not found" not in capfd.readouterr().err
