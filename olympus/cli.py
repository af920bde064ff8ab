"""``olympus``: run the embedded stack (``up``), inspect it (``status``), set up its streams
(``streams``), manage API keys (``keys``) and producers' NATS credentials (``producers``),
measure retrieval quality on a BEIR folder (``eval``); and, against any gateway, local or
remote: ``ingest`` files and folders, ``ask``, ``search``, ``documents``, ``login``, and serve
MCP over stdio (``mcp``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from athena.settings import AthenaSettings
from olympus.settings import CommonSettings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    import nats
    import numpy as np

    from hades.milvus import MilvusVectorIndex
    from hades.protocols import DocumentGraph
    from olympus.keys import KeyStore
    from workers.embedder.encoder import Encoder

T = TypeVar("T")


def _port_of(url: str, default: int) -> int:
    tail = url.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else default


def _replicas(text: str) -> dict[str, int]:
    """``embedder=2,generator=2`` -> {"embedder": 2, "generator": 2}."""
    from olympus.stack import check_replicas

    counts: dict[str, int] = {}
    for item in filter(None, text.split(",")):
        name, _, count = item.partition("=")
        if not count.isdigit():
            raise argparse.ArgumentTypeError(f"{item!r}: say WORKER=N, e.g. embedder=2")
        counts[name] = int(count)
    try:
        check_replicas(counts)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return counts


def cmd_up(args: argparse.Namespace) -> int:
    from gateway.settings import GatewaySettings
    from olympus.stack import Stack, StackConfig

    common = CommonSettings()
    gateway = GatewaySettings()
    config = StackConfig(
        data_dir=Path(args.data_dir or common.data_dir).resolve(),
        nats_port=args.nats_port or _port_of(common.nats_url, 4222),
        gateway_port=args.port or gateway.port,
        host=gateway.host,
        log_format="console" if common.log_format == "auto" else common.log_format,
        phoenix_port=args.phoenix_port if args.phoenix else None,
        metrics_port=args.metrics_port or None,
        athena_port=args.athena_port or None,
        replicas=args.replicas,
        cluster=args.cluster,
    )
    stack = Stack(config)
    stop = threading.Event()

    def on_signal(*_: object) -> None:
        stack.supervisor.stopping()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        stack.start()
    except (RuntimeError, TimeoutError) as exc:
        stack.stop()
        print(f"olympus up failed: {exc}", file=sys.stderr)
        return 1
    key_line = (
        f"API key (shown once, keep it): {stack.api_key}"
        if stack.api_key
        else "API key: the one printed on the first run (`olympus keys create` makes another)"
    )
    print(
        "\n".join(
            [
                "",
                f"Olympus is up. Gateway: {config.gateway_url}",
                *([f"Athena (the UI): {config.athena_url}"] if config.athena_url else []),
                f"API docs: {config.gateway_url}/docs   NATS contract: /asyncapi.json",
                f"MCP: {config.gateway_url}/mcp (bearer: the API key; `olympus mcp` for stdio)",
                key_line,
                f"NATS: {config.nats_url}   data: {config.data_dir}",
                *([f"Phoenix (traces): {config.phoenix_url}"] if config.phoenix_url else []),
                f"Metrics: {config.gateway_url}/metrics"
                + "".join(
                    f", {name} :{port}" for name, port in config.worker_metrics_ports().items()
                ),
                "Ctrl-C stops everything.",
                "",
            ]
        ),
        flush=True,
    )
    stop.wait()
    print("stopping…", flush=True)
    stack.stop()
    return 0


def _run_file(data_dir: Path) -> dict[str, str]:
    path = data_dir / "run.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _admin(args: argparse.Namespace) -> tuple[CommonSettings, Path]:
    """How a command reaches the bus: the configured user, else the embedded stack's admin."""
    from olympus import access

    common = CommonSettings()
    data_dir = Path(args.data_dir or common.data_dir)
    url = _run_file(data_dir).get("nats_url", common.nats_url)
    return access.admin_settings(common.model_copy(update={"nats_url": url}), data_dir), data_dir


