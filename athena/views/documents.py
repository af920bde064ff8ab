"""Documents: status, chunks, collection and date; filter, search, inspect, retry, delete."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from athena import ui

st.title("Documents")
gw = ui.gateway()

left, middle, right = st.columns(3)
name = left.text_input("Search by name")
collection = middle.text_input("Collection", value="")
status = right.selectbox("Status", ["any", "queued", "processing", "indexed", "failed"])
docs = ui.attempt(
    lambda: gw.documents(collection or None, None if status == "any" else status),
    "list the documents",
)
if docs is not None:
    docs = [d for d in docs if name.lower() in d.filename.lower()]
    st.caption(f"{len(docs)} documents")
    st.dataframe(
        [
            {
                "name": d.filename,
                "status": d.status,
                "chunks": d.chunk_count,
                "collection": d.collection,
                "updated": dt.datetime.fromtimestamp(d.updated_at).strftime("%Y-%m-%d %H:%M"),
                "error": d.error or "",
            }
            for d in docs
        ],
        hide_index=True,
        width="stretch",
    )
    if docs:
        labels = {f"{d.filename} · {d.collection} · {d.doc_id}": d for d in docs}
        chosen = labels[st.selectbox("Open a document", list(labels))]
        chunks = ui.attempt(lambda: gw.chunks(chosen.doc_id), "load its chunks") or []
        st.subheader(f"{chosen.filename}: {len(chunks)} chunks")
        for chunk in chunks:
            with st.expander(f"Chunk {chunk['position'] + 1}"):
                st.text(chunk["text"])
        st.subheader("Related documents")
        depth = st.slider("Hops", 1, 3, 1, help="how far to follow relations, either way")
        around = ui.attempt(lambda: gw.graph(chosen.doc_id, depth), "load its relations")
        related = ui.attempt(lambda: gw.related(chosen.doc_id), "rank its related documents")
        if around and len(around["nodes"]) > 1:
            st.graphviz_chart(ui.dot(around, chosen.doc_id))
        if related:
            st.dataframe(
                [
                    {
                        "document": item["document"]["filename"],
                        "score": item["score"],
                        "how": ", ".join(sorted({r["kind"] for r in item["relations"]})),
                    }
                    for item in related
                ],
                hide_index=True,
                width="stretch",
            )
        elif around is not None:
            st.caption("No related documents yet: links, references, declared relations and "
                       "similar documents show here.")  # fmt: skip
        if chosen.status == "failed":
            st.error(f"{chosen.filename} failed: {chosen.error}")
            if st.button("Retry", help="process it again from what the bus holds, no upload"):
                again = ui.attempt(lambda: gw.retry(chosen.doc_id), "retry it")
                if again:
                    st.success(f"{chosen.filename} is {again} again.")
        sure = st.checkbox(f"Yes, delete {chosen.filename} with its chunks and vectors")
        pressed = st.button("Delete", type="primary", disabled=not sure)
        if pressed and ui.attempt(lambda: gw.delete(chosen.doc_id), "delete it"):
            st.success(f"{chosen.filename} is being deleted.")
