"""What every page shares: the gateway client from the settings, the session picker, errors."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import streamlit as st

from athena.settings import AthenaSettings
from olympus.client import Gateway, GatewayError
from olympus.settings import CommonSettings
from schemas.messages import CHAT_EXPAND

T = TypeVar("T")
SESSION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def defaults() -> None:
    """Fill the settings once per browser session: from the environment, else the data folder."""
    if "gateway_url" in st.session_state:
        return
    settings = AthenaSettings()
    key = settings.api_key.get_secret_value() if settings.api_key else ""
    if not key:
        stored = Path(CommonSettings().data_dir) / "athena.key"
        key = stored.read_text().strip() if stored.is_file() else ""
    st.session_state.gateway_url = settings.gateway_url
    st.session_state.api_key = key
    # Athena's own key goes to Athena's own gateway only, whatever URL a visitor types.
    st.session_state.own_gateway = settings.gateway_url if key else None
    st.session_state.collection = settings.collection
    st.session_state.setdefault("sessions", ["default"])
    st.session_state.setdefault("session_id", "default")
    st.session_state.setdefault("expand", CHAT_EXPAND)


def gateway() -> Gateway:
    defaults()
    return Gateway(st.session_state.gateway_url, key_for(st.session_state.gateway_url))


def key_for(url: str) -> str:
    """The key to send to ``url``: none, when it is Athena's own key and ``url`` is not its
    gateway (a visitor must not make Athena hand its key to a server of their choosing)."""
    own = st.session_state.get("own_gateway")
    if own is not None and url.rstrip("/") != own.rstrip("/"):
        return ""
    return str(st.session_state.api_key)


def attempt(call: Callable[[], T], what: str) -> T | None:
    """Run a gateway call; on failure show a readable message and return None."""
    try:
        return call()
    except GatewayError as exc:
        st.error(f"Could not {what}: {exc}")
        return None


def session_picker() -> str:
    """Pick a session or start one; the choice is kept across pages."""
    defaults()
    sessions: list[str] = st.session_state.sessions
    with st.sidebar:
        current = st.selectbox(
            "Session",
            sessions,
            index=sessions.index(st.session_state.session_id),
            key="session_select",
        )
        new = st.text_input("New session", placeholder="a name, e.g. research-1", key="new_sess")
        if st.button("Start session", key="start_session") and new:
            if not SESSION_ID.match(new):
                st.error("A session name uses letters, digits and . _ : - (at most 128).")
            else:
                if new not in sessions:
                    sessions.append(new)
                current = new
    st.session_state.session_id = current
    return current


def dot(graph: dict[str, Any], centre: str) -> str:
    """A document's neighbourhood (``/rag/documents/{id}/graph``) as Graphviz DOT, for
    ``st.graphviz_chart``: documents as boxes, the one asked about filled, relations as arrows
    labelled with their kind (similarity dashed)."""

    def quoted(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["digraph {", "rankdir=LR;", 'node [shape=box, style="rounded"];']
    for node in graph["nodes"]:
        filled = ', style="rounded,filled", fillcolor="#dbe8ff"' if node["doc_id"] == centre else ""
        lines.append(f"{quoted(node['doc_id'])} [label={quoted(node['filename'])}{filled}];")
    for edge in graph["edges"]:
        dashed = ", style=dashed" if edge["origin"] == "similar" else ""
        lines.append(
            f"{quoted(edge['source'])} -> {quoted(edge['target'])} "
            f"[label={quoted(edge['kind'])}{dashed}];"
        )
    lines.append("}")
    return "\n".join(lines)
