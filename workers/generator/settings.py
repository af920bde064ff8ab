from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.messages import MAX_NEW_TOKENS, MAX_TOP_K


class GeneratorSettings(BaseSettings):
    """``OLYMPUS_GENERATOR_*``."""

    model_config = SettingsConfigDict(env_prefix="OLYMPUS_GENERATOR_", extra="ignore")

    backend: Literal["transformers", "llamacpp", "openai"] = Field(
        default="transformers",
        description="transformers: the model in this process, batched (every answer moves "
        "at once), GPU and bitsandbytes when present; llamacpp: the GGUF in this process "
        "through llama.cpp, one answer at a time (pip install 'olympus[llamacpp]'); openai: an "
        "OpenAI-compatible server (vLLM, TGI, Ollama, llama.cpp, a hosted API)",
    )

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
    prompt_passages: Annotated[int, Field(ge=0, le=MAX_TOP_K)] | Literal["auto"] = Field(
        default="auto",
        description="the most retrieved passages a prompt quotes, best first; 0: as many as "
        "fit; auto: 2 for the packaged SmolLM2-135M (as right from two, twice as soon), as "
        "many as fit for any other model",
    )
    max_batch: int = Field(default=8, ge=1, le=256, description="answers generated together")
    cancel_grace_s: float = Field(
        default=10.0, ge=0, description="how long a disconnected answer waits for a resume"
    )
    threads: int = Field(default=0, ge=0, description="torch threads; 0: all cores")
    openai_base_url: str = Field(
        default="",
        description="openai backend: the server's API root, e.g. http://vllm:8000/v1",
    )
    openai_model: str = Field(default="", description="openai backend: the model to ask for")
    openai_api_key: SecretStr = Field(
        default=SecretStr(""), description="openai backend: its key (empty: none is sent)"
    )
    openai_concurrency: int = Field(
        default=16, ge=1, le=1024, description="openai backend: answers in flight at once"
    )
    openai_connect_s: float = Field(
        default=5.0, gt=0, description="openai backend: how long connecting may take"
    )
    openai_idle_s: float = Field(
        default=25.0,
        gt=0,
        description="openai backend: the longest silence of an answering server (first token "
        "included) before the answer ends with an error naming it; below the gateway's "
        "OLYMPUS_GATEWAY_CHAT_IDLE_TIMEOUT_S",
    )
    tokenizer: str = Field(
        default="",
        description="openai backend: the tokenizer that measures prompts against "
        "context_tokens (a path or id); empty: the packaged model's, an estimate",
    )

    @model_validator(mode="after")
    def _complete(self) -> GeneratorSettings:
        if self.backend == "openai":
            missing = [
                f"OLYMPUS_GENERATOR_{name.upper()}"
                for name in ("openai_base_url", "openai_model")
                if not getattr(self, name)
            ]
            if missing:
                raise ValueError(
                    f"the openai backend needs {' and '.join(missing)}: the server to send "
                    "answers to and the model it serves"
                )
            if not self.openai_base_url.startswith(("http://", "https://")):
                raise ValueError(
                    "OLYMPUS_GENERATOR_OPENAI_BASE_URL must start with http:// or https://, "
                    f"not {self.openai_base_url!r}"
                )
        return self
