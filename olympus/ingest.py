"""``olympus ingest PATH...``: every readable file of a supported type under the paths, uploaded
with bounded concurrency and followed until it is indexed or failed, behind one live progress
bar; then a summary, and an exit status that says whether anything failed.

Re-running is how an interrupted run resumes: a file whose identical content the collection
already holds (same name, same SHA-256) is not sent again, and one already queued is only
followed. Ctrl-C stops sending; what was sent goes on being indexed on the server.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from tenacity import retry, retry_if_exception, stop_after_delay

from olympus.client import Document, Formats, Gateway, GatewayError, told_to_wait, wait_as_told
from olympus.remote import add_connection_flags, fail, gateway
from schemas.ids import content_hash

EXIT_INTERRUPTED = 130
FINISHED = ("indexed", "failed", "unchanged")
BATCH_FILES = 32  # files per upload request (fewer when they would pass the size limit)
POLL_S = 1.0
POLL_PAGE = 200
MARGIN_S = 5.0  # a change recorded this long before the last look may not have been visible
QUIET_LOG_S = 10.0  # how often a run whose output is not a terminal prints where it stands


_patient = retry(
    retry=retry_if_exception(told_to_wait),
    wait=wait_as_told,
    stop=stop_after_delay(300),
    reraise=True,
)


@dataclass
class File:
    path: Path
    name: str
    size: int
    digest: str = ""
    doc_id: str = ""
    status: str = "pending"  # pending | sent | unchanged | queued | processing | indexed | failed
    error: str = ""
    chunks: int = 0


@dataclass
class Plan:
    files: list[File] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def plan(paths: list[Path], formats: Formats, pattern: str | None) -> Plan:
    """What to send, what to skip and why: the walk never reads a file's content."""
    found = Plan()
    names: dict[str, Path] = {}
    for root in paths:
        if not root.exists():
            found.unreadable.append((str(root), "does not exist"))
            continue
        for path in _walk(root, found):
            shown = str(path)
            relative = path.relative_to(root).as_posix() if path != root else path.name
            if pattern and not fnmatch.fnmatch(relative, pattern):
                continue
            if path.suffix.lower() not in formats.media_types:
                found.skipped.append((shown, f"unsupported type {path.suffix or '(none)'}"))
                continue
            try:
                size = path.stat().st_size
            except OSError as exc:
                found.unreadable.append((shown, f"cannot be read: {exc.strerror or exc}"))
                continue
            if size == 0:
                found.skipped.append((shown, "empty"))
            elif size > formats.max_upload_bytes:
                found.skipped.append(
                    (shown, f"{size} bytes, over the gateway's {formats.max_upload_bytes}")
                )
            elif path.name in names:
                # A collection keeps one document per file name: the second would replace it.
                found.skipped.append((shown, f"same name as {names[path.name]}"))
            else:
                names[path.name] = path
                found.files.append(File(path, path.name, size))
    return found


def _walk(root: Path, found: Plan) -> list[Path]:
    if not root.is_dir():
        return [root]
    files: list[Path] = []

    def unreadable(exc: OSError) -> None:
        found.unreadable.append((str(exc.filename), exc.strerror or str(exc)))

    for folder, dirs, names in os.walk(root, onerror=unreadable):
        hidden = sorted(d for d in dirs if d.startswith("."))
        for d in hidden:
            found.skipped.append((str(Path(folder, d)), "hidden folder, not walked"))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(folder, n) for n in sorted(names) if not n.startswith(".")]
    return files


