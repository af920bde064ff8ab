"""The production NATS configuration, run for real: two nodes of ``deploy/nats/cluster/`` on
loopback with certificates from ``deploy/nats/make-certs.sh``. Clients get in over TLS only,
and a server without a certificate of the deployment's CA cannot join the cluster."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

from olympus import access, natsserver
from olympus.settings import CommonSettings
from tests.support.stack import eventually

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = secrets.token_hex(16)  # nats-server parses $VAR values: no spaces or quotes


def make_certs(folder: Path) -> Path:
    subprocess.run(
        [ROOT / "deploy/nats/make-certs.sh", folder, "127.0.0.1", "localhost"],
        check=True,
        capture_output=True,
    )
    return folder


def production_env(certs: Path) -> dict[str, str]:
    """What docker-compose.yml gives a NATS node: the certificates and every user's password."""
    return {
        **os.environ,
        "OLYMPUS_NATS_TLS_CERT": str(certs / "server.pem"),
        "OLYMPUS_NATS_TLS_KEY": str(certs / "server-key.pem"),
        "OLYMPUS_NATS_TLS_CA": str(certs / "ca.pem"),
        **{f"OLYMPUS_NATS_{u.upper()}_PASSWORD": PASSWORD for u in (*access.SERVICES, "admin")},
    }


@dataclass
class Node:
    proc: subprocess.Popen[bytes]
    port: int
    monitor: int
    cluster: int
    log: Path

    def monitoring(self, page: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}/{page}") as r:
            return json.load(r)

    def peers(self) -> set[str]:
        """The servers this one has routes to (a pool of several connections per peer)."""
        return {r["remote_name"] for r in self.monitoring("routez")["routes"]}


def start(
    config: list[str], tmp: Path, name: str, env: dict[str, str], cluster: int, routes: list[int]
) -> Node:
    """A node on loopback: the flags move its ports and store off the containers' fixed ones."""
    port, monitor = natsserver.free_port(), natsserver.free_port()
    log = tmp / f"{name}.log"
    command = [
        natsserver.binary(),
        *config,
        *("-a", "127.0.0.1", "-p", str(port), "-m", str(monitor), "-n", name),
        *("--cluster", f"nats://127.0.0.1:{cluster}"),
        *("--routes", ",".join(f"nats://127.0.0.1:{r}" for r in routes)),
        *("-l", str(log)),
    ]
    proc = subprocess.Popen(command, env={**env, "OLYMPUS_NATS_STORE_DIR": str(tmp / name)})
    natsserver.wait_until_listening("127.0.0.1", port)
    return Node(proc, port, monitor, cluster, log)


def bus(node: Node, user: str, ca: Path) -> CommonSettings:
    """A service's settings for the node, as docker-compose.yml gives them."""
    return CommonSettings(
        nats_url=f"nats://127.0.0.1:{node.port}",
        nats_user=user,
        nats_password=PASSWORD,
        nats_tls_ca=ca,
    )


def connected_over_tls(node: Node, user: str) -> bool:
    (seen,) = node.monitoring("connz?auth=true")["connections"]
    return seen["authorized_user"] == user and seen["tls_version"].startswith("1.")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Node, Node, Path]]:
    certs = make_certs(tmp_path / "certs")
    env = production_env(certs)
    a_route, b_route = natsserver.free_port(), natsserver.free_port()
    conf = ROOT / "deploy/nats/cluster"
    a = start(["-c", str(conf / "node-1.conf")], tmp_path, "a", env, a_route, [b_route])
    b = start(["-c", str(conf / "node-2.conf")], tmp_path, "b", env, b_route, [a_route])
    try:
        eventually(lambda: a.peers() == {"b"} and b.peers() == {"a"}, "the nodes never routed")
        yield a, b, certs
    finally:
        for node in (a, b):
            node.proc.terminate()
            node.proc.wait(10)


async def test_clients_get_in_over_tls_only(cluster) -> None:
    a, _, certs = cluster
    settings = bus(a, "gateway", certs / "ca.pem")
    nc = await nats.connect(**settings.nats_connect_options(), allow_reconnect=False)
    assert connected_over_tls(a, "gateway")  # the server says so
    await nc.close()

    plain = {k: v for k, v in settings.nats_connect_options().items() if k != "tls"}
    with pytest.raises(Exception):  # noqa: B017, PT011 — nats-py raises what its transport met
        await nats.connect(**plain, allow_reconnect=False, connect_timeout=2)

    untrusted = make_certs(certs.parent / "other-ca")  # a CA the services do not trust
    stranger = settings.model_copy(update={"nats_tls_ca": untrusted / "ca.pem"})
    with pytest.raises(Exception):  # noqa: B017, PT011
        await nats.connect(**stranger.nats_connect_options(), allow_reconnect=False)


def test_production_needs_tls_to_the_bus() -> None:
    with pytest.raises(ValueError, match="OLYMPUS_NATS_TLS_CA must be set in production"):
        CommonSettings(environment="production", nats_user="gateway", nats_password="x")


def test_a_server_without_the_deployments_certificate_cannot_join(cluster, tmp_path) -> None:
    a, b, _ = cluster
    plain = tmp_path / "rogue.conf"  # a cluster member in every way but the certificate
    plain.write_text(f"cluster {{ name: olympus }}\njetstream {{ store_dir: {tmp_path / 'r'} }}\n")
    rogue = start(
        ["-c", str(plain)], tmp_path, "rogue", dict(os.environ), natsserver.free_port(), [a.cluster]
    )
    try:
        # Its route reaches the node, which refuses it: wait for the refusal, not for a clock.
        eventually(
            lambda: "Router connection closed: TLS Handshake Failure" in a.log.read_text(),
            "the stranger's route never reached the node",
        )
        assert a.peers() == {"b"}
        assert b.peers() == {"a"}
        assert rogue.peers() == set()
    finally:
        rogue.proc.terminate()
        rogue.proc.wait(10)


async def test_a_worker_broker_connects_over_tls(cluster) -> None:
    from olympus import delivery

    a, _, certs = cluster
    settings = bus(a, "embedder", certs / "ca.pem")
    broker = delivery.worker_broker(settings, delivery.DeliveryPolicy.from_settings(settings))
    await broker.connect()
    try:
        assert connected_over_tls(a, "embedder")
    finally:
        await broker.stop()
