"""Observability on the real stack: traces in a real Phoenix (one trace per upload and per
question, across every service, OpenInference span kinds, no secret in any span or log line),
and Prometheus metrics that move when work is done."""

from __future__ import annotations

import importlib.util
import json
import time

import httpx
import pytest

from tests.support.stack import RunningStack, start_stack, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("phoenix") is None,
        reason="Phoenix is not installed: pip install -e '.[phoenix]' (make install does)",
    ),
]
PLANTED = "hunter2-planted-secret"
EMAIL = "ada.lovelace@example.com"
DOC = (
    "# Kestrel turbines\n\nThe Kestrel turbine spins at 3,000 rpm and was designed in Oslo. "
    f"Maintenance login: password={PLANTED}. Contact {EMAIL} for spare parts."
)


@pytest.fixture(scope="module")
def traced(tmp_path_factory) -> RunningStack:
    running = start_stack(
        "observability", tmp_path_factory.mktemp("observability"), phoenix=True, metrics=True
    )
    yield running
    running.stack.stop()


def spans(phoenix: str) -> list[dict]:
    """Every span of the project, page by page (Phoenix's REST API)."""
    found, cursor = [], None
    while True:
        params = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
        r = httpx.get(f"{phoenix}/v1/projects/olympus/spans", params=params, timeout=30)
        r.raise_for_status()
        page = r.json()
        found += page["data"]
        cursor = page.get("next_cursor")
        if not cursor:
            return found


def trace_of(phoenix: str, root_name: str, attribute: str, value: str, kinds: set[str]):
    """The spans of the trace whose ``root_name`` span has ``attribute == value``, once the
    spans of ``kinds`` have all arrived (export is batched)."""
    deadline = time.monotonic() + 60
    while True:
        every = spans(phoenix)
        roots = [
            s for s in every if s["name"] == root_name and s["attributes"].get(attribute) == value
        ]
        if roots:
            trace_id = roots[0]["context"]["trace_id"]
            members = [s for s in every if s["context"]["trace_id"] == trace_id]
            if kinds <= {s["span_kind"] for s in members}:
                return roots[0], members, every
        assert time.monotonic() < deadline, f"no complete trace for {root_name} {value}"
        time.sleep(1)


def test_an_upload_and_a_question_are_each_one_trace_across_the_services(traced):
    assert traced.phoenix_url
    with traced.client() as http:
        doc = http.post("/rag/add_document", json={"filename": "kestrel.md", "content": DOC})
        assert doc.status_code == 202
        doc_id = doc.json()["doc_id"]
        assert wait_for(http, doc_id)["status"] == "indexed"
        answer = http.post(
            "/mcp/traced/chat",
            json={
                "input": f"How fast does the Kestrel turbine spin? I am {EMAIL}",
                "stream": False,
                "max_tokens": 16,
            },
        )
        assert answer.status_code == 200, answer.text
        request_id = answer.json()["request_id"]

    # The upload: gateway CHAIN -> embedder EMBEDDING -> indexer, one trace.
    root, upload, _ = trace_of(
        traced.phoenix_url, "olympus.ingest", "olympus.doc_id", doc_id, {"CHAIN", "EMBEDDING"}
    )
    names = {s["name"] for s in upload}
    assert {
        "olympus.embed",
        "olympus.ingest.default.default process",
        "olympus.index.upsert process",
    } <= names
    embed = next(s for s in upload if s["span_kind"] == "EMBEDDING")
    assert embed["attributes"]["embedding.model_name"]
    assert embed["attributes"]["olympus.embedding.dims"] == 384
    upsert = next(s for s in upload if s["name"] == "olympus.index.upsert process")
    assert upsert["attributes"]["messaging.nats.delivery_attempt"] == 1
    assert_linked(upload)

    # The question: gateway CHAIN -> embedder EMBEDDING -> H.A.D.E.S. RETRIEVER -> generator LLM.
    root, question, every = trace_of(
        traced.phoenix_url,
        "olympus.chat",
        "olympus.request_id",
        request_id,
        {"CHAIN", "EMBEDDING", "RETRIEVER", "LLM"},
    )
    hops = {s["attributes"].get("messaging.destination.name") for s in question}
    assert {"olympus.query.embed", "olympus.query.retrieve", "olympus.query.generate"} <= hops
    retriever = next(s for s in question if s["span_kind"] == "RETRIEVER")
    # Phoenix unfolds the metadata JSON into keys of its own
    assert retriever["attributes"]["retrieval.documents.0.document.metadata.filename"] == (
        "kestrel.md"
    )
    assert isinstance(retriever["attributes"]["retrieval.documents.0.document.score"], float)
    llm = next(s for s in question if s["span_kind"] == "LLM")
    assert llm["attributes"]["llm.model_name"] == "SmolLM2-135M-Instruct"
    assert llm["attributes"]["llm.token_count.completion"] > 0
    assert llm["attributes"]["llm.token_count.prompt"] > 0
    assert llm["attributes"]["llm.input_messages.0.message.role"] == "system"
    assert llm["attributes"]["output.value"] == answer.json()["answer"]
    assert root["attributes"]["output.value"] == answer.json()["answer"]
    assert_linked(question)

    # Privacy: no key, no planted secret, no e-mail in any span of the run...
    exported = json.dumps(every)
    assert traced.key not in exported
    assert PLANTED not in exported
    assert EMAIL not in exported
    assert "[redacted]" in exported
    # ...nor the key or the secret in any log line; and log lines join their traces.
    log = traced.log.read_text()
    assert traced.key not in log
    assert PLANTED not in log
    joined = [
        json.loads(line.split(" | ", 1)[1])
        for line in log.splitlines()
        if " | {" in line and root["context"]["trace_id"] in line
    ]
    assert any(entry.get("request_id") == request_id for entry in joined)
    assert "generator" in {entry["service"] for entry in joined}


