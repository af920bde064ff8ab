"""The bus as an attacker on the same machine meets it: the embedded stack's nats-server, set up
exactly as ``olympus up`` sets it up (``olympus.access``), with no workers.

Each test is a way in that was open before the users existed: connecting without a password,
publishing another tenant's documents, overhearing other services' replies, deleting a stream.
"""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import time
from pathlib import Path

import nats
import pytest
from nats.errors import TimeoutError as NatsTimeout

from olympus import access, delivery, natsserver
from olympus.settings import CommonSettings
from schemas import subjects

pytestmark = pytest.mark.integration


class Bus:
    """A running embedded bus and the credentials it was made with."""

    def __init__(self, data_dir: Path, config: natsserver.NatsServerConfig) -> None:
        self.data_dir = data_dir
        self.config = config

    @property
    def secrets(self) -> access.BusSecrets:
        found = access.BusSecrets.load(self.data_dir)
        assert found is not None
        return found

    async def connect(
        self, user: str, password: str | None = None, **options: object
    ) -> tuple[nats.NATS, list]:
        """``user`` logged in (its own inbox prefix) and the errors the server sends it."""
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats.connect(
            self.config.url,
            user=user,
            password=password or self.secrets.passwords[user],
            inbox_prefix=access.inbox_prefix(user),
            error_cb=on_error,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            **options,
        )
        return nc, errors


@pytest.fixture
def bus(tmp_path: Path):
    secrets = access.BusSecrets.load_or_create(tmp_path)
    access.write_embedded_users(tmp_path, secrets)
    config = natsserver.NatsServerConfig(
        store_dir=tmp_path / "jetstream",
        port=natsserver.free_port(),
        include=access.EMBEDDED_USERS,
        pid_file=tmp_path / access.NATS_PID_FILE,
    )
    proc = natsserver.start(config, tmp_path / "nats-server.conf", stdout=subprocess.DEVNULL)
    (tmp_path / "run.json").write_text(json.dumps({"nats_url": config.url}))  # as olympus up
    admin = access.as_user(CommonSettings(nats_url=config.url), access.ADMIN, secrets)
    asyncio.run(delivery.prepare_streams(admin))
    yield Bus(tmp_path, config)
    proc.terminate()
    proc.wait(10)


async def _refused(bus: Bus, **credentials: str) -> str:
    with pytest.raises(nats.errors.Error) as refused:
        await nats.connect(
            bus.config.url, allow_reconnect=False, max_reconnect_attempts=0, **credentials
        )
    return str(refused.value)


async def test_nobody_connects_without_the_password(bus):
    assert "Authorization Violation" in await _refused(bus)
    assert "Authorization Violation" in await _refused(bus, user="gateway", password="guess")
    assert "Authorization Violation" in await _refused(bus, user="admin", password="")


async def _stream_count(bus: Bus) -> int:
    nc, _ = await bus.connect(access.ADMIN)
    names = await nc.jetstream().streams_info()
    await nc.close()
    return len(names)


@pytest.mark.parametrize("user", [*access.SERVICES])
async def test_no_service_can_delete_purge_or_change_a_stream(bus, user):
    nc, errors = await bus.connect(user)
    js = nc.jetstream(timeout=1)
    for attempt in (
        js.delete_stream(subjects.INGEST_STREAM.name),
        js.purge_stream(subjects.INDEX_STREAM.name),
        js.update_stream(delivery.stream_config(subjects.DLQ_STREAM, 1024 * 1024)),
    ):
        with pytest.raises(NatsTimeout):  # the server drops the call: no answer comes
            await attempt
    await nc.close()
    assert sum("permissions violation" in e for e in errors) == 3
    assert await _stream_count(bus) == len(subjects.STREAMS) + 2  # and the two KV buckets


@pytest.mark.parametrize("user", [*access.SERVICES])
async def test_only_the_admin_moves_the_embedders_model_or_reindexes(bus, user):
    """A live reindex swaps the vectors every question is answered from: the gateway (the one
    service facing the network) may not ask for it, and no service may move the model."""
    nc, errors = await bus.connect(user)
    move = b'{"moved": ["9027947a4381"], "to": "/tmp/evil", "phase": "switched"}'
    for subject in subjects.REINDEX_RPCS:
        await nc.publish(subject, b"{}")
    await nc.publish(f"$KV.{subjects.MODEL_BUCKET}.{subjects.MODEL_KEY}", move)  # a KV put
    await nc.flush()
    await asyncio.sleep(0.2)
    await nc.close()
    assert sum("permissions violation" in e for e in errors) == len(subjects.REINDEX_RPCS) + 1


