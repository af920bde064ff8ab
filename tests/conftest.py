"""Fixtures that start real things: a nats-server on a free port per test, a stack's client.

Helpers the tests import live in ``tests/support``: ``stack`` (start the embedded stack, wait
for a document), ``samples`` (documents of every format), ``hades_contract`` (the store
contract every backend passes). ``hades.audit`` reads a stopped stack's stores back.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from olympus import delivery, natsserver
from olympus.settings import CommonSettings
from tests.support.stack import RunningStack

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def nats_url(tmp_path: os.PathLike[str]) -> Iterator[str]:
    """A real nats-server with JetStream of the test's own (it starts in milliseconds), its
    streams set up as ``olympus up`` does: a test that changes streams or consumers changes no
    other test's bus. It takes anyone (the authenticated bus is tested in test_bus_access)."""

    folder = Path(tmp_path) / "nats"
    config = natsserver.NatsServerConfig(store_dir=folder / "js", port=natsserver.free_port())
    proc = natsserver.start(config, folder / "nats.conf", stdout=subprocess.DEVNULL)
    asyncio.run(delivery.prepare_streams(CommonSettings(nats_url=config.url)))
    yield config.url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def http(olympus: RunningStack) -> Iterator[httpx.Client]:
    """A client of the stack the test module starts as its ``olympus`` fixture."""
    with olympus.client() as client:
        yield client
