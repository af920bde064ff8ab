"""Who may publish and subscribe to what on the bus: one NATS user per service, least privilege.

The same rules serve both ways Olympus runs. ``olympus up`` renders them, with generated
passwords, into its own nats-server's configuration; ``python -m olympus.access`` renders them,
with ``$OLYMPUS_NATS_<USER>_PASSWORD`` variables, into ``deploy/nats/users.conf`` for production
(a test fails when that file is stale).

The principles, each closing a way in that was found open:

- Nobody connects without a password.
- Every user has an inbox prefix of its own (``_INBOX_<user>``) and may subscribe to that alone,
  so no one overhears another's replies. Answering a request needs no publish right on inboxes:
  ``allow_responses`` lets a service answer exactly the requests it received.
- The JetStream API is granted call by call: a worker may look at the streams and create, read
  and pull from its own durable consumers; it cannot create, change, purge or delete a stream.
  H.A.D.E.S. alone may read and delete single dead letters: those of a document it deletes.
  Streams are set up by the admin user (``olympus up``, ``olympus streams``).
- A producer (another system feeding documents) may publish only to its own tenant's ingest
  subjects, ``olympus.ingest.<tenant>.>``, and the embedder dead-letters a message whose body
  names another tenant than its subject.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from olympus import natsserver
from olympus.private import private_folder, write_private
from olympus.settings import CommonSettings, inbox_prefix
from schemas import subjects

ADMIN = "admin"
GATEWAY = "gateway"
SERVICES = (GATEWAY, *subjects.WORKERS)
PRODUCER_PREFIX = "producer-"
_USER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool = False

    def render(self) -> str:
        def quoted(items: tuple[str, ...]) -> str:
            return "[" + ", ".join(json.dumps(s) for s in items) + "]"

        lines = [f"publish: {quoted(self.publish)}", f"subscribe: {quoted(self.subscribe)}"]
        if self.allow_responses:
            lines.append("allow_responses: true")
        return "{ " + "\n          ".join(lines) + " }"


def _js_api(verb: str, *tail: str) -> str:
    return ".".join(("$JS.API", verb, *tail))


def _stream_info() -> tuple[str, ...]:
    return tuple(_js_api("STREAM.INFO", s.name) for s in subjects.STREAMS)


def _pull(stream: subjects.StreamSpec, durable: str) -> tuple[str, ...]:
    """What one durable pull consumer needs: create or look it up, fetch, ack (+ in progress),
    and on a work queue erase what it has handled (``delivery.erase``)."""
    name = stream.name
    erase = (_js_api("STREAM.MSG.DELETE", name),) if stream.work_queue else ()
    return (
        *erase,
        _js_api("CONSUMER.INFO", name, durable),
        _js_api("CONSUMER.CREATE", name, durable),
        _js_api("CONSUMER.CREATE", name, durable, ">"),
        _js_api("CONSUMER.DURABLE.CREATE", name, durable),
        _js_api("CONSUMER.MSG.NEXT", name, durable),
        f"$JS.ACK.{name}.{durable}.>",
    )


def _kv_read(bucket: str) -> tuple[str, ...]:
    return (
        _js_api("STREAM.INFO", f"KV_{bucket}"),
        _js_api("STREAM.MSG.GET", f"KV_{bucket}"),
        _js_api("DIRECT.GET", f"KV_{bucket}", ">"),
    )


def _in_flight_marks() -> tuple[str, ...]:
    """The KV bucket where a worker marks the messages it is handling (``delivery.InFlight``)."""
    return (f"$KV.{subjects.INFLIGHT_BUCKET}.>", *_kv_read(subjects.INFLIGHT_BUCKET))


def _own(user: str, *subscribe: str) -> tuple[str, ...]:
    return (*subscribe, f"{inbox_prefix(user)}.>")


def service_permissions() -> dict[str, Permissions]:
    """Each service's rights, spelled from ``schemas.subjects`` (no subject is written here)."""
    reply = subjects.REPLY_STREAM.name
    backlogs = tuple(
        _js_api("CONSUMER.INFO", s.name, d) for s in subjects.STREAMS for d in s.durables
    )
    index_pulls = tuple(
        dict.fromkeys(
            p for d in subjects.INDEX_STREAM.durables for p in _pull(subjects.INDEX_STREAM, d)
        )
    )
    return {
        GATEWAY: Permissions(
            publish=(
                subjects.INGEST_ALL,
                subjects.INDEX_STATUS,
                subjects.QUERY_EMBED,
                subjects.QUERY_RETRIEVE,
                subjects.QUERY_GENERATE,
                subjects.QUERY_CONTROL,
                f"{subjects.RPC_PREFIX}.>",
                *_stream_info(),
                # /readyz reports each durable consumer's backlog
                *backlogs,
                # answers streaming now, per key, counted by every gateway (gateway.limits)
                f"{subjects.SLOTS_PREFIX}.>",
                _js_api("STREAM.MSG.DELETE", subjects.SLOTS_STREAM.name),
                # resuming an answer: an ordered consumer on OLYMPUS_REPLY, or its last message
                _js_api("CONSUMER.CREATE", reply),
                _js_api("CONSUMER.CREATE", reply, ">"),
                _js_api("CONSUMER.DELETE", reply, ">"),
                _js_api("CONSUMER.INFO", reply, ">"),
                _js_api("STREAM.MSG.GET", reply),
                f"$JS.FC.{reply}.>",
                # a retry republishes a failed document's original from its dead letter
                _js_api("STREAM.MSG.GET", subjects.DLQ_STREAM.name),
                _js_api("STREAM.MSG.DELETE", subjects.DLQ_STREAM.name),
            ),
            subscribe=_own(GATEWAY, subjects.EVENTS_ALL, subjects.REPLY_ALL),
        ),
        subjects.EMBEDDER: Permissions(
            publish=(
                subjects.INDEX_UPSERT,
                subjects.INDEX_DELETE,
                subjects.INDEX_STATUS,
                subjects.QUERY_RETRIEVE,
                subjects.DLQ_ALL,
                *_stream_info(),
                *_pull(subjects.INGEST_STREAM, subjects.DURABLE_EMBEDDER_INGEST),
                *_in_flight_marks(),
                # the model olympus reindex moves it to (read only: the admin writes it)
                *_kv_read(subjects.MODEL_BUCKET),
            ),
            subscribe=_own(
                subjects.EMBEDDER,
                subjects.QUERY_EMBED,
                subjects.RPC_EMBED,
                subjects.health_subject(subjects.EMBEDDER),
            ),
            allow_responses=True,
        ),
        subjects.INDEXER: Permissions(
            publish=(
                subjects.EVENTS_ALL,
                subjects.QUERY_GENERATE,
                subjects.DLQ_ALL,
                # a deleted document's dead letters (they hold its text) are erased with it
                _js_api("STREAM.MSG.GET", subjects.DLQ_STREAM.name),
                _js_api("STREAM.MSG.DELETE", subjects.DLQ_STREAM.name),
                *_stream_info(),
                *index_pulls,
                *_pull(subjects.DLQ_STREAM, subjects.DURABLE_INDEXER_LETTERS),
                *_in_flight_marks(),
            ),
            subscribe=_own(
                subjects.INDEXER,
                subjects.QUERY_RETRIEVE,
                *subjects.INDEXER_RPCS,
                *subjects.REINDEX_RPCS,
                subjects.health_subject(subjects.INDEXER),
            ),
            allow_responses=True,
        ),
        subjects.GENERATOR: Permissions(
            publish=(subjects.REPLY_ALL, subjects.INDEX_TURN, subjects.DLQ_ALL, *_stream_info()),
            subscribe=_own(
                subjects.GENERATOR,
                subjects.QUERY_GENERATE,
                subjects.QUERY_CONTROL,
                subjects.health_subject(subjects.GENERATOR),
            ),
            allow_responses=True,
        ),
        ADMIN: Permissions(publish=(">",), subscribe=(">",)),
    }