@pytest.mark.parametrize("user", [*access.SERVICES])
async def test_a_service_hears_its_own_inbox_only(bus, user):
    others = [u for u in (*access.SERVICES, "admin") if u != user]
    nc, errors = await bus.connect(user)
    for target in ["_INBOX.>", *(f"{access.inbox_prefix(o)}.>" for o in others)]:
        await nc.subscribe(target)
    await nc.flush()
    await asyncio.sleep(0.2)
    await nc.close()
    assert sum("permissions violation for subscription" in e for e in errors) == len(others) + 1


async def test_a_producer_publishes_its_own_tenants_documents_and_nothing_else(bus):
    password = access.create_producer(bus.data_dir, "erp", "acme", time.time())
    nc, errors = await bus.connect("producer-erp", password)
    js = nc.jetstream()
    ack = await js.publish(subjects.ingest_subject("acme", "reports"), b"{}")
    assert ack.stream == subjects.INGEST_STREAM.name
    forbidden = [
        subjects.ingest_subject("globex", "reports"),
        subjects.INDEX_DELETE,
        subjects.QUERY_CONTROL,
        subjects.RPC_DOCUMENT_LIST,
        f"$JS.API.STREAM.DELETE.{subjects.INGEST_STREAM.name}",
        f"$JS.API.STREAM.MSG.GET.{subjects.INGEST_STREAM.name}",
    ]
    for subject in forbidden:
        await nc.publish(subject, b"{}")
    for subject in ("_INBOX.>", f"{access.inbox_prefix('gateway')}.>", subjects.REPLY_ALL, ">"):
        await nc.subscribe(subject)
    await nc.flush()
    await asyncio.sleep(0.3)
    await nc.close()
    assert sum("permissions violation for publish" in e for e in errors) == len(forbidden)
    assert sum("permissions violation for subscription" in e for e in errors) == 4


async def test_a_producer_name_must_be_unique_and_plain(bus):
    access.create_producer(bus.data_dir, "feed", "acme", time.time())
    with pytest.raises(ValueError, match="exists already"):
        access.create_producer(bus.data_dir, "feed", "globex", time.time())
    with pytest.raises(ValueError, match="invalid producer name"):
        access.create_producer(bus.data_dir, "feed.>", "acme", time.time())


async def test_a_revoked_producer_is_refused_at_once(bus):
    password = access.create_producer(bus.data_dir, "old", "acme", time.time())
    dropped = asyncio.Event()

    async def on_disconnect() -> None:
        dropped.set()

    nc, _ = await bus.connect("producer-old", password, disconnected_cb=on_disconnect)
    assert access.revoke_producer(bus.data_dir, "old")
    await asyncio.wait_for(dropped.wait(), 10)  # the reload drops its connection
    assert not nc.is_connected
    assert "Authorization Violation" in await _refused(bus, user="producer-old", password=password)
    assert not access.revoke_producer(bus.data_dir, "old")


def test_the_secrets_are_private(bus):
    folder = access.BusSecrets.folder(bus.data_dir)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in (access.BusSecrets.path(bus.data_dir), bus.data_dir / access.EMBEDDED_USERS):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((bus.data_dir / "nats-server.conf").stat().st_mode) == 0o600
    # The server's configuration holds bcrypt hashes, never a password in the clear.
    users = (bus.data_dir / access.EMBEDDED_USERS).read_text()
    assert not any(p in users for p in bus.secrets.passwords.values())
    assert users.count('"$2b$') == len(bus.secrets.passwords)


def test_the_secrets_are_made_once(tmp_path):
    first = access.BusSecrets.load_or_create(tmp_path).passwords
    assert access.BusSecrets.load_or_create(tmp_path).passwords == first
    assert set(first) == {*access.SERVICES, access.ADMIN}
    assert len(set(first.values())) == len(first)


def test_the_production_users_file_is_current():
    """deploy/nats/users.conf is rendered from the same rules: regenerate it with
    `python -m olympus.access > deploy/nats/users.conf` after changing them."""
    path = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "users.conf"
    assert path.read_text() == access.production_users()


def test_an_unknown_user_environment_is_not_inherited(tmp_path, monkeypatch):
    """A child of ``olympus up`` logs in as itself, whatever the caller's environment says."""
    from olympus.stack import Stack, StackConfig

    monkeypatch.setenv("OLYMPUS_NATS_USER", "admin")
    monkeypatch.setenv("OLYMPUS_NATS_PASSWORD", "leaked")
    env = Stack(StackConfig(data_dir=tmp_path)).child_env()
    assert "OLYMPUS_NATS_USER" not in env
    assert "OLYMPUS_NATS_PASSWORD" not in env
