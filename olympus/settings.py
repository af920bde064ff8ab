"""Settings every process shares. Each service adds its own class with its own env prefix."""

from __future__ import annotations

import contextlib
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, TypedDict

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class NatsConnectOptions(TypedDict, total=False):
    """What ``nats.connect`` and FastStream's ``NatsBroker`` take to reach the bus."""

    servers: list[str]
    user: str
    password: str
    inbox_prefix: str
    tls: ssl.SSLContext


def inbox_prefix(user: str) -> str:
    """``user``'s reply inboxes (nats-py ``inbox_prefix``, Go ``CustomInboxPrefix``): each
    user may read its own alone (``olympus.access``), so no one overhears another's replies."""
    return f"_INBOX_{user}"


class CommonSettings(BaseSettings):
    """``OLYMPUS_*``: where the bus and the data folder are, and how failed work is retried."""

    model_config = SettingsConfigDict(env_prefix="OLYMPUS_", extra="ignore")

    environment: Literal["local", "production"] = "local"
    data_dir: Path = Path(".olympus")
    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_tls_ca: Path | None = Field(
        default=None,
        description="the CA that signed the NATS servers' certificates: connect over TLS and "
        "trust only it (production requires it)",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    max_deliver: int = Field(default=5, ge=1, le=100)
    retry_backoff_s: tuple[float, ...] = (1.0, 5.0, 15.0, 30.0)
    ack_wait_s: float = Field(default=60.0, gt=1)
    drain_s: float = Field(
        default=10.0,
        ge=0,
        description="a stopping worker lets the work in hand finish this long, then hands the "
        "rest back to the bus (a container's stop grace period must be longer)",
    )
    stream_replicas: int = Field(default=1, ge=1, le=5, description="3 on a 3-node cluster")
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024 * 1024)
    metrics_port: int = Field(default=0, ge=0, description="a worker's Prometheus port; 0: none")
    metrics_host: str = "127.0.0.1"
    heartbeat_file: Path | None = Field(
        default=None,
        description="a worker touches this file every few seconds while it is started and "
        "connected to the bus: what a container's healthcheck reads (`python -m olympus.alive`)",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _refuse_anonymous_bus_in_production(self) -> CommonSettings:
        if self.environment == "production" and not (self.nats_user and self.nats_password):
            raise ValueError(
                "OLYMPUS_NATS_USER and OLYMPUS_NATS_PASSWORD must be set in production"
            )
        if self.environment == "production" and self.nats_tls_ca is None:
            raise ValueError(
                "OLYMPUS_NATS_TLS_CA must be set in production: the bus carries every document "
                "and answer, and its passwords, so it runs over TLS"
            )
        return self

    def nats_connect_options(self) -> NatsConnectOptions:
        servers = [url.strip() for url in self.nats_url.split(",") if url.strip()]
        options: NatsConnectOptions = {"servers": servers}
        if self.nats_user and self.nats_password:
            options["user"] = self.nats_user
            options["password"] = self.nats_password.get_secret_value()
            options["inbox_prefix"] = inbox_prefix(self.nats_user)
        if self.nats_tls_ca is not None:
            options["tls"] = ssl.create_default_context(cafile=str(self.nats_tls_ca))
        return options


@contextlib.contextmanager
def refuse_to_start_on_bad_settings(service: str) -> Iterator[None]:
    """Around a process's start: a setting that is missing or wrong ends it with one line
    that names it (exit status 2), not a traceback."""
    try:
        yield
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(map(str, e['loc'])) + ': ' if e['loc'] else ''}"
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        sys.stderr.write(f"{service} cannot start: {exc.title}: {reasons}\n")
        raise SystemExit(2) from None
