import pytest

from schemas.formats import media_type_of
from tests.support.samples import TOPICS, render
from workers.embedder.extract import ExtractionError, extract_text

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
