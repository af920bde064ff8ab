from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class AthenaSettings(BaseSettings):
    """``OLYMPUS_ATHENA_*``: where the gateway is and which key to use (changeable in the UI)."""

    model_config = SettingsConfigDict(env_prefix="OLYMPUS_ATHENA_", extra="ignore")

    gateway_url: str = "http://127.0.0.1:8000"
    api_key: SecretStr | None = Field(default=None, description="empty: <data>/athena.key")
    collection: str = "default"
    port: int = Field(default=8501, ge=0, description="olympus up's default --athena-port")
