from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    """``OLYMPUS_GATEWAY_*``."""

    model_config = SettingsConfigDict(env_prefix="OLYMPUS_GATEWAY_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = Field(
        default="",
        description="the address clients use (https://olympus.example.org); empty: the request's",
    )
    trusted_proxies: str = Field(
        default="",
        description="reverse proxies (addresses, CIDRs or *) whose X-Forwarded-For/-Proto are "
        "believed; empty: nobody's, a client's address is the connection's",
    )
    api_keys_file: Path | None = Field(default=None, description="empty: <data>/api_keys.json")
    max_upload_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_files_per_request: int = Field(
        default=100, ge=1, description="files one upload may carry (413 above it)"
    )
    max_queued_per_tenant: int = Field(
        default=200,
        ge=1,
        description="documents one tenant may have waiting to be indexed (429 above it): the "
        "ingest queue is first come, first served, so this bounds how long one tenant's flood "
        "holds up the others",
    )
    max_request_bytes: int = Field(
        default=1024 * 1024, ge=16 * 1024, description="largest body of any route but uploads"
    )
    max_query_chars: int = Field(default=2000, ge=1, le=8192)
    request_timeout_s: float = Field(default=10.0, gt=0)
    keep_alive_s: int = Field(
        default=75,
        ge=6,
        description="an idle client connection stays open this long: longer than any Retry-After "
        "the gateway gives, so a client that waits as told does not race its connection's close",
    )
    access_log: bool = Field(default=False, description="one log line per HTTP request")
    rate_limit: str = Field(
        default="50/second;1000/minute",
        description="requests per API key (the limits library's syntax; empty: no limit)",
    )
    auth_failure_limit: str = Field(
        default="20/minute", description="failed authentications per client address"
    )
    rate_limit_storage: str = Field(
        default="memory://",
        description="where the counts live: memory:// per gateway, redis://… shared by replicas",
    )
    max_streams_per_key: int = Field(
        default=8, ge=1, description="answers streaming at once per API key, through all gateways"
    )
    sse_max_s: float = Field(default=3600.0, gt=0, description="longest a progress stream lasts")
    chat_idle_timeout_s: float = Field(
        default=30.0, gt=0, description="a streamed answer silent this long ends with an error"
    )
    sse_ping_s: float = Field(
        default=15.0,
        gt=0,
        description="a comment line this often keeps a quiet event stream open through proxies",
    )
    chat_probe_s: float = Field(
        default=3.0,
        gt=0,
        description="a streamed answer silent this long: ask whether its generator still lives",
    )
