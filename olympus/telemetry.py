"""Tracing for every process, in one place: OpenTelemetry into Phoenix (or any OTLP collector).

Off, at no cost, unless ``PHOENIX_COLLECTOR_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.
Spans leave through a batch processor (export never blocks a request) and a redacting exporter:
API keys, bearer tokens and passwords never leave the process, e-mail addresses and configured
patterns are masked, long texts are cut. W3C trace context rides in NATS headers: the workers'
brokers inject and restore it (``olympus.delivery.TracingMiddleware``); the gateway, which
speaks nats-py directly, uses ``inject_headers``.

The span kinds and attribute names are OpenInference's, so Phoenix shows CHAIN, EMBEDDING,
RETRIEVER and LLM spans with their documents, prompts and token counts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, Status, StatusCode
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

_tracer_provider: Any = None
_settings: TelemetrySettings | None = None

# Secrets never leave, whatever the settings say. Each pattern comes with the lower-case words
# one of which any match contains: a text holding none of them is not scanned (a retrieval
# span's ten passages cost ~1.8 ms of regex scanning otherwise, ~0.15 ms with the words).
_Pattern = tuple[tuple[str, ...], re.Pattern[str]]
_ALWAYS: list[_Pattern] = [
    (("bearer",), re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")),
    (("oly_",), re.compile(r"\boly_[A-Za-z0-9_-]{8,}")),
    (
        ("passw", "pwd", "secret", "token", "key"),
        re.compile(r"(?i)\b[\w-]*(password|passwd|pwd|secret|token|api[_-]?key)\b\s*[=:]\s*\S+"),
    ),
]
_EMAIL: _Pattern = (("@",), re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"))
_SECRET_KEYS = ("password", "api_key", "authorization", "token", "secret", "credentials")


class TelemetrySettings(BaseSettings):
    """Where spans go and what they may carry. ``PHOENIX_*``/``OTEL_*`` are the usual names."""

    model_config = SettingsConfigDict(env_prefix="OLYMPUS_TRACE_", extra="ignore")

    endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PHOENIX_COLLECTOR_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OTLP/HTTP collector; empty: tracing off",
    )
    project: str = Field(default="olympus", validation_alias="PHOENIX_PROJECT_NAME")
    sample_ratio: float = Field(default=1.0, ge=0, le=1, description="share of traces kept")
    redact: bool = Field(default=True, description="mask e-mails and the patterns below")
    redact_patterns: list[str] = Field(
        default_factory=list, description="extra regular expressions to mask"
    )
    max_text_chars: int = Field(default=1000, ge=0, description="document text kept per attribute")
    embedding_vectors: bool = Field(
        default=False, description="attach vectors to EMBEDDING spans (large; for drift views)"
    )


def settings() -> TelemetrySettings:
    global _settings
    if _settings is None:
        _settings = TelemetrySettings()
    return _settings


def configure(service: str) -> Any:
    """Start exporting spans if a collector is configured; the tracer provider, or None."""
    global _tracer_provider
    config = settings()
    if not config.endpoint or _tracer_provider is not None:
        return _tracer_provider
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    endpoint = config.endpoint.rstrip("/")
    if not endpoint.endswith("/v1/traces"):
        endpoint += "/v1/traces"
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": f"olympus-{service}", "openinference.project.name": config.project}
        ),
        sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
    )
    exporter = RedactingExporter(OTLPSpanExporter(endpoint=endpoint), Redactor.from_settings())
    # RedactingExporter has SpanExporter's methods without subclassing it: the SDK stays a lazy
    # import for processes that never trace.
    provider.add_span_processor(
        BatchSpanProcessor(cast(SpanExporter, exporter), schedule_delay_millis=1000)
    )
    trace.set_tracer_provider(provider)
    _tracer_provider = provider
    return provider


def tracer(name: str = "olympus") -> trace.Tracer:
    return trace.get_tracer(name)


# --- privacy ----------------------------------------------------------------------------------
class Redactor:
    def __init__(self, mask_emails: bool, patterns: Sequence[str] = ()) -> None:
        self.patterns = list(_ALWAYS)
        if mask_emails:
            self.patterns.append(_EMAIL)
            self.patterns += [((), re.compile(p)) for p in patterns]  # scanned always

    @classmethod
    def from_settings(cls) -> Redactor:
        config = settings()
        return cls(config.redact, config.redact_patterns)

    def text(self, value: str) -> str:
        lower = value.lower()
        for words, pattern in self.patterns:
            if not words or any(word in lower for word in words):
                value = pattern.sub("[redacted]", value)
        return value

    def attributes(self, attributes: Mapping[str, Any]) -> dict[str, Any]:
        clean: dict[str, Any] = {}
        for key, value in attributes.items():
            if key.lower().endswith(_SECRET_KEYS):
                clean[key] = "[redacted]"
            elif isinstance(value, str):
                clean[key] = self.text(value)
            elif isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
                clean[key] = [self.text(v) for v in value]
            else:
                clean[key] = value
        return clean


class RedactingExporter:
    """Wraps an exporter: every span's attributes and events are redacted on the way out."""

    def __init__(self, inner: Any, redactor: Redactor) -> None:
        self.inner = inner
        self.redactor = redactor

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace import Event, ReadableSpan

        clean = [
            ReadableSpan(
                name=span.name,
                context=span.context,
                parent=span.parent,
                resource=span.resource,
                attributes=self.redactor.attributes(span.attributes or {}),
                events=[
                    Event(e.name, self.redactor.attributes(e.attributes or {}), e.timestamp)
                    for e in span.events
                ],
                links=span.links,
                kind=span.kind,
                status=span.status,
                start_time=span.start_time,
                end_time=span.end_time,
                instrumentation_scope=span.instrumentation_scope,
            )
            for span in spans
        ]
        return self.inner.export(clean)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


# --- helpers the services use -----------------------------------------------------------------
def inject_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """The current trace context as NATS headers (W3C ``traceparent``)."""
    headers = dict(headers or {})
    propagate.inject(headers)
    return headers


def cut(text: str) -> str:
    limit = settings().max_text_chars
    return text if len(text) <= limit else text[:limit] + "…"


@contextmanager
def span(name: str, kind: str, **attributes: Any) -> Iterator[Span]:
    """An OpenInference span (``kind``: CHAIN, EMBEDDING, RETRIEVER, LLM) made current."""
    with tracer().start_as_current_span(name) as current:
        if current.is_recording():
            current.set_attribute("openinference.span.kind", kind)
            set_attributes(current, attributes)
        try:
            yield current
        except Exception as exc:
            current.set_status(Status(StatusCode.ERROR, str(exc)))
            raise


def set_attributes(target: Span, attributes: Mapping[str, Any]) -> None:
    if not target.is_recording():
        return
    for key, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, (dict, list)) and not _primitive_list(value):
            value = json.dumps(value, default=str)
        target.set_attribute(key, value)


def _primitive_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) for v in value)


def log_fields(_: object, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the trace and span a log line was written in."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format(context.trace_id, "032x")
        event["span_id"] = format(context.span_id, "016x")
    return event


def redact_log(_: object, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the same secrets never reach a log line either."""
    return _LOG_REDACTOR.attributes(event)


# Logs stay on the machine and keep their texts (and e-mails); secrets still go.
_LOG_REDACTOR = Redactor(mask_emails=False)
