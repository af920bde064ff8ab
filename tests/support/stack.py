"""Starting the real embedded stack for a test module, and waiting on it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from olympus import access, natsserver
from olympus.settings import CommonSettings
from olympus.stack import Stack, StackConfig, start_with_key
from schemas import subjects

ROOT = Path(__file__).resolve().parent.parent.parent
OUTPUT = ROOT / "test-output"
# The packaged generator model is converted from GGUF once per checkout, not once per stack.
MODELS = ROOT / ".olympus" / "models"


@dataclass
class RunningStack:
    stack: Stack
    url: str
    key: str
    data_dir: Path
    log: Path
    phoenix_url: str | None = None
    config: StackConfig | None = None

    def bus(self, user: str = access.ADMIN) -> dict[str, Any]:
        """``nats.connect`` options that log in to the stack's bus as ``user``."""
        bus = access.BusSecrets.load(self.data_dir)
        assert bus is not None
        assert self.config is not None
        common = CommonSettings(nats_url=self.config.nats_url)
        return dict(access.as_user(common, user, bus).nats_connect_options())

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key or self.key}"},
            timeout=30,
        )

    def lines_not_json(self) -> list[str]:
        """The lines the gateway and the workers wrote that are not one JSON object each: the
        stack runs them with ``OLYMPUS_LOG_FORMAT=json``, as production does. (NATS, Athena
        and the supervisor, ``olympus``, are not Olympus's services' logs.)"""
        wrong = []
        for line in self.log.read_text(errors="replace").splitlines():
            service, bar, text = line.partition(" | ")
            if not bar or service.strip() not in ("gateway", *subjects.WORKERS):
                continue
            try:
                entry = json.loads(text)
            except ValueError:
                entry = None
            if not isinstance(entry, dict):
                wrong.append(line)
        return wrong


def producer_login(olympus: RunningStack, tenant: str, name: str) -> dict:
    """``olympus producers create``, as an operator would run it, and the options to connect."""
    made = subprocess.run(
        [sys.executable, "-m", "olympus.cli", "producers", "create", "--tenant", tenant,
         "--name", name, "--data-dir", str(olympus.data_dir), "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    credential = json.loads(made.stdout)
    assert credential["publish"] == f"olympus.ingest.{tenant}.<collection>"
    return {
        "servers": [olympus.config.nats_url],
        "user": credential["user"],
        "password": credential["password"],
        "inbox_prefix": credential["inbox_prefix"],
    }


def eventually(check, what: str = "it did not happen in time", timeout_s: float = 30) -> None:
    """Wait until ``check()`` is true; fail saying ``what`` if it is not within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def wait_for(
    http: httpx.Client,
    doc_id: str,
    statuses=("indexed", "failed"),
    timeout_s=120,
    version: int | None = None,
):
    """The document once its status is one of ``statuses`` (at ``version`` or later: what an
    upload's reply says, since a document sent again shows its earlier status until the new
    content is processed); fails the test after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = http.get(f"/rag/documents/{doc_id}")
        if (
            r.status_code == 200
            and r.json()["status"] in statuses
            and r.json()["version"] >= (version or 0)
        ):
            return r.json()
        time.sleep(0.1)
    raise AssertionError(f"{doc_id} never reached {statuses}: {r.status_code} {r.text}")


def indexed(http: httpx.Client, filename: str, content: str) -> dict[str, Any]:
    """Add a text document and wait until it is indexed; its ``add_document`` reply."""
    r = http.post("/rag/add_document", json={"filename": filename, "content": content})
    assert r.status_code == 202, r.text
    assert wait_for(http, r.json()["doc_id"], version=r.json()["version"])["status"] == "indexed"
    return dict(r.json())


def wait_for_history(http: httpx.Client, session: str, count: int) -> list[dict[str, Any]]:
    """A session's turns once it holds ``count`` (the indexer keeps a turn after its answer's
    ``done``: reading at once races it), or what it holds after 30 s."""
    deadline = time.monotonic() + 30
    while True:
        turns: list[dict[str, Any]] = http.get(f"/mcp/{session}/history").json()["turns"]
        if len(turns) >= count or time.monotonic() > deadline:
            return turns
        time.sleep(0.2)


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports on loopback."""
    while True:
        first = natsserver.free_port()
        if not any(natsserver.port_open("127.0.0.1", first + i) for i in range(1, count)):
            return first


def start_stack(
    name: str,
    data_dir: Path,
    env: dict[str, str] | None = None,
    phoenix: bool = False,
    metrics: bool = False,
    athena: bool = False,
    replicas: dict[str, int] | None = None,
    cluster: int = 1,
) -> RunningStack:
    OUTPUT.mkdir(exist_ok=True)
    log = OUTPUT / f"{name}.log"
    config = StackConfig.on_free_ports(
        data_dir,
        env={"OLYMPUS_GENERATOR_MODELS_DIR": str(MODELS), **(env or {})},
        phoenix_port=natsserver.free_port() if phoenix else None,
        metrics_port=free_ports(3) if metrics else None,
        athena_port=natsserver.free_port() if athena else None,
        replicas=replicas or {},
        cluster=cluster,
    )
    stack, key = start_with_key(config, log.open("w"))
    return RunningStack(stack, config.gateway_url, key, data_dir, log, config.phoenix_url, config)
