"""What leaves in a span: redaction and truncation, through the real OpenTelemetry SDK."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from olympus.telemetry import RedactingExporter, Redactor

pytestmark = pytest.mark.unit


def export(redactor: Redactor, **attributes) -> dict:
    sink = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedactingExporter(sink, redactor)))
    with provider.get_tracer("t").start_as_current_span("s") as span:
        span.set_attributes(attributes)
        span.add_event("e", {"detail": "Bearer abcdef"})
    (finished,) = sink.get_finished_spans()
    return {**finished.attributes, "event": finished.events[0].attributes["detail"]}


def test_secrets_and_emails_are_masked_before_export():
    out = export(
        Redactor(mask_emails=True, patterns=[r"ACME-\d+"]),
        **{
            "input.value": "mail ada@example.com about ACME-1234, key oly_abcdefghijkl",
            "olympus.api_key": "anything",
            "llm.token_count.prompt": 12,
            "tags": ["Bearer xyz123", "plain"],
        },
    )
    assert out["input.value"] == "mail [redacted] about [redacted], key [redacted]"
    assert out["olympus.api_key"] == "[redacted]"
    assert out["llm.token_count.prompt"] == 12
    assert list(out["tags"]) == ["[redacted]", "plain"]
    assert out["event"] == "[redacted]"


def test_with_redaction_off_only_secrets_are_masked():
    out = export(
        Redactor(mask_emails=False, patterns=[r"ACME"]),
        text="ada@example.com ACME password: hunter2",
    )
    assert out["text"] == "ada@example.com ACME [redacted]"


@pytest.mark.parametrize(
    ("secret", "value"),
    [
        ("Authorization: BEARER abc.def-ghi", "abc.def"),
        ("PASSWORD=hunter2", "hunter2"),
        ("Passwd: hunter2", "hunter2"),
        ("pwd=hunter2", "hunter2"),
        ("client_secret: s3cr3t", "s3cr3t"),
        ("access_token = t0k3n", "t0k3n"),
        ("X-API-KEY: k3y", "k3y"),
        ("apikey=k3y", "k3y"),
        ("Api_Key: k3y", "k3y"),
        ("oly_AbCdEfGh12345", "AbCdEfGh12345"),
    ],
)
def test_every_spelling_of_a_secret_is_masked(secret, value):
    """The words that let a text skip the scan must not let any of these through."""
    redacted = Redactor(mask_emails=False).text(f"before {secret} after")
    assert value not in redacted, redacted
    assert "[redacted]" in redacted, redacted
    assert redacted.startswith("before "), redacted


def test_counts_of_tokens_are_not_secrets():
    text = "prompt_tokens=12 completion_tokens: 30 tokens=42"
    assert Redactor(mask_emails=False).text(text) == text