def producer_permissions(user: str, tenant: str) -> Permissions:
    """A producer publishes its tenant's documents and hears JetStream's acks, nothing else."""
    return Permissions(
        publish=(subjects.ingest_subject(tenant, "*"),),
        subscribe=(f"{inbox_prefix(user)}.>",),
    )


@dataclass
class Producer:
    name: str
    tenant: str
    password_hash: str
    created_at: float

    @property
    def user(self) -> str:
        return PRODUCER_PREFIX + self.name


@dataclass
class BusSecrets:
    """The embedded stack's NATS passwords, one per service, kept 0600 in a 0700 folder."""

    passwords: dict[str, str]
    producers: list[Producer] = field(default_factory=list)

    @staticmethod
    def folder(data_dir: Path) -> Path:
        return data_dir / "secrets"

    @classmethod
    def path(cls, data_dir: Path) -> Path:
        return cls.folder(data_dir) / "bus.json"

    @classmethod
    def load(cls, data_dir: Path) -> BusSecrets | None:
        path = cls.path(data_dir)
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        return cls(raw["passwords"], [Producer(**p) for p in raw.get("producers", [])])

    @classmethod
    def load_or_create(cls, data_dir: Path) -> BusSecrets:
        """The stack's passwords; made once, at the first ``olympus up``."""
        found = cls.load(data_dir)
        made = found or cls({})
        missing = [u for u in (*SERVICES, ADMIN) if u not in made.passwords]
        if missing:
            made.passwords.update({u: secrets.token_urlsafe(32) for u in missing})
            made.save(data_dir)
        return made

    def save(self, data_dir: Path) -> None:
        private_folder(self.folder(data_dir))
        body = {
            "passwords": self.passwords,
            "producers": [vars(p) for p in self.producers],
        }
        write_private(self.path(data_dir), json.dumps(body, indent=2))

    def add_producer(self, name: str, tenant: str, now: float) -> str:
        """A new producer credential; its password is returned once and kept only hashed."""
        import bcrypt

        if not _USER_NAME.match(name):
            raise ValueError(
                f"invalid producer name {name!r}: lowercase letters, digits, '-' and '_', "
                "at most 63 characters"
            )
        if any(p.name == name for p in self.producers):
            raise ValueError(f"a producer named {name!r} exists already")
        password = secrets.token_urlsafe(32)
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
        self.producers.append(Producer(name, tenant, hashed, now))
        return password

    def remove_producer(self, name: str) -> bool:
        before = len(self.producers)
        self.producers = [p for p in self.producers if p.name != name]
        return len(self.producers) < before