def cmd_status(args: argparse.Namespace) -> int:
    common, _ = _admin(args)
    url = common.nats_url
    try:
        report = asyncio.run(_status(common))
    except Exception as exc:
        print(f"cannot reach NATS at {url}: {exc}", file=sys.stderr)
        return 1
    print(report)
    return 0


async def _status(common: CommonSettings) -> str:
    import nats

    from olympus import health
    from schemas import subjects
    from schemas.messages import DocumentStats, DocumentStatsReply

    nc = await nats.connect(
        **common.nats_connect_options(),
        connect_timeout=2,
        max_reconnect_attempts=0,
    )
    js = nc.jetstream()
    lines = ["STREAMS", f"  {'name':<18}{'messages':>10}{'bytes':>14}"]
    for spec in subjects.STREAMS:
        try:
            info = await js.stream_info(spec.name)
        except Exception:
            lines.append(f"  {spec.name:<18}{'missing':>10}")
            continue
        lines.append(f"  {spec.name:<18}{info.state.messages:>10}{info.state.bytes:>14}")
    lines += [
        "CONSUMERS",
        f"  {'stream/durable':<34}{'pending':>9}{'ack-pending':>13}{'redelivered':>13}",
    ]
    for spec in subjects.STREAMS:
        for durable in spec.durables:
            try:
                c = await js.consumer_info(spec.name, durable)
            except Exception:
                lines.append(f"  {spec.name + '/' + durable:<34}{'missing':>9}")
                continue
            lines.append(
                f"  {spec.name + '/' + durable:<34}{c.num_pending:>9}{c.num_ack_pending:>13}"
                f"{c.num_redelivered:>13}"
            )
    try:
        dlq = (await js.stream_info(subjects.DLQ_STREAM.name)).state.messages
    except Exception:
        dlq = 0
    lines.append(f"DEAD LETTERS  {dlq}")
    try:
        reply = await nc.request(
            subjects.RPC_DOCUMENT_STATS, DocumentStats().model_dump_json().encode(), timeout=2
        )
        counts = DocumentStatsReply.model_validate_json(reply.data).by_status
        lines.append(
            "DOCUMENTS     " + ("  ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none")
        )
    except Exception:
        lines.append("DOCUMENTS     (the indexer is not answering)")
    workers = await health.probe_all(nc)
    lines.append(
        "WORKERS       " + "  ".join(f"{s}={'up' if up else 'down'}" for s, up in workers.items())
    )
    from workers.embedder.models import read_move

    move = await read_move(js)
    if move is not None:
        state = "being built" if move.phase == "building" else "in use"
        lines.append(f"MODEL         {move.identity or move.to} ({state}; olympus reindex)")
    await nc.close()
    return "\n".join(lines)


def _key_store(args: argparse.Namespace) -> KeyStore:
    from gateway.settings import GatewaySettings
    from olympus.keys import KeyStore

    data_dir = Path(args.data_dir or CommonSettings().data_dir)
    return KeyStore(GatewaySettings().api_keys_file or data_dir / "api_keys.json")


