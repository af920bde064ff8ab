"""Hephaestus, the generator: a causal LM that streams grounded answers."""