def render_users(passwords: dict[str, str], producers: Sequence[Producer] = ()) -> str:
    """An ``authorization`` block for nats-server: every service, and each producer."""
    entries = []
    for user, permissions in service_permissions().items():
        entries.append(_user(user, passwords[user], permissions))
    for producer in producers:
        permissions = producer_permissions(producer.user, producer.tenant)
        entries.append(_user(producer.user, producer.password_hash, permissions))
    return "authorization {\n  users: [\n" + "\n".join(entries) + "\n  ]\n}\n"


def as_user(common: CommonSettings, user: str, bus: BusSecrets) -> CommonSettings:
    """``common`` logging in to the bus as ``user``."""
    return common.model_copy(
        update={"nats_user": user, "nats_password": SecretStr(bus.passwords[user])}
    )


def credentials_env(user: str, bus: BusSecrets) -> dict[str, str]:
    """The environment that makes a child process log in as ``user``."""
    return {"OLYMPUS_NATS_USER": user, "OLYMPUS_NATS_PASSWORD": bus.passwords[user]}


def admin_settings(common: CommonSettings, data_dir: Path) -> CommonSettings:
    """How the ``olympus`` commands reach an embedded stack's bus: as its admin, when the data
    folder holds the stack's secrets and no user is configured."""
    bus = BusSecrets.load(data_dir)
    if common.nats_user or bus is None:
        return common
    return as_user(common, ADMIN, bus)


