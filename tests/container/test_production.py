"""Production, run for real: `install.sh` builds the images and starts docker-compose.yml in
podman, hardened as written; then the README's tour goes through Caddy over HTTPS, and the
running containers are checked for every hardening property the compose file promises.

One install per module (the images take minutes to build). The only change to production is
tests/container/docker-compose.override.yml: Milvus Lite and SQLite inside the indexer, as
Milvus standalone and ArangoDB have no images here (tests/support/containers.py says what else
is made locally, and why).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from olympus.natsserver import free_port
from tests.support import containers
from tests.support.containers import Production
from tests.support.stack import OUTPUT, indexed

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(3600)]

OVERRIDE = Path(__file__).parent / "docker-compose.override.yml"
# The long-running services of the stack this test starts (the stores are left out: override)
SERVICES = {
    "nats-1", "nats-2", "nats-3", "phoenix", "indexer", "embedder", "generator", "gateway",
    "athena", "caddy",
}  # fmt: skip
ONE_SHOT = {"certs", "keys", "streams"}
REPORT = OUTPUT / "container-tier.json"


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Production]:
    containers.require_tools()
    with containers.exclusive():
        yield from _install(tmp_path_factory.mktemp("production"))


def _install(work: Path) -> Iterator[Production]:
    """install.sh into ``work`` and the stack it starts; everything removed afterwards."""
    env = containers.podman_env(work)
    tier_started = started = time.monotonic()
    python = containers.base_image(env, work)
    base_s = time.monotonic() - started

    folder = containers.checkout(work / "olympus")
    started = time.monotonic()
    wheels = containers.wheelhouse(folder / "deploy" / "wheelhouse", python)
    wheels_s = time.monotonic() - started
    shutil.copy(OVERRIDE, folder / "docker-compose.override.yml")

    https_port = free_port()
    env |= {
        "OLYMPUS_ENGINE": "podman",
        "OLYMPUS_BASE_IMAGE": containers.BASE_IMAGE,
        "OLYMPUS_CADDY_BASE_IMAGE": containers.BASE_IMAGE,
        "OLYMPUS_PIP_NO_INDEX": "1",
        "OLYMPUS_BIND_ADDRESS": "127.0.0.1",
        "OLYMPUS_HTTPS_PORT": str(https_port),
        "OLYMPUS_HTTP_PORT": str(free_port()),
        "OLYMPUS_INSTALL_TIMEOUT_S": "900",
    }
    containers.remove_project(env)
    started = time.monotonic()
    installed = subprocess.run(
        ["./install.sh"], cwd=folder, env=env, capture_output=True, text=True, timeout=3000,
        check=False,
    )  # fmt: skip
    install_s = time.monotonic() - started
    log = OUTPUT / "container-install.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(installed.stdout + installed.stderr)
    stack = Production(
        folder=folder,
        env=env,
        url=f"https://localhost:{https_port}",
        key=_setting(folder, "OLYMPUS_API_KEY"),
        ca=work / "caddy-root.crt",
        install_output=installed.stdout,
    )
    try:
        assert installed.returncode == 0, f"install.sh failed; see {log}:\n{installed.stderr}"
        stack.podman(
            "cp", f"{stack.name('caddy')}:/data/caddy/pki/authorities/local/root.crt", str(stack.ca)
        )
        stack.containers = stack.inspect()
        images = {
            name: json.loads(stack.podman("image", "inspect", f"localhost/{name}:latest"))[0]
            for name in ("olympus", "olympus-nats", "olympus-phoenix", "olympus-caddy")
        }
        report = {
            "base_image_s": round(base_s, 1),
            "wheelhouse_s": round(wheels_s, 1),
            "wheels": wheels,
            "install_s": round(install_s, 1),
            "image_bytes": {name: image["Size"] for name, image in images.items()},
        }
        yield stack
    finally:
        logs = OUTPUT / "container-logs.txt"
        logs.write_text(stack.compose("logs", "--tail", "200", check=False, timeout=300))
        stack.compose("down", "--volumes", "--timeout", "30", check=False, timeout=300)
        containers.remove_project(env)
        containers.prune(env)
        shutil.rmtree(folder / "deploy" / "wheelhouse", ignore_errors=True)
    # What the closing notes and the README quote: how long the tier takes, what it builds
    report["tier_s"] = round(time.monotonic() - tier_started, 1)
    REPORT.write_text(json.dumps(report, indent=2))


def _setting(folder: Path, name: str) -> str:
    for line in (folder / ".env").read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1]
    raise AssertionError(f"{name} is not in .env")


@pytest.fixture(scope="module")
def https(production: Production) -> Iterator[httpx.Client]:
    """A client that trusts Caddy's local CA and nothing else (no verify=False anywhere)."""
    context = ssl.create_default_context(cafile=str(production.ca))
    with httpx.Client(
        base_url=production.url,
        verify=context,
        headers={"Authorization": f"Bearer {production.key}"},
        timeout=60,
    ) as client:
        yield client


