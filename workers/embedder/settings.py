from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.messages import MAX_FOUND_LINKS


class EmbedderSettings(BaseSettings):
    """``OLYMPUS_EMBEDDER_*``."""

    model_config = SettingsConfigDict(env_prefix="OLYMPUS_EMBEDDER_", extra="ignore")

    model: str = Field(
        default="", description="Hugging Face encoder path or id; empty: packaged all-MiniLM-L6-v2"
    )
    device: str = Field(default="auto", description="auto (cuda when present), cpu, cuda, cuda:1")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="auto: float16 on GPU, bfloat16 on a CPU with bf16, else fp32"
    )
    batch_size: int = Field(default=16, ge=1, le=1024)
    chunk_tokens: int = Field(default=0, ge=0, description="0: the model's maximum length")
    chunk_overlap: int = Field(default=32, ge=0)
    concurrency: int = Field(
        default=128,
        ge=1,
        description="ingest messages handled at once: the more in flight, the more evenly "
        "the encoder's batches fill (64 padded ~9% of what it encoded, 128 ~4%)",
    )
    max_chunks_per_document: int = Field(default=5000, ge=1)
    max_links_per_document: int = Field(
        default=200,
        ge=0,
        le=MAX_FOUND_LINKS,
        description="links found in a document kept as relations; the rest are counted",
    )
    read_memory_mb: int = Field(
        default=1536, ge=256, description="memory a reader process may use for one PDF/DOCX/HTML"
    )
    read_timeout_s: float = Field(default=120.0, gt=0, description="longest one document is read")
    max_inflated_mb: int = Field(
        default=64, ge=1, description="what the parts of a DOCX (a zip) may inflate to"
    )
    readers: int = Field(default=1, ge=1, le=16, description="reader processes for PDF/DOCX/HTML")
    threads: int = Field(default=0, ge=0, description="torch threads in all; 0: all cores")
    lanes: int = Field(
        default=0,
        ge=0,
        le=64,
        description="batches encoded at once, sharing the threads; 0: one per core on a CPU, "
        "1 on a GPU",
    )
