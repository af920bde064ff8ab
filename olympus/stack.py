"""The embedded stack: nats-server, the workers and the gateway as supervised processes.

``olympus up`` runs it in the foreground; the end-to-end tests, the benchmarks and
``olympus eval`` start exactly the same thing in a temporary data folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import nats

from olympus import access, delivery, health, natsserver
from olympus.keys import KeyStore
from olympus.private import private_folder, write_private
from olympus.settings import CommonSettings
from schemas import subjects

_OWN_CREDENTIALS = frozenset({"OLYMPUS_NATS_USER", "OLYMPUS_NATS_PASSWORD"})
"""Set per child from the stack's secrets, never inherited: Athena and Phoenix get none."""

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # A child of a supervisor killed with SIGKILL would otherwise live on as an orphan.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Supervised:
    name: str
    command: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    # The bus and the trace store: stopped after everything that talks to them.
    infrastructure: bool = False


@dataclass
class Supervisor:
    """Start processes, prefix their output with their name, restart them with back-off."""

    sink: IO[str] = field(default_factory=lambda: sys.stdout)
    max_backoff_s: float = 30.0
    _children: list[Supervised] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def say(self, name: str, line: str) -> None:
        with self._lock:
            self.sink.write(f"{name:>9} | {line.rstrip()}\n")
            self.sink.flush()

    def start(self, child: Supervised) -> Supervised:
        self._children.append(child)
        self._spawn(child)
        threading.Thread(target=self._watch, args=(child,), daemon=True).start()
        return child

    def _spawn(self, child: Supervised) -> None:
        child.proc = subprocess.Popen(
            child.command,
            env=child.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            # A session of its own: a terminal's Ctrl-C, or a signal to the whole group (docker
            # stop, systemd), reaches only the supervisor, which stops the children in order,
            # instead of every child exiting at once and being restarted.
            start_new_session=True,
            # What the stack writes (stores, streams, logs of Phoenix) is its owner's alone.
            umask=0o077,
        )
        child.started_at = time.monotonic()
        threading.Thread(target=self._pump, args=(child, child.proc), daemon=True).start()

    def _pump(self, child: Supervised, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            self.say(child.name, raw.decode("utf-8", "replace"))

    def _watch(self, child: Supervised) -> None:
        backoff = 1.0
        while True:
            assert child.proc is not None
            code = child.proc.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - child.started_at > 60:
                backoff = 1.0  # it ran a good while: this is a new failure, not a crash loop
            self.say("olympus", f"{child.name} exited with {code}; restarting in {backoff:.0f}s")
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, self.max_backoff_s)
            child.restarts += 1
            self._spawn(child)

    def stopping(self) -> None:
        """From now on nothing that exits is restarted (called first thing on a signal)."""
        self._stopping.set()

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the services together, then the infrastructure; SIGKILL what has not left
        within ``timeout_s`` of its signal. Together, not one by one: on a busy machine six
        children each taking most of their grace made stopping outlast a minute."""
        self._stopping.set()
        services = [child for child in self._children if not child.infrastructure]
        infrastructure = [child for child in self._children if child.infrastructure]
        for group in (services, infrastructure):
            running = [c.proc for c in reversed(group) if c.proc and c.proc.poll() is None]
            for proc in running:
                proc.terminate()
            deadline = time.monotonic() + timeout_s
            for proc in running:
                try:
                    proc.wait(max(deadline - time.monotonic(), 0.01))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


SCALABLE = (subjects.EMBEDDER, subjects.GENERATOR)
"""The workers that may run as several processes (``StackConfig.replicas``)."""


def check_replicas(replicas: dict[str, int]) -> None:
    """Refuse what cannot run: an indexer beside another (it alone opens the embedded stores),
    a worker that does not exist, a count out of 1..16."""
    for name, count in replicas.items():
        if name == subjects.INDEXER and count > 1:
            raise ValueError(
                "the embedded indexer is the only process that opens Milvus Lite and SQLite: "
                "one indexer (with a Milvus server and ArangoDB, scale it in containers)"
            )
        if name not in (*SCALABLE, subjects.INDEXER) or not 1 <= count <= 16:
            raise ValueError(
                f"{name}={count}: say WORKER=N with WORKER one of {', '.join(SCALABLE)}, N 1 to 16"
            )


@dataclass
class StackConfig:
    data_dir: Path
    nats_port: int = 4222
    gateway_port: int = 8000
    host: str = "127.0.0.1"
    log_format: str = "json"
    env: dict[str, str] = field(default_factory=dict)
    phoenix_port: int | None = None  # start a local Phoenix there and trace into it
    metrics_port: int | None = None  # workers serve Prometheus metrics here, one port each
    athena_port: int | None = None  # start Athena (the Streamlit UI) there
    replicas: dict[str, int] = field(default_factory=dict)  # worker -> processes (1 if absent)
    cluster: int = 1  # nats-server nodes; 3: a JetStream cluster, every stream on all three
    nodes: list[tuple[int, int]] = field(default_factory=list)  # (client, route) port per node

    @classmethod
    def on_free_ports(cls, data_dir: Path, **options: Any) -> StackConfig:
        """A stack beside any other on this machine: NATS and the gateway on free ports (the
        tests, the benchmarks, ``olympus eval``)."""
        return cls(
            data_dir=data_dir,
            nats_port=natsserver.free_port(),
            gateway_port=natsserver.free_port(),
            **options,
        )

    def __post_init__(self) -> None:
        check_replicas(self.replicas)
        if self.cluster > 1 and not self.nodes:
            clients = [self.nats_port, *(natsserver.free_port() for _ in range(self.cluster - 1))]
            self.nodes = [(client, natsserver.free_port()) for client in clients]

    @property
    def athena_url(self) -> str | None:
        return f"http://{self.host}:{self.athena_port}" if self.athena_port else None

    def worker_metrics_ports(self) -> dict[str, int]:
        if not self.metrics_port:
            return {}
        return {name: self.metrics_port + i for i, name in enumerate(subjects.WORKERS)}

    @property
    def phoenix_url(self) -> str | None:
        return f"http://{self.host}:{self.phoenix_port}" if self.phoenix_port else None

    @property
    def nats_url(self) -> str:
        """Every node's URL, comma-separated: a client moves to another when one goes."""
        ports = [client for client, _ in self.nodes] or [self.nats_port]
        return ",".join(f"nats://{self.host}:{port}" for port in ports)

    def nats_servers(
        self, data: Path, max_payload: int
    ) -> list[tuple[str, natsserver.NatsServerConfig]]:
        """The nats-server processes to run: one, or a cluster's nodes, each with its name."""

        def server(
            name: str, port: int, node: natsserver.ClusterNode | None = None
        ) -> natsserver.NatsServerConfig:
            return natsserver.NatsServerConfig(
                store_dir=data / ("jetstream" if node is None else f"jetstream-cluster/{name}"),
                port=port,
                host=self.host,
                max_payload_bytes=max_payload,
                include=access.EMBEDDED_USERS,
                pid_file=data / (access.NATS_PID_FILE if name == "nats" else f"{name}.pid"),
                node=node,
            )

        if not self.nodes:
            return [("nats", server("nats", self.nats_port))]
        # A route password of this run: the nodes start together and share it.
        password = secrets.token_urlsafe(24)
        routes = tuple(route for _, route in self.nodes)
        servers = []
        for i, (client, route) in enumerate(self.nodes, start=1):
            name = "nats" if i == 1 else f"nats-{i}"
            node = natsserver.ClusterNode(f"olympus-{name}", route, routes, password)
            servers.append((name, server(name, client, node)))
        return servers

    @property
    def gateway_url(self) -> str:
        return f"http://{self.host}:{self.gateway_port}"