EMBEDDED_USERS = "secrets/nats-users.conf"
"""The embedded nats-server's users, beside its configuration in the data folder."""
NATS_PID_FILE = "nats.pid"


def write_embedded_users(data_dir: Path, bus: BusSecrets) -> None:
    """The embedded stack's users with bcrypt hashes of their passwords (nats-server checks
    bcrypt itself): the configuration holds no password in the clear."""
    import bcrypt

    hashed = {
        user: bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
        for user, password in bus.passwords.items()
    }
    private_folder(BusSecrets.folder(data_dir))
    write_private(data_dir / EMBEDDED_USERS, render_users(hashed, bus.producers))


def _user(user: str, password: str, permissions: Permissions) -> str:
    # A "$VARIABLE" is expanded by nats-server from its environment; anything else is quoted.
    secret = password if password.startswith("$OLYMPUS_") else json.dumps(password)
    return (
        f"    {{ user: {json.dumps(user)}\n"
        f"      password: {secret}\n"
        f"      permissions: {permissions.render()} }}"
    )


def create_producer(data_dir: Path, name: str, tenant: str, now: float) -> str:
    """Add a producer to an embedded stack's bus (at once, when it runs); its password, once."""
    bus = BusSecrets.load_or_create(data_dir)
    password = bus.add_producer(name, tenant, now)
    bus.save(data_dir)
    _apply(data_dir, bus, PRODUCER_PREFIX + name, password, accepted=True)
    return password


def revoke_producer(data_dir: Path, name: str) -> bool:
    """Remove a producer; a running nats-server refuses it from now on."""
    bus = BusSecrets.load(data_dir)
    if bus is None:
        return False
    gone = next((p for p in bus.producers if p.name == name), None)
    if gone is None:
        return False
    bus.remove_producer(name)
    bus.save(data_dir)
    _apply(data_dir, bus, gone.user, None, accepted=False)
    return True


def _apply(
    data_dir: Path, bus: BusSecrets, user: str, password: str | None, accepted: bool
) -> None:
    """Write the users; a running server reloads them, and this returns once it has (a
    reload signal is answered before the server has read the file)."""
    write_embedded_users(data_dir, bus)
    run = data_dir / "run.json"
    # When the stack is not running, it reads the users as it starts.
    if not run.exists():
        return
    # Every node of the stack's nats-server (one, or a cluster's): nats.pid, nats-2.pid, ...
    reloaded = False
    for pid_file in sorted(data_dir.glob(f"{Path(NATS_PID_FILE).stem}*.pid")):
        with contextlib.suppress(subprocess.CalledProcessError):  # a node not running now
            natsserver.reload(pid_file)
            reloaded = True
    if not reloaded:
        return
    deadline = time.monotonic() + 10
    for url in json.loads(run.read_text())["nats_url"].split(","):
        while natsserver.login_accepted(url, user, password or "-") != accepted:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not take the new users within 10s ({url})")
            time.sleep(0.05)


def production_users(producers: Sequence[Producer] = ()) -> str:
    """``deploy/nats/users.conf``: passwords from the NATS containers' environment, producers
    (hashed) from a data folder's secrets."""
    passwords = {u: f"$OLYMPUS_NATS_{u.upper()}_PASSWORD" for u in (*SERVICES, ADMIN)}
    header = (
        "# Generated from olympus/access.py by `python -m olympus.access [DATA_DIR]` (a test\n"
        "# fails when it is stale): one user per service, least privilege. Producers for other\n"
        "# systems: `olympus producers create --tenant T --data-dir D`, then render with D.\n"
    )
    return header + render_users(passwords, producers)


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    stored = BusSecrets.load(folder) if folder else None
    sys.stdout.write(production_users(stored.producers if stored else ()))
