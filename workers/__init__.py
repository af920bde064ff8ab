"""Olympus workers: Hephaestus (embedder) and H.A.D.E.S. (indexer)."""
