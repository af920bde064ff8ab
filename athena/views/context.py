"""Context: a session's notes, and retrieval-only queries with their scores."""

from __future__ import annotations

import streamlit as st

from athena import ui

st.title("Context")
gw = ui.gateway()
session = ui.session_picker()

st.subheader(f"Session context · {session}")
items = ui.attempt(lambda: gw.context(session), "load the context")
for item in items or []:
    st.markdown(f"- {item}")
if items == []:
    st.caption("Nothing yet.")
note = st.text_area("Add to the context", placeholder="e.g. I am a geologist; keep answers short")
add, clear = st.columns(2)
added = add.button("Add", disabled=not note.strip())
if added and ui.attempt(lambda: gw.add_context(session, note.strip()), "add it") is not None:
    st.rerun()
confirm = clear.checkbox("Yes, clear this session's context and conversation")
if clear.button("Clear context", disabled=not confirm):
    ui.attempt(lambda: gw.clear_context(session), "clear it")
    st.rerun()

st.subheader("Retrieval only")
text = st.text_input("Search the documents")
mode = st.radio("Mode", ["hybrid", "dense", "bm25"], horizontal=True)
EXPAND = {
    "none": "the passages found",
    "neighbours": "each with the chunks beside it",
    "graph": "and passages of related documents",
}
# Kept outside the widget: a widget's own state is dropped on pages that do not show it,
# and the Chat page reads this choice.
st.session_state.expand = st.radio(
    "Expand (searches here and chat answers)",
    list(EXPAND),
    index=list(EXPAND).index(st.session_state.expand),
    format_func=lambda key: f"{key}: {EXPAND[key]}",
    horizontal=True,
)
top_k = st.slider("Passages", 1, 20, 5)
if text:
    passages = ui.attempt(
        lambda: gw.query(
            session, text, mode, top_k, st.session_state.collection, st.session_state.expand
        ),
        "search",
    )
    if passages == []:
        st.info("No passage matches.")
    best = max((p.score for p in passages or []), default=0) or 1
    for passage in passages or []:
        how = "" if passage.found_by == "search" else f" · by {passage.found_by}"
        st.markdown(f"**{passage.n}. {passage.filename}** · score {passage.score:.4f}{how}")
        st.progress(min(passage.score / best, 1.0))
        st.caption(passage.text[:400])