class Stack:
    def __init__(self, config: StackConfig, sink: IO[str] | None = None) -> None:
        self.config = config
        self.supervisor = Supervisor(sink=sink or sys.stdout)
        self.api_key: str | None = None

    def child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OLYMPUS_")}
        env.update(
            {
                "OLYMPUS_DATA_DIR": str(self.config.data_dir),
                "OLYMPUS_NATS_URL": self.config.nats_url,
                "OLYMPUS_GATEWAY_HOST": self.config.host,
                "OLYMPUS_GATEWAY_PORT": str(self.config.gateway_port),
                "OLYMPUS_LOG_FORMAT": self.config.log_format,
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        for key, value in os.environ.items():
            if key.startswith("OLYMPUS_") and key not in env and key not in _OWN_CREDENTIALS:
                env[key] = value
        if self.config.phoenix_url:
            env["PHOENIX_COLLECTOR_ENDPOINT"] = self.config.phoenix_url
        env.update(self.config.env)
        return env

    def start(self, timeout_s: float = 180.0) -> None:
        data = self.config.data_dir
        private_folder(data)
        ports = [(self.config.nats_port, "NATS"), (self.config.gateway_port, "gateway")]
        ports += [
            (p, "a NATS node")
            for node in self.config.nodes
            for p in node
            if p != self.config.nats_port
        ]
        if self.config.phoenix_port:
            ports.append((self.config.phoenix_port, "Phoenix"))
        if self.config.athena_port:
            ports.append((self.config.athena_port, "Athena"))
        ports += [(p, f"{n} metrics") for n, p in self.config.worker_metrics_ports().items()]
        for port, what in ports:
            if natsserver.port_open(self.config.host, port):
                raise RuntimeError(f"port {port} for {what} is already in use")
        env = self.child_env()
        if self.config.phoenix_port:
            self._start_phoenix(env, timeout_s)
        # The bus refuses anyone without a password; each service gets its own user.
        bus = access.BusSecrets.load_or_create(data)
        access.write_embedded_users(data, bus)
        common = access.as_user(
            CommonSettings(
                data_dir=data,
                nats_url=self.config.nats_url,
                stream_replicas=self.config.cluster,
            ),
            access.ADMIN,
            bus,
        )
        servers = self.config.nats_servers(data, common.max_message_bytes)
        for name, server in servers:
            command = server.command(data / f"{name}-server.conf")
            self.supervisor.start(Supervised(name, command, env, infrastructure=True))
        for _, server in servers:
            natsserver.wait_until_listening(self.config.host, server.port)
        asyncio.run(delivery.prepare_streams_when_ready(common, timeout_s))
        self.supervisor.say("olympus", "streams ready")
        keys = KeyStore(data / "api_keys.json")
        if keys.is_empty():
            self.api_key = keys.create("default", scope="admin", name="owner")
        python = sys.executable
        metrics_ports = self.config.worker_metrics_ports()
        for name in subjects.WORKERS:
            worker_env = env | access.credentials_env(name, bus) | self._share_cores(name, env)
            for k in range(self.config.replicas.get(name, 1)):
                # Replicas share the durable consumers and queue groups: they split the work.
                # The first serves the worker's metrics port; the others serve none.
                port = metrics_ports.get(name, 0) if k == 0 else 0
                replica_env = worker_env | {"OLYMPUS_METRICS_PORT": str(port)}
                replica = name if k == 0 else f"{name}-{k + 1}"
                command = [python, "-m", f"workers.{name}"]
                self.supervisor.start(Supervised(replica, command, replica_env))
        gateway_env = env | access.credentials_env(access.GATEWAY, bus)
        self.supervisor.start(Supervised("gateway", [python, "-m", "gateway"], gateway_env))
        asyncio.run(self.wait_ready(common, timeout_s))
        if self.config.athena_port:
            self._start_athena(env, keys, timeout_s)
        write_private(
            data / "run.json",
            json.dumps(
                {
                    "nats_url": self.config.nats_url,
                    "gateway_url": self.config.gateway_url,
                    "pid": os.getpid(),
                }
            ),
        )

    def _share_cores(self, name: str, env: dict[str, str]) -> dict[str, str]:
        """Replicas of a model worker split the cores instead of each taking all of them
        (oversubscribed, two encoders on two cores ran slower than one), unless told."""
        count = self.config.replicas.get(name, 1)
        variable = f"OLYMPUS_{name.upper()}_THREADS"
        if count < 2 or variable in env:
            return {}
        return {variable: str(max(1, (os.cpu_count() or 1) // count))}

    def _start_athena(self, env: dict[str, str], keys: KeyStore, timeout_s: float) -> None:
        """Athena after the gateway: it uses a key of its own, kept in <data>/athena.key."""
        assert self.config.athena_url is not None
        key_file = self.config.data_dir / "athena.key"
        if not key_file.exists() and "OLYMPUS_ATHENA_API_KEY" not in env:
            key_file.touch(mode=0o600)
            key_file.write_text(keys.create("default", scope="write", name="athena"))
        app = Path(__file__).resolve().parent.parent / "athena" / "app.py"
        command = [
            sys.executable, "-m", "streamlit", "run", str(app),
            "--server.address", self.config.host,
            "--server.port", str(self.config.athena_port),
            "--server.headless", "true",
            "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none",
            "--client.toolbarMode", "viewer",  # no "Deploy" or developer menu in our UI
        ]  # fmt: skip
        athena_env = env | {"OLYMPUS_ATHENA_GATEWAY_URL": self.config.gateway_url}
        self.supervisor.start(Supervised("athena", command, athena_env))
        _wait_http(f"{self.config.athena_url}/_stcore/health", "Athena", timeout_s)

    def _start_phoenix(self, env: dict[str, str], timeout_s: float) -> None:
        from olympus import phoenix

        assert self.config.phoenix_port is not None
        assert self.config.phoenix_url is not None
        phoenix_env = env | phoenix.environment(
            self.config.data_dir, self.config.host, self.config.phoenix_port
        )
        command = [sys.executable, "-m", "olympus.phoenix"]
        self.supervisor.start(Supervised("phoenix", command, phoenix_env, infrastructure=True))
        _wait_http(f"{self.config.phoenix_url}/healthz", "Phoenix", timeout_s)
        self.supervisor.say("olympus", f"Phoenix ready at {self.config.phoenix_url}")

    async def wait_ready(self, common: CommonSettings, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        nc = await delivery.connect(common, "olympus-up")
        try:
            async with httpx.AsyncClient() as http:
                while time.monotonic() < deadline:
                    if await _ready(nc, http, self.config.gateway_url):
                        return
                    await asyncio.sleep(0.25)
        finally:
            await nc.close()
        raise TimeoutError(f"the stack was not ready within {timeout_s:.0f}s")

    def stop(self) -> None:
        self.supervisor.stop()
        # run.json says the stack is running (olympus reindex refuses to open its stores)
        (Path(self.config.data_dir) / "run.json").unlink(missing_ok=True)

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_with_key(config: StackConfig, sink: IO[str], timeout_s: float = 240) -> tuple[Stack, str]:
    """Start a stack and return it with an API key of its default tenant: the owner's on a
    first start, else a new one. A stack that fails to start is stopped."""
    stack = Stack(config, sink=sink)
    try:
        stack.start(timeout_s=timeout_s)
    except BaseException:
        stack.stop()
        raise
    key = stack.api_key or KeyStore(config.data_dir / "api_keys.json").create("default")
    return stack, key


@contextlib.contextmanager
def temporary_stack(
    prefix: str = "olympus-", env: dict[str, str] | None = None, phoenix: bool = False
) -> Iterator[tuple[Stack, StackConfig]]:
    """A whole stack in a throw-away folder on free ports (eval and the benchmarks use it).

    Its one client is whoever measures it, so no per-key request limit: a 1,000-document upload
    and its progress polls would hit the default 1,000 a minute, and the figures would measure
    the limit. The ingest queue's per-tenant bound stays (its 429s say when to send again)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        config = StackConfig.on_free_ports(
            Path(tmp),
            env={"OLYMPUS_GATEWAY_RATE_LIMIT": "", **(env or {})},
            phoenix_port=natsserver.free_port() if phoenix else None,
        )
        with (Path(tmp) / "stack.log").open("w") as log, Stack(config, sink=log) as stack:
            yield stack, config


def _wait_http(url: str, what: str, timeout_s: float) -> None:
    """Until ``url`` answers 200; a TimeoutError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{what} was not ready within {timeout_s:.0f}s")


async def _ready(nc: nats.NATS, http: httpx.AsyncClient, gateway_url: str) -> bool:
    if not all((await health.probe_all(nc, timeout_s=0.5)).values()):
        return False
    try:
        return (await http.get(f"{gateway_url}/healthz", timeout=0.5)).status_code == 200
    except httpx.HTTPError:
        return False
