"""Athena: the Streamlit front end. It talks only HTTP to the gateway."""
