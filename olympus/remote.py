"""The commands that talk HTTP to a gateway, local or remote: ``login``, ``ask``, ``search``,
``documents ls|show|rm|retry`` (``ingest`` is in ``olympus.ingest``, ``mcp`` in
``olympus.mcp_stdio``).

Where the gateway is and which key to use comes from, first to last: ``--url`` / ``--key``, the
environment (``OLYMPUS_URL``, ``OLYMPUS_API_KEY``), the file ``olympus login`` writes
(``config.json`` in the user's config folder, mode 0600). Every failure is one sentence on
stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from olympus.client import Document, Gateway, GatewayError, Passage
from olympus.private import private_folder, write_private

EXIT_UNREACHABLE = 3  # the gateway could not be reached or refused the key


def config_file() -> Path:
    return Path(platformdirs.user_config_dir("olympus")) / "config.json"


class ClientSettings(BaseSettings):
    """``OLYMPUS_URL`` and ``OLYMPUS_API_KEY``: the gateway the command line talks to."""

    model_config = SettingsConfigDict(env_prefix="OLYMPUS_", extra="ignore")

    url: str = Field(default="http://127.0.0.1:8000", description="the gateway, for the CLI")
    api_key: SecretStr | None = Field(
        default=None, description="the CLI's API key (else the one `olympus login` saved)"
    )


def connection(args: argparse.Namespace) -> tuple[str, str]:
    """The gateway URL and API key: the flags, else the environment, else the saved login."""
    saved = _saved()
    env = ClientSettings()
    url = args.url or (env.url if "OLYMPUS_URL" in os.environ else saved.get("url", env.url))
    key = args.key or (env.api_key.get_secret_value() if env.api_key else saved.get("key", ""))
    return url.rstrip("/"), key


def gateway(args: argparse.Namespace) -> Gateway:
    return Gateway(*connection(args))


def _saved() -> dict[str, str]:
    try:
        return dict(json.loads(config_file().read_text()))
    except (OSError, ValueError):
        return {}


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="the gateway (OLYMPUS_URL, or the saved login)")
    parser.add_argument("--key", help="an API key (OLYMPUS_API_KEY, or the saved login)")


def fail(exc: GatewayError) -> int:
    print(f"olympus: {exc}", file=sys.stderr)
    return EXIT_UNREACHABLE if exc.status in (0, 401, 403) else 1


def cmd_login(args: argparse.Namespace) -> int:
    """Check the URL and key against the gateway, then keep them for the next commands."""
    url, key = connection(args)
    client = Gateway(url, key)
    try:
        client.formats()  # any route that needs a key
    except GatewayError as exc:
        return fail(exc)
    finally:
        client.close()
    path = config_file()
    private_folder(path.parent)
    write_private(path, json.dumps({"url": url, "key": key}))
    print(f"saved {url} and its key to {path} (mode 0600)")
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    client = gateway(args)
    answer, sources, cited, failure = "", [], [], ""
    try:
        for event in client.chat(args.session, args.question, args.mode, args.collection):
            if event.event == "sources":
                sources = event.sources
            elif event.event == "token":
                answer += event.data.get("text", "")
                if not args.json:
                    print(event.data.get("text", ""), end="", flush=True)
            elif event.event == "done":
                cited = list(event.data.get("cited", []))
            elif event.event == "error":
                failure = str(event.data.get("error", {}).get("message", "the answer failed"))
    except GatewayError as exc:
        return fail(exc)
    finally:
        client.close()
    if args.json:
        print(json.dumps({"answer": answer, "cited": cited, "sources": _passages(sources)}))
    else:
        print()
        if sources:
            print("\nSources:")
            for p in sources:
                mark = "*" if p.n in cited else " "
                print(f" {mark}[{p.n}] {p.filename}  ({p.doc_id}, score {p.score:.3f})")
    if failure:
        print(f"olympus ask: {failure}", file=sys.stderr)
        return 1
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    client = gateway(args)
    try:
        found = client.query(args.session, args.query, args.mode, args.top_k, args.collection)
    except GatewayError as exc:
        return fail(exc)
    finally:
        client.close()
    if args.json:
        print(json.dumps(_passages(found)))
        return 0
    for p in found:
        print(f"[{p.n}] {p.filename}  ({p.doc_id}, score {p.score:.3f})")
        print("    " + " ".join(p.text.split())[:300])
    if not found:
        print("nothing found")
    return 0


def cmd_documents_ls(args: argparse.Namespace) -> int:
    client = gateway(args)
    try:
        found = client.documents(args.collection, args.status)
    except GatewayError as exc:
        return fail(exc)
    finally:
        client.close()
    if args.json:
        print(json.dumps([_document(d) for d in found]))
        return 0
    print(f"{'doc_id':<26}{'status':<12}{'chunks':>7}  {'collection':<16}filename")
    for d in found:
        print(f"{d.doc_id:<26}{d.status:<12}{d.chunk_count:>7}  {d.collection:<16}{d.filename}")
    print(f"{len(found)} documents")
    return 0


def cmd_documents_show(args: argparse.Namespace) -> int:
    client = gateway(args)
    try:
        found = client.document(args.doc_id)
        chunks = client.chunks(args.doc_id) if found.status == "indexed" else []
    except GatewayError as exc:
        return fail(exc)
    finally:
        client.close()
    if args.json:
        print(json.dumps(_document(found) | {"chunks": chunks}))
        return 0
    for name, value in _document(found).items():
        print(f"{name:<13} {value}")
    for chunk in chunks:
        print(f"\n--- chunk {chunk['position']} ({chunk['chunk_id']})\n{chunk['text']}")
    return 0


def cmd_documents_rm(args: argparse.Namespace) -> int:
    return _each_document(args, "rm", lambda client, doc_id: client.delete(doc_id), "deleting")


def cmd_documents_retry(args: argparse.Namespace) -> int:
    return _each_document(args, "retry", lambda client, doc_id: client.retry(doc_id), "queued")


def _each_document(
    args: argparse.Namespace, verb: str, act: Callable[[Gateway, str], object], done: str
) -> int:
    """``act`` on each document named; one that fails is reported and the others go on."""
    client = gateway(args)
    failed = 0
    try:
        for doc_id in args.doc_ids:
            try:
                act(client, doc_id)
                print(f"{done} {doc_id}")
            except GatewayError as exc:
                if exc.status in (0, 401, 403):
                    raise
                print(f"olympus documents {verb}: {doc_id}: {exc}", file=sys.stderr)
                failed += 1
    except GatewayError as exc:
        return fail(exc)
    finally:
        client.close()
    return 1 if failed else 0


def _document(d: Document) -> dict[str, Any]:
    return {
        "doc_id": d.doc_id,
        "filename": d.filename,
        "collection": d.collection,
        "status": d.status,
        "chunk_count": d.chunk_count,
        "error": d.error,
        "content_hash": d.content_hash,
    }


def _passages(found: list[Passage]) -> list[dict[str, Any]]:
    return [
        {
            "n": p.n,
            "doc_id": p.doc_id,
            "filename": p.filename,
            "chunk_id": p.chunk_id,
            "score": p.score,
            "text": p.text,
        }
        for p in found
    ]


def add_commands(sub: Any) -> None:
    """The HTTP commands' arguments, on ``olympus``'s subparsers."""
    login = sub.add_parser("login", help="check a gateway URL and key, and keep them (0600)")
    add_connection_flags(login)
    login.set_defaults(func=cmd_login)

    ask = sub.add_parser("ask", help="ask; the answer streams, then its sources")
    ask.add_argument("question")
    ask.add_argument("--session", default="cli", help="the conversation to continue (cli)")
    ask.add_argument("--mode", choices=["hybrid", "dense", "bm25"], default="hybrid")
    ask.add_argument("--collection")
    ask.add_argument("--json", action="store_true", help="one JSON object at the end")
    add_connection_flags(ask)
    ask.set_defaults(func=cmd_ask)

    search = sub.add_parser("search", help="the passages that best match, best first")
    search.add_argument("query")
    search.add_argument("--top-k", type=int, default=5)
    search.add_argument("--mode", choices=["hybrid", "dense", "bm25"], default="hybrid")
    search.add_argument("--collection")
    search.add_argument("--session", default="cli")
    search.add_argument("--json", action="store_true")
    add_connection_flags(search)
    search.set_defaults(func=cmd_search)

    documents = sub.add_parser("documents", help="list, show, retry and delete documents")
    docs = documents.add_subparsers(dest="documents", required=True)
    ls = docs.add_parser("ls", help="the documents, newest first")
    ls.add_argument("--collection")
    ls.add_argument("--status", choices=["queued", "processing", "indexed", "failed"])
    ls.add_argument("--json", action="store_true")
    add_connection_flags(ls)
    ls.set_defaults(func=cmd_documents_ls)
    show = docs.add_parser("show", help="one document's record and its chunks")
    show.add_argument("doc_id")
    show.add_argument("--json", action="store_true")
    add_connection_flags(show)
    show.set_defaults(func=cmd_documents_show)
    rm = docs.add_parser("rm", help="delete documents with their chunks and vectors")
    rm.add_argument("doc_ids", nargs="+")
    add_connection_flags(rm)
    rm.set_defaults(func=cmd_documents_rm)
    retry = docs.add_parser(
        "retry", help="process failed documents again from what the bus holds (no re-upload)"
    )
    retry.add_argument("doc_ids", nargs="+")
    add_connection_flags(retry)
    retry.set_defaults(func=cmd_documents_retry)