# --- the user's view ----------------------------------------------------------------------
def test_install_prints_the_addresses_and_the_key(production: Production):
    out = production.install_output
    assert "Olympus is running." in out
    assert f"Athena (the UI)  {production.url}/" in out
    assert production.key in out


def test_the_readme_tour_through_caddy_over_https(production: Production, https: httpx.Client):
    uploaded = https.post(
        "/rag/documents",
        files=[
            ("files", ("hera.md", b"# Hera\n\nHera is the queen of the gods.", "text/markdown"))
        ],
    )
    assert uploaded.status_code == 202, uploaded.text
    text = "# Zeus\n\nZeus rules from Mount Olympus and wields the thunderbolt."
    doc_id = indexed(https, "zeus.md", text)["doc_id"]
    found = https.post(
        "/mcp/tour/query", json={"input": "who wields the thunderbolt?", "top_k": 3}
    ).json()
    assert found["retrieved_documents"][0]["doc_id"] == doc_id

    # Chat through Caddy: the answer streams, token events arriving in many separate reads
    reads_with_tokens = 0
    tokens = 0
    events: list[str] = []
    with https.stream(
        "POST", "/mcp/tour/chat", json={"input": "Who wields the thunderbolt? Answer at length."}
    ) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert "max-age=31536000" in answer.headers["strict-transport-security"]
        for chunk in answer.iter_raw():
            found_tokens = chunk.count(b"event: token")
            tokens += found_tokens
            reads_with_tokens += found_tokens > 0
            events += re.findall(r"event: (\w+)", chunk.decode(errors="replace"))
    assert events[0] == "sources"
    assert events[-1] == "done"
    assert tokens >= 4
    # A buffering proxy hands the whole answer over in one or two reads at the end.
    assert reads_with_tokens >= max(3, tokens // 2), (reads_with_tokens, tokens)


def test_athena_over_https_with_its_websocket(production: Production, https: httpx.Client):
    page = https.get("/")
    assert page.status_code == 200
    assert "<title>Streamlit</title>" in page.text
    assert page.headers["x-frame-options"] == "DENY"
    assert https.get("/_stcore/health").text == "ok"

    async def handshake() -> None:
        context = ssl.create_default_context(cafile=str(production.ca))
        address = production.url.replace("https://", "wss://") + "/_stcore/stream"
        async with websockets.connect(address, ssl=context, open_timeout=30) as socket:
            assert socket.protocol is not None

    asyncio.run(handshake())


def test_plain_http_is_sent_to_https(production: Production):
    port = production.env["OLYMPUS_HTTP_PORT"]
    answer = httpx.get(f"http://localhost:{port}/rag/documents", follow_redirects=False)
    assert answer.status_code in (301, 308)
    assert answer.headers["location"].startswith("https://localhost")


def test_a_second_install_changes_nothing(production: Production, https: httpx.Client):
    before = (production.folder / ".env").read_bytes()
    certificate = production.exec("nats-1", "cat", "/etc/nats-tls/server.pem")
    again = subprocess.run(
        ["./install.sh"], cwd=production.folder, env=production.env, capture_output=True,
        text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "written to .env" not in again.stdout
    assert (production.folder / ".env").read_bytes() == before
    assert production.key in again.stdout
    # the bus keeps its certificate (a node restarting meanwhile must find it whole)
    assert production.exec("nats-1", "cat", "/etc/nats-tls/server.pem") == certificate
    assert https.get("/readyz").status_code == 200


# --- what the running containers show ---------------------------------------------------------
def test_the_stack_is_up_and_healthy(production: Production):
    # Podman runs healthchecks on systemd timers, which these machines lack: run each once
    # (the command the image and the compose file give), then read the state it recorded.
    for service in SERVICES:
        production.podman("healthcheck", "run", production.name(service), timeout=60)
    found = production.inspect()
    assert set(found) >= SERVICES | ONE_SHOT
    for service in SERVICES:
        state = found[service]["State"]
        assert state["Running"], service
        assert state["Health"]["Status"] == "healthy", (service, state["Health"])
    for service in ONE_SHOT:
        assert found[service]["State"]["ExitCode"] == 0, service


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_process_is_unprivileged(production: Production, service: str):
    # Each process's status: no root uid, no capabilities, no way to gain privileges
    status = production.exec(service, "sh", "-c", "cat /proc/[0-9]*/status 2>/dev/null")
    uids = re.findall(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)", status, re.MULTILINE)
    assert uids, status[:500]
    assert all("0" not in ids for ids in uids), uids
    assert set(re.findall(r"^CapEff:\s+(\w+)", status, re.MULTILINE)) == {"0000000000000000"}
    assert set(re.findall(r"^NoNewPrivs:\s+(\d)", status, re.MULTILINE)) == {"1"}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_root_filesystem_refuses_writes_and_tmp_is_private(production: Production, service: str):
    refused = production.exec(
        service, "sh", "-c", "touch /usr/x /opt/x /x 2>&1; echo rc=$?", check=False
    )
    assert refused.count("Read-only file system") == 3, refused
    assert production.exec(service, "sh", "-c", "touch /tmp/x && echo ok").strip() == "ok"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_limits_and_bounded_logs_are_applied(production: Production, service: str):
    host = production.containers[service]["HostConfig"]
    assert host["Memory"] > 0
    assert host["NanoCpus"] > 0 or host["CpuQuota"] > 0
    assert host["PidsLimit"] > 0
    assert host["ReadonlyRootfs"] is True
    assert host["LogConfig"]["Size"] == "10MB"  # logging: max-size (podman keeps one file)
    # the kernel holds the memory limit the compose file asked for
    limit = production.exec(
        service,
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory.max 2>/dev/null"
        " || cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
    ).strip()
    assert int(limit) == host["Memory"]


def test_only_caddy_publishes_ports(production: Production):
    # (a port an image EXPOSEs is listed with no binding: only a HostPort publishes)
    published = {
        service: [
            binding
            for bindings in (c["HostConfig"].get("PortBindings") or {}).values()
            for binding in bindings or []
            if binding.get("HostPort")
        ]
        for service, c in production.containers.items()
    }
    assert {service for service, bindings in published.items() if bindings} == {"caddy"}
    assert {b["HostIp"] for b in published["caddy"]} == {"127.0.0.1"}


def test_store_credentials_are_in_the_indexer_alone(production: Production):
    names = ("OLYMPUS_INDEXER_ARANGO_PASSWORD", "MINIO_ROOT_PASSWORD")
    secrets = {name: _setting(production.folder, name) for name in names}
    for service, container in production.containers.items():
        environment = "\n".join(container["Config"]["Env"])
        holds = {name for name, value in secrets.items() if value in environment}
        assert holds == ({"OLYMPUS_INDEXER_ARANGO_PASSWORD"} if service == "indexer" else set()), (
            service,
            holds,
        )


def test_the_gateway_cannot_reach_the_stores_network(production: Production):
    networks = {
        service: set(c["NetworkSettings"].get("Networks") or {})
        for service, c in production.containers.items()
    }
    stores = f"{containers.PROJECT}_stores"
    assert {s for s, nets in networks.items() if stores in nets} == {"indexer"}
    assert stores not in networks["gateway"]
    # Athena, on the edge network alone, cannot even resolve a worker's name
    edge_only = production.exec(
        "athena", "python", "-c",
        "import socket\ntry:\n    socket.gethostbyname('indexer'); print('found')\n"
        "except OSError:\n    print('unknown')",
    ).strip()  # fmt: skip
    assert edge_only == "unknown"


# --- the bus in the containers: TLS, passwords, least privilege ----------------------------
# Logs in as the service itself does: its settings, from its own environment
BUS_PROBE = """
import asyncio, sys, nats
from olympus.settings import CommonSettings
async def main():
    errors = []
    async def noted(e): errors.append(str(e))
    nc = await nats.connect(**CommonSettings().nats_connect_options(), error_cb=noted,
                            allow_reconnect=False)
    await nc.subscribe(sys.argv[2])
    await nc.publish(sys.argv[1], b"{}")
    await nc.flush()
    await asyncio.sleep(1)
    print("\\n".join(errors) or "none")
    await nc.close()
asyncio.run(main())
"""


@pytest.mark.parametrize(
    ("service", "publish", "subscribe"),
    [
        ("embedder", "olympus.ingest.acme", "olympus.reply.>"),
        ("generator", "$JS.API.STREAM.DELETE.OLYMPUS_INGEST", "olympus.events.document.>"),
        ("gateway", "olympus.index.upsert", "_INBOX_indexer.>"),
    ],
)
def test_a_service_outside_its_permissions_is_refused(
    production: Production, service: str, publish: str, subscribe: str
):
    said = production.exec(service, "python", "-c", BUS_PROBE, publish, subscribe).lower()
    assert f'permissions violation for publish to "{publish.lower()}"' in said, said
    assert f'permissions violation for subscription to "{subscribe.lower()}"' in said, said


def test_the_bus_refuses_strangers_and_plain_text(production: Production):
    probe = """
import asyncio, os, ssl, nats
async def attempt(**options):
    try:
        nc = await nats.connect("nats://nats-1:4222", allow_reconnect=False,
                                connect_timeout=5, max_reconnect_attempts=0, **options)
    except Exception as e:
        return type(e).__name__ + ": " + str(e)[:80]
    await nc.close()
    return "connected"
tls = ssl.create_default_context(cafile=os.environ["OLYMPUS_NATS_TLS_CA"])
print(asyncio.run(attempt(tls=tls)))
print(asyncio.run(attempt(user="embedder", password=os.environ["OLYMPUS_NATS_PASSWORD"])))
print(asyncio.run(attempt(user="embedder", password="wrong", tls=tls)))
print(asyncio.run(attempt(user="embedder", password=os.environ["OLYMPUS_NATS_PASSWORD"], tls=tls)))
"""
    anonymous, plain, wrong, right = production.exec("embedder", "python", "-c", probe).splitlines()
    assert anonymous != "connected"
    assert plain != "connected"  # no TLS: the server requires it
    assert wrong != "connected"
    assert right == "connected"


def test_a_service_without_its_secret_refuses_to_start(production: Production):
    refused = subprocess.run(
        ["podman", "run", "--rm", "--read-only", "--cap-drop", "ALL", "--network", "none",
         "-e", "OLYMPUS_ENVIRONMENT=production", "-e", "OLYMPUS_NATS_USER=embedder",
         "localhost/olympus:latest", "python", "-m", "workers.embedder"],
        env=production.env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "OLYMPUS_NATS_USER and OLYMPUS_NATS_PASSWORD must be set in production" in (
        refused.stderr
    )
    assert "Traceback" not in refused.stderr


def test_upgrade_keeps_the_documents(production: Production, https: httpx.Client):
    listed = https.get("/rag/documents").json()["items"]
    assert listed, "the tour indexed documents before this test"
    upgraded = subprocess.run(
        ["./install.sh", "--upgrade"], cwd=production.folder, env=production.env,
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert upgraded.returncode == 0, upgraded.stderr[-3000:]
    assert "Rebuilding the images offline" in upgraded.stdout
    after = https.get("/rag/documents").json()["items"]
    assert {d["doc_id"] for d in after} == {d["doc_id"] for d in listed}
    assert all(d["status"] == "indexed" for d in after)