class Run:
    """One ingest: sends the plan's files and follows them to the end."""

    def __init__(
        self, client: Gateway, collection: str, files: list[File], formats: Formats, ahead: int
    ):
        self.client = client
        self.ahead = ahead
        self.collection = collection
        self.files = files
        self.formats = formats
        self.by_id: dict[str, File] = {}
        self.started = time.monotonic()
        self.indexed_bytes = 0
        self.mark = 0.0  # the newest change (server time) the last look at the collection saw

    def counts(self) -> Counter[str]:
        return Counter(f.status for f in self.files)

    def done(self) -> bool:
        return all(f.status in FINISHED for f in self.files)

    def in_flight(self) -> int:
        return sum(f.status in ("sent", "queued", "processing") for f in self.files)

    def compare(self) -> list[File]:
        """Mark what the collection already holds; the files still to send."""
        listing = _patient(self.client.documents)(self.collection)
        self.mark = max((d.updated_at for d in listing), default=0.0)
        held = {d.filename: d for d in listing}
        to_send = []
        for f in self.files:
            same = held.get(f.name)
            if same is None:
                to_send.append(f)  # new here: read once, when it is sent
                continue
            try:
                f.digest = content_hash(f.path.read_bytes())
            except OSError as exc:
                f.status, f.error = "failed", f"cannot be read: {exc.strerror or exc}"
                continue
            if same.content_hash == f.digest:
                f.doc_id = same.doc_id
                self.by_id[f.doc_id] = f
                if same.status == "indexed":
                    f.status, f.chunks = "unchanged", same.chunk_count
                    continue
                if same.status in ("queued", "processing"):
                    f.status = same.status  # sent before, not finished: follow it
                    continue
            to_send.append(f)
        return to_send

    def batches(self, files: list[File]) -> Iterator[list[File]]:
        """Files in uploads of up to BATCH_FILES, never more bytes than one file may have."""
        batch: list[File] = []
        size = 0
        most = min(BATCH_FILES, self.formats.max_files_per_request, self.ahead)
        for f in files:
            if batch and (len(batch) >= most or size + f.size > self.formats.max_upload_bytes):
                yield batch
                batch, size = [], 0
            batch.append(f)
            size += f.size
        if batch:
            yield batch

    def send(self, batch: list[File]) -> None:
        loaded: list[tuple[File, bytes]] = []
        for f in batch:
            try:
                data = f.path.read_bytes()
            except OSError as exc:
                f.status, f.error = "failed", f"cannot be read: {exc.strerror or exc}"
                continue
            f.digest = content_hash(data)
            loaded.append((f, data))
        if not loaded:
            return
        try:
            accepted = _patient(self.client.upload)(
                [(f.name, data) for f, data in loaded], self.collection
            )
        except GatewayError as exc:
            if exc.status in (0, 401, 403, 429, 503):
                raise
            if len(loaded) > 1:  # the gateway takes all of an upload or none: find which
                for f, _ in loaded:
                    self.send([f])
                return
            loaded[0][0].status, loaded[0][0].error = "failed", exc.message
            return
        for (f, _), document in zip(loaded, accepted, strict=True):
            f.doc_id = document.doc_id
            self.by_id[f.doc_id] = f
            f.status = "sent"

    def poll(self) -> None:
        """Where the sent files stand: the collection's changes since the last look (the
        listing is newest change first, so that is usually one page)."""
        offset, newest = 0, self.mark
        while True:
            page, total = _patient(self.client.documents_page)(
                self.collection, limit=POLL_PAGE, offset=offset
            )
            for d in page:
                newest = max(newest, d.updated_at)
                f = self.by_id.get(d.doc_id)
                if f is not None and f.status not in FINISHED and d.content_hash == f.digest:
                    self._update(f, d)  # (another hash: still the previous version)
            offset += len(page)
            if not page or offset >= total or page[-1].updated_at < self.mark - MARGIN_S:
                break
        self.mark = newest

    def _update(self, f: File, d: Document) -> None:
        if d.status in ("indexed", "failed", "queued", "processing"):
            f.status = d.status
        elif d.status == "deleted":
            f.status = "failed"
        f.error = d.error or ("deleted while it was being indexed" if d.status == "deleted" else "")
        f.chunks = d.chunk_count
        if d.status == "indexed":
            self.indexed_bytes += f.size


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    client = gateway(args)
    try:
        formats = client.formats()
        found = plan([Path(p) for p in args.paths], formats, args.glob)
        job = Run(client, args.collection, found.files, formats, args.ahead)
        interrupted = _go(job, console, args)
    except GatewayError as exc:
        return fail(exc)
    finally:
        client.close()
    report = _report(job, found, interrupted)
    if args.json:
        print(json.dumps(report))
    else:
        _print(report, found, job, Console())
    if interrupted:
        return EXIT_INTERRUPTED
    return 1 if report["failed"] else 0


