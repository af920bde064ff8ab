"""How the processes are put together: apps built by factories without connecting or loading a
model, a gateway that imports no model library, the committed bus contract up to date."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import nats
import pytest
from nats.js.client import JetStreamContext

from olympus import asyncapi, delivery

pytestmark = pytest.mark.unit
HEAVY = ("torch", "transformers", "workers")


def _modules_after(code: str) -> set[str]:
    """The top-level modules a fresh interpreter has loaded after running ``code``."""
    probe = f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return {name.split(".")[0] for name in json.loads(out.stdout.splitlines()[-1])}


def test_the_gateway_loads_no_model_library_and_no_worker():
    loaded = _modules_after(
        "from gateway.app import create_app\n"
        "from gateway.routes.health import asyncapi_document\n"
        "create_app(); asyncapi_document()"
    )
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize("worker", ["embedder", "indexer", "generator"])
def test_building_a_worker_app_connects_nothing_and_loads_no_model(worker):
    # NATS at a port nobody listens on, and no models folder: building must touch neither.
    loaded = _modules_after(
        "import os; os.environ['OLYMPUS_NATS_URL'] = 'nats://127.0.0.1:9'\n"
        "os.environ['OLYMPUS_DATA_DIR'] = '/nonexistent'\n"
        f"from workers.{worker}.app import create_app\n"
        "app = create_app(); assert app.broker is not None"
    )
    # Not even torch: the generator imports its backend (torch, llama.cpp, openai) at start.
    assert "torch" not in loaded


def test_the_committed_bus_contract_matches_the_workers():
    committed = asyncapi.DOCUMENT.read_text()
    assert committed == asyncapi.render(asyncapi.document()), (
        "gateway/asyncapi.json is stale: run `python -m olympus.asyncapi`"
    )


def test_a_fetch_that_times_out_raises_the_error_faststream_expects(monkeypatch):
    """nats-py can raise a plain asyncio.TimeoutError from fetch; FastStream's pull loop only
    suppresses nats' own, so an idle worker logged a traceback (issue 10)."""

    async def plain_timeout(self, *args, **kwargs):
        raise TimeoutError

    pull = JetStreamContext.PullSubscription
    monkeypatch.setattr(pull, "fetch", plain_timeout)
    delivery.fetch_times_out_as_nats_says()
    with pytest.raises(nats.errors.TimeoutError):
        asyncio.run(pull.fetch(object.__new__(pull), 1, timeout=0.1))
    delivery.fetch_times_out_as_nats_says()  # a second call wraps nothing twice
    assert pull.fetch.__wrapped__ is plain_timeout


def test_forwarded_headers_are_believed_only_from_configured_proxies():
    from gateway.__main__ import server_options
    from gateway.settings import GatewaySettings

    alone = server_options(GatewaySettings())
    assert alone["proxy_headers"] is False  # uvicorn's own default believes 127.0.0.1
    behind = server_options(GatewaySettings(trusted_proxies="10.0.0.0/8"))
    assert (behind["proxy_headers"], behind["forwarded_allow_ips"]) == (True, "10.0.0.0/8")


def test_an_idle_connection_outlives_the_wait_a_full_ingest_queue_asks_for():
    from gateway.__main__ import server_options
    from gateway.routes.rag import _QUEUE_RETRY_S
    from gateway.settings import GatewaySettings

    assert server_options(GatewaySettings())["timeout_keep_alive"] > _QUEUE_RETRY_S
