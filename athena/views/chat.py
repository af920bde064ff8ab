"""Chat: ask in a session; the answer streams in; each citation opens its passage."""

from __future__ import annotations

import streamlit as st

from athena import ui
from olympus.client import GatewayError, Passage

st.title("Chat")
gw = ui.gateway()
session = ui.session_picker()


def show_sources(sources: list[Passage], cited: list[int]) -> None:
    """Each cited passage as an expander: document name, score, the passage itself."""
    shown = [s for s in sources if s.n in cited] or sources
    if not shown:
        st.caption("No sources were used for this answer.")
        return
    label = "Cited" if any(s.n in cited for s in sources) else "Retrieved (not cited)"
    st.caption(f"{label} sources")
    for source in shown:
        with st.expander(f"[{source.n}] {source.filename} · score {source.score:.3f}"):
            st.text(source.text)  # the passage as it is, not rendered as markdown


def stop() -> None:
    inflight = st.session_state.get("inflight")
    if inflight:
        ui.attempt(lambda: gw.cancel(inflight[0], inflight[1]), "stop the answer")
        st.session_state.inflight = None


# A stop pressed while an answer streamed: this rerun cancels it (see stop()).
if st.session_state.get("inflight"):
    stop()

for turn in ui.attempt(lambda: gw.history(session), "load the conversation") or []:
    st.chat_message("user").write(turn.question)
    with st.chat_message("assistant"):
        st.write(turn.answer)
        show_sources(turn.sources, [s.n for s in turn.sources])

question = st.chat_input("Ask about your documents")
if question:
    st.chat_message("user").write(question)
    with st.chat_message("assistant"):
        stop_slot = st.empty()  # the stop button, there only while the answer streams
        stop_slot.button("Stop", icon=":material/stop_circle:", on_click=stop, key="stop")
        state: dict = {"sources": [], "cited": [], "error": None, "finish": None}

        def started(request_id: str) -> None:
            st.session_state.inflight = (session, request_id)  # Stop works from now on

        def tokens():
            try:
                for event in gw.chat(
                    session,
                    question,
                    collection=st.session_state.collection,
                    on_start=started,
                    expand=st.session_state.expand,
                ):
                    if event.event == "sources":
                        state["sources"] = event.sources
                    elif event.event == "token":
                        yield event.data["text"]
                    elif event.event == "done":
                        state["cited"] = event.data.get("cited", [])
                        state["finish"] = event.data.get("finish_reason")
                    elif event.event == "error":
                        state["error"] = (event.data.get("error") or {}).get("message")
            except GatewayError as exc:
                state["error"] = str(exc)
            # The answer ended: nothing is left to stop. Not in a `finally`: a click on Stop
            # makes Streamlit abandon this run and close this generator *before* the next run
            # calls stop(), which must still find the answer to cancel.
            st.session_state.inflight = None

        st.write_stream(tokens())
        stop_slot.empty()
        if state["error"]:
            st.error(f"The answer failed: {state['error']}")
        elif state["finish"] == "cancelled":
            st.warning("Stopped.")
        show_sources(state["sources"], state["cited"])
