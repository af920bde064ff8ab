"""Athena's entry point: ``streamlit run athena/app.py`` (``olympus up`` does it)."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# streamlit runs this file as a script: make the project importable as packages
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from athena import ui

st.set_page_config(page_title="Olympus · Athena", page_icon=":material/school:", layout="wide")
# Streamlit shows its own "Stop" while a script runs, so during every streamed answer, beside
# Athena's Stop, which also cancels the answer in the generator. One Stop button: ours.
st.html("<style>[data-testid='stStatusWidget'] { display: none; }</style>")
ui.defaults()
VIEWS = Path(__file__).parent / "views"  # not "pages/": Streamlit would list that folder itself
navigation = st.navigation(
    [
        st.Page(VIEWS / "chat.py", title="Chat", icon=":material/chat:", default=True),
        st.Page(VIEWS / "upload.py", title="Upload", icon=":material/upload_file:"),
        st.Page(VIEWS / "documents.py", title="Documents", icon=":material/description:"),
        st.Page(VIEWS / "context.py", title="Context", icon=":material/manage_search:"),
        st.Page(VIEWS / "settings.py", title="Settings", icon=":material/settings:"),
    ]
)
navigation.run()