def cmd_keys_create(args: argparse.Namespace) -> int:
    from olympus.keys import KeyExists, parse_duration

    given = None
    if args.from_env and not args.name:
        print("olympus keys create: --from-env needs --name", file=sys.stderr)
        return 2
    if args.from_env:
        given = os.environ.get(args.from_env, "")
        if not given:
            print(f"olympus keys create: ${args.from_env} is not set", file=sys.stderr)
            return 2
    store = _key_store(args)
    try:
        lifetime = parse_duration(args.expires) if args.expires else None
        key = store.create(args.tenant, args.scope, args.name, lifetime, key=given)
    except KeyExists as exc:
        known = store.lookup(given) if given else None
        if known is not None and known.name == args.name and known.tenant == args.tenant:
            print(f"key {args.name} is registered already")  # the installer runs this each start
            return 0
        print(f"olympus keys create: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"olympus keys create: {exc}", file=sys.stderr)
        return 2
    if given is None:
        print(key)  # a given key is the caller's already: never echo a secret to a log
    else:
        print(f"registered key {args.name}")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    infos = _key_store(args).describe(tenant=args.tenant)
    if args.json:
        print(json.dumps([i.model_dump() for i in infos]))
        return 0
    print(f"{'name':<26}{'tenant':<18}{'scope':<7}{'created':<18}{'expires':<18}last used")
    for i in infos:
        print(
            f"{i.name:<26}{i.tenant:<18}{i.scope:<7}{_when(i.created_at):<18}"
            f"{_when(i.expires_at):<18}{_when(i.last_used_at)}"
        )
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    if not _key_store(args).revoke(args.name):
        print(f"olympus keys revoke: no key named {args.name!r}", file=sys.stderr)
        return 1
    print(f"revoked {args.name}: refused from now on")
    return 0


def cmd_streams(args: argparse.Namespace) -> int:
    from olympus import delivery

    common, _ = _admin(args)
    try:
        changes = asyncio.run(delivery.prepare_streams_when_ready(common, args.wait))
    except Exception as exc:
        print(f"cannot set the streams up on {common.nats_url}: {exc}", file=sys.stderr)
        return 1
    print("\n".join(changes))
    return 0


def cmd_producers_create(args: argparse.Namespace) -> int:
    import time

    from olympus import access
    from schemas import subjects
    from schemas.messages import valid_name

    data_dir = Path(args.data_dir or CommonSettings().data_dir)
    try:
        tenant = valid_name(args.tenant, "tenant")
        password = access.create_producer(data_dir, args.name, tenant, time.time())
    except ValueError as exc:
        print(f"olympus producers create: {exc}", file=sys.stderr)
        return 2
    user = access.PRODUCER_PREFIX + args.name
    details = {
        "user": user,
        "password": password,
        "tenant": tenant,
        "publish": subjects.ingest_subject(tenant, "<collection>"),
        "inbox_prefix": access.inbox_prefix(user),
    }
    if args.json:
        print(json.dumps(details))
    else:
        print("\n".join(f"{k:<13} {v}" for k, v in details.items()))
        print("(the password is shown once; connect with that inbox prefix to get acks)")
    return 0


def cmd_producers_list(args: argparse.Namespace) -> int:
    from olympus import access

    data_dir = Path(args.data_dir or CommonSettings().data_dir)
    bus = access.BusSecrets.load(data_dir)
    found = bus.producers if bus else []
    if args.json:
        print(
            json.dumps([{k: v for k, v in vars(p).items() if k != "password_hash"} for p in found])
        )
    else:
        print(f"{'name':<24}{'tenant':<24}created")
        for p in found:
            print(f"{p.name:<24}{p.tenant:<24}{_when(p.created_at)}")
    return 0


def cmd_producers_revoke(args: argparse.Namespace) -> int:
    from olympus import access

    data_dir = Path(args.data_dir or CommonSettings().data_dir)
    if not access.revoke_producer(data_dir, args.name):
        print(f"olympus producers revoke: no producer named {args.name!r}", file=sys.stderr)
        return 1
    print(f"revoked {args.name}")
    return 0


def _when(timestamp: float | None) -> str:
    import datetime

    if not timestamp:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M")


def cmd_reindex(args: argparse.Namespace) -> int:
    """Embed every passage again under ``--model`` into a new collection that then takes the
    old one's place (``hades.reindex``); or, with ``--drop-old``, drop what earlier runs kept."""
    from hades.milvus import MilvusVectorIndex
    from workers.indexer.settings import IndexerSettings
    from workers.indexer.stores import milvus_uri, open_stores

    if not args.model and not args.drop_old and not args.cancel:
        print("olympus reindex: give --model PATH, --drop-old or --cancel", file=sys.stderr)
        return 2
    common = CommonSettings()
    data_dir = Path(args.data_dir or common.data_dir)
    settings = IndexerSettings()
    pid = _run_file(data_dir).get("pid")
    running = bool(pid and _alive(int(pid)))
    if running or args.live or args.cancel:
        return _live_reindex(args)
    graph_file = settings.sqlite_path or data_dir / "graph.sqlite3"
    if settings.graph_backend == "sqlite" and not graph_file.exists():
        print(f"no Olympus data in {data_dir} (no {graph_file.name})", file=sys.stderr)
        return 1
    encoder = None
    if args.model:
        from workers.embedder.encoder import Encoder

        try:
            encoder = Encoder(args.model)
        except (OSError, ValueError) as exc:
            print(f"cannot load an encoder from {args.model}: {exc}", file=sys.stderr)
            return 2
    common = common.model_copy(update={"data_dir": data_dir})
    vectors, graph = open_stores(common, settings)
    assert isinstance(vectors, MilvusVectorIndex)
    try:
        uri = milvus_uri(common, settings)
        if encoder is not None and (code := _reembed(args.model, encoder, uri, vectors, graph)):
            return code
        if args.drop_old:
            for name in vectors.collections():
                if name.startswith(f"{settings.milvus_collection}__"):
                    vectors.drop(name)
                    print(f"dropped {name}")
    finally:
        vectors.close()
        graph.close()
    return 0


def _reembed(
    model: str, encoder: Encoder, uri: str, vectors: MilvusVectorIndex, graph: DocumentGraph
) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from hades.milvus import MilvusVectorIndex, building_name, kept_name
    from hades.reindex import count_passages, reindex
    from schemas.ids import model_fingerprint

    if not model_fingerprint(encoder.identity):
        print(f"{model} is not a folder: reindex needs the model's files", file=sys.stderr)
        return 2
    if model_fingerprint(encoder.identity) == model_fingerprint(vectors.model or ""):
        print(f"{vectors.name} already holds vectors of {encoder.identity}")
        return 0
    name, building = vectors.name, building_name(vectors.name)
    for stale in (building, kept_name(name, vectors.model)):
        if stale in vectors.collections():
            vectors.drop(stale)  # an interrupted run's, or an older copy of these vectors
    target = MilvusVectorIndex(
        uri, encoder.dims, term_key=vectors.term_key, collection=building, beside=vectors
    )
    try:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn()) as progress:
            task = progress.add_task(f"embedding with {encoder.name}", total=count_passages(graph))
            cut = 0

            def embed(texts: Sequence[str]) -> np.ndarray:
                nonlocal cut
                cut += encoder.too_long(texts)
                return encoder.embed(texts)

            done = reindex(
                graph, vectors, target, encoder.identity, embed,
                lambda n: progress.advance(task, n),
            )  # fmt: skip
    finally:
        target.close()
    print(
        f"{_count(done.chunks, 'passage')} of {_count(done.documents, 'document')} embedded "
        f"with {encoder.identity} into {name}; the old vectors are kept as {done.kept_as} "
        "(olympus reindex --drop-old removes them)."
    )
    if cut:
        # The passages were cut for the old model; re-cutting needs the documents again.
        print(
            f"{_count(cut, 'passage')} {'holds' if cut == 1 else 'hold'} more than the "
            f"{encoder.max_length} tokens "
            f"{encoder.name} reads: their ends are not in their vectors (bm25 still finds "
            "them) until their documents are sent again."
        )
    print(
        f"Start the stack with\n  OLYMPUS_EMBEDDER_MODEL={model}\n"
        f"  OLYMPUS_INDEXER_DIMS={encoder.dims}"
    )
    return 0


