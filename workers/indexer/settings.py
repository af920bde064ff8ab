from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class IndexerSettings(BaseSettings):
    """``OLYMPUS_INDEXER_*``. Store locations default to files in ``OLYMPUS_DATA_DIR``."""

    model_config = SettingsConfigDict(env_prefix="OLYMPUS_INDEXER_", extra="ignore")

    milvus_uri: str = Field(
        default="", description="Milvus Lite folder (*.db) or server URI; empty: <data>/milvus.db"
    )
    milvus_token: SecretStr | None = None
    milvus_collection: str = "olympus_chunks"
    dims: int = Field(default=384, ge=1, description="must match the embedder's model")
    hybrid_candidates: int = Field(default=100, ge=1, description="per list, before RRF fusion")
    graph_backend: Literal["sqlite", "arango"] = "sqlite"
    sqlite_path: Path | None = Field(default=None, description="empty: <data>/graph.sqlite3")
    arango_url: str = "http://127.0.0.1:8529"
    arango_database: str = "olympus"
    arango_user: str = "root"
    arango_password: SecretStr | None = None
    write_batch: int = Field(default=64, ge=1, description="documents written per store call")
    flush_idle_s: float = Field(default=1.0, ge=0, description="seal Milvus segments when idle")
    flush_rows: int = Field(
        default=256, ge=1, description="Milvus Lite: seal after this many chunks, idle or not"
    )
    concurrency: int = Field(default=64, ge=1)
    history_turns: int = Field(
        default=6, ge=0, le=100, description="a session's recent turns a chat answer sees"
    )
    similar_documents: int = Field(
        default=3, ge=0, le=20, description="nearest documents each is related to; 0: none"
    )
    graph_weight: float = Field(
        default=0.5, ge=0, le=1, description="expand=graph: the related passages' fusion weight"
    )
