"""Real documents of every supported format, made with well-kept writers (fpdf2, python-docx);
and a second encoder, for what a change of model does."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import docx
from fpdf import FPDF


def pdf(text: str) -> bytes:
    doc = FPDF()
    doc.add_page()
    doc.set_font("Helvetica", size=12)
    doc.multi_cell(0, 8, text)
    return bytes(doc.output())


def docx_bytes(text: str) -> bytes:
    document = docx.Document()
    for paragraph in text.split("\n"):
        document.add_paragraph(paragraph)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def html(text: str) -> bytes:
    return (
        "<html><head><title>t</title><style>p{color:red}</style>"
        "<script>var hidden = 'never indexed';</script></head>"
        f"<body><h1>Notes</h1><p>{text}</p></body></html>"
    ).encode()


def as_json(text: str) -> bytes:
    return json.dumps({"title": "notes", "body": {"text": text}, "tags": ["x"]}).encode()


# One distinct topic per format: a question about it must rank that file first.
TOPICS = {
    "volcano.txt": (
        "Volcanoes form where magma rises through the crust. Basaltic lava flows from shield "
        "volcanoes such as Mauna Loa, while explosive eruptions build stratovolcanoes.",
        "How do shield volcanoes and lava flows form?",
    ),
    "sourdough.md": (
        "# Sourdough\n\nA sourdough starter is a culture of wild yeast and lactic acid "
        "bacteria. Feed the starter with flour and water before baking bread.",
        "how do I feed a sourdough starter before baking bread",
    ),
    "violin.html": (
        "The violin has four strings tuned in perfect fifths: G, D, A and E. Rosin on the bow "
        "hair lets it grip the strings.",
        "what are the violin strings tuned to",
    ),
    "glacier.pdf": (
        "Glaciers carve U-shaped valleys. Moraines are ridges of rock debris that a glacier "
        "pushes and leaves behind as the ice retreats.",
        "what is a glacial moraine",
    ),
    "chess.docx": (
        "In chess, castling moves the king two squares toward a rook, and the rook jumps over "
        "the king. Neither piece may have moved before.",
        "rules for castling the king in chess",
    ),
    "tides.json": (
        "Ocean tides are caused by the gravitational pull of the Moon and the Sun; spring "
        "tides happen at new and full moon.",
        "what causes spring tides in the ocean",
    ),
}


def render(filename: str, text: str) -> bytes:
    suffix = filename.rsplit(".", 1)[-1]
    return {
        "txt": lambda t: t.encode(),
        "md": lambda t: t.encode(),
        "html": html,
        "pdf": pdf,
        "docx": docx_bytes,
        "json": as_json,
    }[suffix](text)


ZEPHYR = (
    "# The Zephyr valve\n\n"
    "The Zephyr valve was invented by Marta Okonkwo in 1987 in Lagos. "
    "It regulates the flow of cooling water in small hydroelectric turbines. "
    "Each Zephyr valve is tested at a pressure of 40 bar before it leaves the factory."
)
"""A made-up fact, so an answer can only come from the document (chat, Athena, browser)."""


def docx_bomb(inflated_mb: int) -> bytes:
    """A real DOCX whose document.xml inflates to ``inflated_mb`` MB and more (one run of a
    letter: it compresses ~1000:1)."""
    source = zipfile.ZipFile(io.BytesIO(render("chess.docx", "a real document")))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bomb:
        for part in source.infolist():
            body = source.read(part)
            if part.filename == "word/document.xml":
                filler = b"<w:p><w:r><w:t>" + b"A" * (inflated_mb << 20) + b"</w:t></w:r></w:p>"
                body = body.replace(b"<w:body>", b"<w:body>" + filler, 1)
            bomb.writestr(part, body)
    return out.getvalue()


def fine_tuned_encoder(folder: Path) -> Path:
    """The packaged encoder copied into ``folder`` with other weights (one byte of the first MiB
    changed): another model of the same size and config, as a fine-tune would be."""
    from workers.embedder.encoder import default_model_path

    shutil.copytree(default_model_path(), folder)
    weights = next(f for f in folder.iterdir() if f.name.endswith((".safetensors", ".bin")))
    data = bytearray(weights.read_bytes())
    data[1 << 19] ^= 0xFF
    weights.write_bytes(bytes(data))
    return folder
