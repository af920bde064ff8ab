"""Settings: the gateway, the API key (never shown), the collection."""

from __future__ import annotations

import streamlit as st

from athena import ui
from olympus.client import Gateway, GatewayError

st.title("Settings")
ui.defaults()
url = st.text_input("Gateway URL", value=st.session_state.gateway_url)
key = st.text_input(
    "API key",
    value="",
    type="password",
    placeholder="set" if st.session_state.api_key else "paste an API key",
    help="Kept only in this browser session. Empty: keep the current key.",
)
collection = st.text_input("Collection", value=st.session_state.collection)
if st.button("Save and check", type="primary"):
    st.session_state.gateway_url = url
    st.session_state.collection = collection
    if key:
        st.session_state.api_key = key
        st.session_state.own_gateway = None  # the visitor's own key, for the URL they chose
    if not ui.key_for(url):
        st.error(
            "Athena's own API key is only sent to its own gateway: paste an API key for "
            f"{url} to use that gateway."
        )
        st.stop()
    try:
        ready = Gateway(url, ui.key_for(url)).ready()
    except GatewayError as exc:
        st.error(f"Could not check the gateway: {exc}")
    else:
        if ready.get("ready"):
            st.success("Connected: the gateway and every worker are ready.")
        else:
            down = [k for k, ok in ready.get("checks", {}).items() if not ok]
            st.warning(f"Connected, but not ready: {', '.join(down)}")
