"""Upload: drop files; each shows its progress until it is indexed or failed."""

from __future__ import annotations

import streamlit as st

from athena import ui
from olympus.client import TERMINAL, Document, GatewayError
from schemas.formats import MEDIA_TYPES  # what the gateway accepts (plain data, no bus)

st.title("Upload")
gw = ui.gateway()
ICONS = {
    "queued": ":material/schedule:",
    "processing": ":material/autorenew:",
    "indexed": ":material/check_circle:",
    "failed": ":material/error:",
    "deleted": ":material/delete:",
}

files = st.file_uploader(
    "Drop files here",
    type=[extension.lstrip(".") for extension in MEDIA_TYPES],
    accept_multiple_files=True,
)


def show(line, filename: str, doc: Document) -> None:
    """One file's progress line: icon, name, status, chunks once known, the reason it failed."""
    chunks = f" ({doc.chunk_count} chunks)" if doc.chunk_count else ""
    note = f": {doc.error}" if doc.error else ""
    line.write(f"{ICONS.get(doc.status, '')} **{filename}** — {doc.status}{chunks}{note}")


collection = st.text_input("Collection", value=st.session_state.collection)
if st.button("Upload", type="primary", disabled=not files):
    accepted = ui.attempt(
        lambda: gw.upload([(f.name, f.getvalue()) for f in files or []], collection),
        "upload the files",
    )
    if accepted:
        lines = {doc.doc_id: st.empty() for doc in accepted}
        for doc in accepted:
            show(lines[doc.doc_id], doc.filename, doc)
        final = {}
        for doc in accepted:
            current = doc
            try:
                for current in gw.follow(doc.doc_id):
                    show(lines[doc.doc_id], doc.filename, current)
                    if current.status in TERMINAL:
                        break
            except GatewayError as exc:
                lines[doc.doc_id].error(f"{doc.filename}: lost track of it: {exc}")
            final[doc.doc_id] = current.status
        indexed = sum(1 for s in final.values() if s == "indexed")
        failed = sum(1 for s in final.values() if s == "failed")
        if failed:
            st.warning(f"Done: {indexed} indexed, {failed} failed.")
        else:
            st.success(f"Done: {indexed} of {len(final)} indexed.")