def _live_reindex(args: argparse.Namespace) -> int:
    """``olympus reindex`` against the running stack: it keeps answering meanwhile and its
    queries switch to the new vectors at once (``olympus.reindex``)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from olympus.reindex import LiveReindex, ReindexError, Report, cancel, drop_old
    from schemas.ids import model_identity
    from schemas.ids import weights_fingerprint as fingerprint

    admin, _ = _admin(args)
    if args.cancel:
        try:
            switched = asyncio.run(_reindex_on_bus(admin, cancel))
        except (ReindexError, OSError) as exc:
            print(f"olympus reindex --cancel: {exc}", file=sys.stderr)
            return 1
        if switched:
            print("the index had switched to the new model: the embedders run it alone now")
        else:
            print("nothing is under way: the embedders run the model the index holds")
        return 0
    if not args.model:  # --drop-old alone
        try:
            dropped = asyncio.run(_reindex_on_bus(admin, drop_old))
        except (ReindexError, OSError) as exc:
            print(f"olympus reindex --drop-old: {exc}", file=sys.stderr)
            return 1
        print("\n".join(f"dropped {name}" for name in dropped) or "nothing was kept")
        return 0
    folder = os.path.abspath(args.model)
    if not fingerprint(folder):
        print(
            f"{args.model} is not a model's folder here: run olympus reindex where the "
            "embedders' model folder is at the same path",
            file=sys.stderr,
        )
        return 2
    identity = model_identity(Path(folder).name, fingerprint(folder))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn()) as progress:
        task = progress.add_task("starting", total=None)
        report = Report(
            phase=lambda text: progress.update(task, description=text),
            total=lambda n: progress.update(task, total=n, completed=0),
            advance=lambda n: progress.advance(task, n),
        )
        try:
            done = asyncio.run(
                _reindex_on_bus(admin, lambda nc: LiveReindex(nc, folder, identity, report).run())
            )
        except (ReindexError, OSError) as exc:
            print(f"olympus reindex: {exc}; nothing changed", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("olympus reindex: interrupted; nothing changed", file=sys.stderr)
            return 130
    print(
        f"{_count(done.passages, 'passage')} of {_count(done.documents, 'document')} embedded "
        f"with {identity} in {done.passes} pass{'es' if done.passes > 1 else ''}, while the "
        "stack kept answering; "
        f"queries use them now. The old vectors are kept as {done.kept_as} "
        "(olympus reindex --drop-old removes them).\n"
        "The embedders run the new model until they restart, and after too (they read the "
        f"move when they start); set OLYMPUS_EMBEDDER_MODEL={folder} to make it their own."
    )
    if args.drop_old:
        dropped = asyncio.run(_reindex_on_bus(admin, drop_old))
        print("\n".join(f"dropped {name}" for name in dropped))
    return 0


async def _reindex_on_bus(common: CommonSettings, work: Callable[[nats.NATS], Awaitable[T]]) -> T:
    from olympus import delivery

    nc = await delivery.connect(common, "olympus-reindex")
    try:
        return await work(nc)
    finally:
        await nc.close()


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmd_eval(args: argparse.Namespace) -> int:
    from olympus.evaluation import run_eval

    return run_eval(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="olympus", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the embedded stack in the foreground")
    up.add_argument("--data-dir", help="data folder (default ./.olympus, OLYMPUS_DATA_DIR)")
    up.add_argument("--port", type=int, help="gateway port (OLYMPUS_GATEWAY_PORT, 8000)")
    up.add_argument("--nats-port", type=int, help="NATS port (from OLYMPUS_NATS_URL, 4222)")
    up.add_argument(
        "--phoenix", action="store_true", help="also start a local Phoenix and trace into it"
    )
    up.add_argument("--phoenix-port", type=int, default=6006, help="Phoenix port (6006)")
    up.add_argument(
        "--athena-port",
        type=int,
        default=AthenaSettings().port,
        help="Athena's port (OLYMPUS_ATHENA_PORT, 8501; 0: no UI)",
    )
    up.add_argument(
        "--metrics-port",
        type=int,
        default=9101,
        help="first of the workers' Prometheus ports (9101: embedder, then indexer, generator; "
        "0: none)",
    )
    up.add_argument(
        "--replicas",
        type=_replicas,
        default={},
        metavar="WORKER=N,...",
        help="processes per model worker, sharing its work: embedder=2,generator=2 (the "
        "indexer owns the embedded stores: one)",
    )
    up.add_argument(
        "--cluster",
        type=int,
        choices=(1, 3, 5),
        default=1,
        help="nats-server nodes on loopback: 3 is a JetStream cluster with every stream on all "
        "three, the production topology on one machine (its streams are kept apart from a "
        "single server's)",
    )
    up.set_defaults(func=cmd_up)

    status = sub.add_parser("status", help="streams, consumers, dead letters, documents")
    status.add_argument("--data-dir")
    status.set_defaults(func=cmd_status)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys", required=True)
    create = keys.add_parser("create", help="create a key for a tenant and print it once")
    create.add_argument("--tenant", default="default")
    create.add_argument(
        "--scope",
        choices=["read", "write", "admin"],
        default="write",
        help="read: search and ask; write: also change documents and context; admin: also keys",
    )
    create.add_argument("--name", help="how `keys list` and `keys revoke` call it")
    create.add_argument("--expires", help="lifetime, e.g. 30d, 12h (default: none)")
    create.add_argument(
        "--from-env",
        metavar="VAR",
        help="register the key in $VAR (made by an installer) instead of a new one; with "
        "--name, running it again with the same key changes nothing",
    )
    create.add_argument("--data-dir")
    create.set_defaults(func=cmd_keys_create)
    k_list = keys.add_parser("list", help="the keys: name, tenant, scope, dates (no secrets)")
    k_list.add_argument("--tenant")
    k_list.add_argument("--data-dir")
    k_list.add_argument("--json", action="store_true")
    k_list.set_defaults(func=cmd_keys_list)
    k_revoke = keys.add_parser("revoke", help="refuse a key from now on, on every gateway")
    k_revoke.add_argument("name")
    k_revoke.add_argument("--data-dir")
    k_revoke.set_defaults(func=cmd_keys_revoke)

    streams = sub.add_parser("streams", help="create or update the JetStream streams (admin)")
    streams.add_argument("--data-dir")
    streams.add_argument(
        "--wait",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long to wait for JetStream to answer (a cluster just started elects a leader)",
    )
    streams.set_defaults(func=cmd_streams)

    producers = sub.add_parser(
        "producers", help="NATS credentials for other systems, each bound to one tenant"
    ).add_subparsers(dest="producers", required=True)
    p_create = producers.add_parser(
        "create", help="a credential that may publish only TENANT's ingest subjects"
    )
    p_create.add_argument("--tenant", required=True)
    p_create.add_argument("--name", required=True, help="e.g. erp-feed")
    p_create.add_argument("--data-dir")
    p_create.add_argument("--json", action="store_true")
    p_create.set_defaults(func=cmd_producers_create)
    p_list = producers.add_parser("list", help="the producers (never their passwords)")
    p_list.add_argument("--data-dir")
    p_list.add_argument("--json", action="store_true")
    p_list.set_defaults(func=cmd_producers_list)
    p_revoke = producers.add_parser("revoke", help="refuse a producer from now on")
    p_revoke.add_argument("name")
    p_revoke.add_argument("--data-dir")
    p_revoke.set_defaults(func=cmd_producers_revoke)

    ev = sub.add_parser("eval", help="retrieval quality on a BEIR-layout folder")
    ev.add_argument("folder", type=Path)
    ev.add_argument("--queries", help="queries file name (default: the first queries*.jsonl)")
    ev.add_argument("--qrels", help="qrels file name (default: the first qrels*.tsv)")
    ev.add_argument("--max-docs", type=int, default=0, help="only the first N documents")
    ev.add_argument("--json", type=Path, help="also write the results as JSON")
    ev.add_argument(
        "--expand",
        choices=("neighbours", "graph"),
        help="also run each mode with this expansion (graph: after the similar relations)",
    )
    ev.set_defaults(func=cmd_eval)

    reindex = sub.add_parser(
        "reindex",
        help="embed every passage again under another model; against a running stack it keeps "
        "answering and switches at once, else it works on the stopped stack's data; the old "
        "vectors are kept until --drop-old",
    )
    reindex.add_argument("--model", help="the new encoder: a Hugging Face folder")
    reindex.add_argument(
        "--live",
        action="store_true",
        help="work through the running stack at OLYMPUS_NATS_URL (automatic when olympus up "
        "runs on --data-dir)",
    )
    reindex.add_argument(
        "--cancel", action="store_true", help="undo a live reindex that was interrupted"
    )
    reindex.add_argument(
        "--drop-old", action="store_true", help="drop the vectors earlier runs kept"
    )
    reindex.add_argument("--data-dir")
    reindex.set_defaults(func=cmd_reindex)

    from olympus import answer_eval, ingest, mcp_stdio, remote

    answer_eval.add_command(sub)
    ingest.add_command(sub)
    remote.add_commands(sub)
    mcp_stdio.add_command(sub)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