def assert_linked(members: list[dict]) -> None:
    """Every span but the trace's root has its parent in the trace."""
    ids = {s["context"]["span_id"] for s in members}
    orphans = [s["name"] for s in members if s["parent_id"] and s["parent_id"] not in ids]
    roots = [s["name"] for s in members if not s["parent_id"]]
    assert orphans == []
    assert len(roots) == 1, roots


def scrape(url: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value}."""
    text = httpx.get(url, timeout=10).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def total(samples: dict[str, float], prefix: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        v for k, v in samples.items() if k.startswith(prefix) and all(w in k for w in wanted)
    )


def test_metrics_move_when_work_is_done(traced):
    ports = traced.config.worker_metrics_ports()
    worker = {name: f"http://127.0.0.1:{port}/metrics" for name, port in ports.items()}
    before = {name: scrape(url) for name, url in worker.items()}
    gateway_before = scrape(f"{traced.url}/metrics")
    with traced.client() as http:
        doc = http.post("/rag/add_document", json={"filename": "m.txt", "content": "metrics"})
        doc_id = doc.json()["doc_id"]
        assert wait_for(http, doc_id)["status"] == "indexed"
        r = http.post("/mcp/m/chat", json={"input": "metrics?", "stream": False, "max_tokens": 4})
        assert r.status_code == 200, r.text
        assert http.post("/mcp/m/chat", json={"input": ""}).status_code == 422
    after = {name: scrape(url) for name, url in worker.items()}
    gateway = scrape(f"{traced.url}/metrics")

    def moved(samples_before, samples_after, prefix, **labels):
        return total(samples_after, prefix, **labels) - total(samples_before, prefix, **labels)

    route = "/mcp/{session_id}/chat"
    assert (
        moved(gateway_before, gateway, "olympus_http_requests_total", route=route, status="200")
        == 1
    )
    assert (
        moved(gateway_before, gateway, "olympus_http_requests_total", route=route, status="422")
        == 1
    )
    assert total(gateway, "olympus_http_request_seconds_count", route=route) >= 2
    assert total(gateway, "olympus_documents", status="indexed") >= 1
    assert 'olympus_consumer_pending{consumer="embedder-ingest"}' in gateway
    assert "olympus_dead_letters" in gateway
    assert (
        moved(before["embedder"], after["embedder"], "olympus_embedded_texts_total", kind="chunk")
        >= 1
    )
    assert moved(before["embedder"], after["embedder"], "olympus_embed_batch_size_count") >= 1
    assert moved(before["generator"], after["generator"], "olympus_generated_tokens_total") >= 1
    assert moved(before["generator"], after["generator"], "olympus_answers_total") == 1
    processed = "faststream_received_processed_messages_total"
    assert moved(before["indexer"], after["indexer"], processed) >= 2  # upsert, status, turn...
    assert any("upsert" in k for k in after["indexer"] if k.startswith(processed)), [
        k for k in after["indexer"] if k.startswith("faststream")
    ]