def _go(job: Run, console: Console, args: argparse.Namespace) -> bool:
    """Send and follow; True when Ctrl-C stopped it."""
    try:
        to_send = job.compare()
    except KeyboardInterrupt:
        return True
    show = not args.json and console.is_terminal
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[states]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not show,
    )
    pool = ThreadPoolExecutor(max_workers=args.concurrency, thread_name_prefix="upload")
    last_poll = last_log = 0.0
    stalled_since, last_counts = time.monotonic(), job.counts()
    try:
        with progress:
            task = progress.add_task("indexing", total=len(job.files), states="")
            queue = job.batches(to_send)
            uploading: dict[Future[None], int] = {}  # each upload not answered yet: its files
            while True:
                # At most --ahead files between here and indexed: enough to keep the embedder's
                # batches full, few enough that one big ingest does not fill the shared queue
                # and that Ctrl-C leaves little behind.
                while len(uploading) < args.concurrency and (
                    job.in_flight() + sum(uploading.values()) < args.ahead
                ):
                    batch = next(queue, None)
                    if batch is None:
                        break
                    uploading[pool.submit(job.send, batch)] = len(batch)
                if uploading:
                    finished, _ = wait(uploading, timeout=0.2, return_when=FIRST_COMPLETED)
                else:  # (wait() on nothing returns at once: this loop would spin a core)
                    finished = set()
                    time.sleep(0.2)
                for future in finished:
                    del uploading[future]
                    future.result()  # a gateway that went away ends the run here
                now = time.monotonic()
                if now - last_poll >= POLL_S and job.by_id:
                    job.poll()
                    last_poll = now
                counts = job.counts()
                finished_count = counts["indexed"] + counts["failed"] + counts["unchanged"]
                progress.update(task, completed=finished_count, states=_states(counts, job))
                if not show and not args.json and now - last_log >= QUIET_LOG_S:
                    last_log = now
                    print(
                        f"indexing {finished_count}/{len(job.files)} {_states(counts, job)}",
                        file=sys.stderr,
                        flush=True,
                    )
                if counts != last_counts:
                    stalled_since, last_counts = now, counts
                if not uploading and job.done():
                    return False
                if args.stall_s and now - stalled_since > args.stall_s:
                    for f in job.files:
                        if f.status not in FINISHED:
                            f.status = "failed"
                            f.error = f"no progress in {args.stall_s:.0f} s; still on the server"
                    return False
    except KeyboardInterrupt:
        pool.shutdown(wait=True, cancel_futures=True)
        return True
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _states(counts: Counter[str], job: Run) -> str:
    elapsed = max(time.monotonic() - job.started, 1e-6)
    rate = counts["indexed"] / elapsed
    waiting = counts["sent"] + counts["queued"] + counts["pending"]
    return (
        f"indexed {counts['indexed']} · unchanged {counts['unchanged']} · failed {counts['failed']}"
        f" · processing {counts['processing']} · waiting {waiting} · {rate:.1f} docs/s"
    )


def _report(job: Run, found: Plan, interrupted: bool) -> dict[str, object]:
    counts = job.counts()
    elapsed = time.monotonic() - job.started
    return {
        "files": len(job.files),
        "indexed": counts["indexed"],
        "unchanged": counts["unchanged"],
        "failed": counts["failed"] + len(found.unreadable),
        "not_finished": sum(
            n for s, n in counts.items() if s not in ("indexed", "unchanged", "failed")
        ),
        "skipped": len(found.skipped),
        "chunks": sum(f.chunks for f in job.files if f.status == "indexed"),
        "seconds": round(elapsed, 2),
        "docs_per_s": round(counts["indexed"] / elapsed, 2) if elapsed else 0.0,
        "mb_per_s": round(job.indexed_bytes / 1e6 / elapsed, 3) if elapsed else 0.0,
        "interrupted": interrupted,
        "failures": [
            {"path": str(f.path), "error": f.error} for f in job.files if f.status == "failed"
        ]
        + [{"path": p, "error": why} for p, why in found.unreadable],
        "skips": [{"path": p, "reason": why} for p, why in found.skipped],
    }


def _print(report: dict[str, object], found: Plan, job: Run, out: Console) -> None:
    table = Table(title="olympus ingest", show_header=True)
    table.add_column("")
    table.add_column("files", justify="right")
    for label, name in (
        ("indexed now", "indexed"),
        ("already indexed", "unchanged"),
        ("failed", "failed"),
        ("not finished", "not_finished"),
        ("skipped", "skipped"),
    ):
        table.add_row(label, str(report[name]))
    out.print(table)
    out.print(
        f"{report['chunks']} chunks in {report['seconds']} s: {report['docs_per_s']} docs/s, "
        f"{report['mb_per_s']} MB/s"
    )
    failures = report["failures"]
    assert isinstance(failures, list)
    for item in failures:
        out.print(f"[red]failed[/red]  {item['path']}: {item['error']}", highlight=False)
    for path, why in found.skipped:
        out.print(f"skipped {path}: {why}", highlight=False)
    if report["interrupted"]:
        out.print("interrupted: run the same command again to go on where this one stopped")


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def add_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ingest = sub.add_parser(
        "ingest", help="upload files and folders, follow them until indexed (re-run resumes)"
    )
    ingest.add_argument("paths", nargs="+", help="files or folders (walked, hidden ones not)")
    ingest.add_argument("--collection", default="default")
    ingest.add_argument("--glob", help="only paths (relative to the folder) matching: '*.md'")
    ingest.add_argument("--concurrency", type=_at_least_one, default=4, help="uploads at once (4)")
    ingest.add_argument(
        "--ahead",
        type=_at_least_one,
        default=256,
        help="files sent and not yet indexed, at most (256): how much of the queue to take",
    )
    ingest.add_argument(
        "--stall-s",
        type=float,
        default=600.0,
        help="give up when no document changed for this long (600; 0: never)",
    )
    ingest.add_argument("--json", action="store_true", help="the summary as JSON, no bar")
    add_connection_flags(ingest)
    ingest.set_defaults(func=run)
