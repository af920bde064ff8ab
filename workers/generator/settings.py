from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.messages import MAX_NEW_TOKENS


class GeneratorSettings(BaseSettings):
    """``OLYMPUS_GENERATOR_*``."""

    model_config = SettingsConfigDict(env_prefix="OLYMPUS_GENERATOR_", extra="ignore")

    model: str = Field(
        default="",
        description="causal LM path or id; empty: packaged SmolLM2-135M-Instruct (GGUF, "
        "converted once to safetensors under <data>/models)",
    )
    models_dir: Path | None = Field(default=None, description="empty: <data>/models")
    device: str = Field(default="auto", description="auto (cuda when present), cpu, cuda, cuda:1")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="auto: float16 on GPU, bfloat16 on a CPU with bf16, else fp32"
    )
    quantization: Literal["none", "4bit", "8bit"] = Field(
        default="none", description="bitsandbytes quantization (GPU only)"
    )
    max_new_tokens: int = Field(
        default=256, ge=1, le=MAX_NEW_TOKENS, description="answer length when the caller names none"
    )
    temperature: float = Field(default=0.0, ge=0, le=2, description="0: greedy")
    top_p: float = Field(default=0.9, gt=0, le=1)
    context_tokens: int = Field(
        default=2048, ge=256, description="prompt + answer budget (capped by the model's window)"
    )
    max_batch: int = Field(default=8, ge=1, le=256, description="answers generated together")
    cancel_grace_s: float = Field(
        default=10.0, ge=0, description="how long a disconnected answer waits for a resume"
    )
    threads: int = Field(default=0, ge=0, description="torch threads; 0: all cores")
