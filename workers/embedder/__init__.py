"""Hephaestus, the embedder: parse, chunk and embed documents; embed queries."""
