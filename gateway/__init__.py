"""The gateway: HTTP in, messages out, replies streamed back. No model, no database."""
