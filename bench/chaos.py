"""Faults during an ingest, at a size the tests do not reach: what was lost, doubled or left
half-done, and what the fault cost in time, against the same ingest without one.

    python -m bench.chaos [--data ../shared/data/scifact] [--docs 1000] [--only NAME ...]

Each scenario uploads the first ``--docs`` documents of the collection to a fresh embedded stack
(as ``olympus up`` starts it, AckWait and drain time at their defaults) and strikes once a third
of them are indexed. Once every document has settled, the stack is stopped and its stores read
back (``hades.audit``):

- lost: documents not indexed (missing, failed, or with fewer vectors than chunks);
- doubled: vectors beyond one per chunk, orphans included;
- stuck: documents left ``queued`` or ``processing``.

``live reindex`` strikes with no kill: ``olympus reindex`` against the running stack, to other
weights of the same model, while the upload goes on. It must end with every document once in the
new model's vectors (``switched``).

The time columns: the whole ingest, its ratio to the run without a fault (``none``), and the
longest stretch in which no document got indexed (what the fault stalled). ``2 embedders``
against ``none`` is what a second replica buys on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats

from hades.audit import audit_stopped
from olympus import access
from olympus.evaluation import ingest, load_beir
from olympus.settings import CommonSettings
from olympus.stack import Stack, StackConfig, Supervised, start_with_key
from schemas import subjects
from schemas.ids import model_fingerprint, weights_fingerprint
from tests.support.samples import fine_tuned_encoder

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Scenario:
    name: str
    victim: str | None = None  # a supervised process's name; "leader": the ingest stream's;
    # "reindex": olympus reindex to other weights, no kill
    how: signal.Signals = signal.SIGKILL
    replicas: dict[str, int] = field(default_factory=dict)
    cluster: int = 1


SCENARIOS = (
    Scenario("none"),
    Scenario("kill -9 indexer", "indexer"),
    Scenario("kill -9 embedder", "embedder"),
    Scenario("SIGTERM embedder (drain)", "embedder", signal.SIGTERM),
    Scenario("kill -9 1 of 2 embedders", "embedder-2", replicas={"embedder": 2}),
    Scenario("2 embedders", replicas={"embedder": 2}),
    Scenario("kill -9 NATS leader (3 nodes)", "leader", cluster=3),
    Scenario("live reindex", "reindex"),
)


def _start(scenario: Scenario, data_dir: Path, log: Path) -> tuple[Stack, str]:
    config = StackConfig.on_free_ports(
        data_dir,
        env={"OLYMPUS_GATEWAY_RATE_LIMIT": ""},  # the one client here is the benchmark
        replicas=scenario.replicas,
        cluster=scenario.cluster,
    )
    return start_with_key(config, log.open("w"), timeout_s=300)


async def _leader(stack: Stack) -> str:
    """The supervised node that leads the ingest stream now."""
    bus = access.BusSecrets.load(stack.config.data_dir)
    assert bus is not None
    common = CommonSettings(nats_url=stack.config.nats_url)
    nc = await nats.connect(**access.as_user(common, access.ADMIN, bus).nats_connect_options())
    try:
        info = await nc.jetstream().stream_info(subjects.INGEST_STREAM.name)
    finally:
        await nc.close()
    assert info.cluster is not None
    assert info.cluster.leader is not None
    return info.cluster.leader.removeprefix("olympus-")


def _victim(stack: Stack, scenario: Scenario) -> Supervised:
    name = asyncio.run(_leader(stack)) if scenario.victim == "leader" else scenario.victim
    return next(c for c in stack.supervisor._children if c.name == name)


def _indexed(http: httpx.Client) -> int:
    try:
        r = http.get("/rag/documents", params={"status": "indexed", "limit": 1})
        return int(r.json()["total"]) if r.status_code == 200 else -1
    except httpx.HTTPError:  # the gateway between two NATS servers, say
        return -1


def run(scenario: Scenario, corpus: dict[str, str], workdir: Path) -> dict[str, Any]:
    data_dir = workdir / "data"
    stack, key = _start(scenario, data_dir, workdir / "stack.log")
    try:
        url = stack.config.gateway_url
        headers = {"Authorization": f"Bearer {key}"}
        uploaded: dict[str, str] = {}

        def upload() -> None:
            async def go() -> None:
                async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
                    uploaded.update(await ingest(http, corpus, "default"))

            asyncio.run(go())

        sender = threading.Thread(target=upload, daemon=True)
        started = time.monotonic()
        sender.start()
        struck_at, last_count, last_change, stall = None, 0, started, 0.0
        reindex: subprocess.Popen[str] | None = None
        with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
            while True:
                count = _indexed(http)
                now = time.monotonic()
                if count > last_count:
                    stall = max(stall, now - last_change)
                    last_count, last_change = count, now
                if scenario.victim and struck_at is None and count >= len(corpus) // 3:
                    if scenario.victim == "reindex":
                        reindex = _reindex(data_dir, workdir)
                    else:
                        victim = _victim(stack, scenario).proc
                        assert victim is not None
                        os.kill(victim.pid, scenario.how)
                    struck_at = now - started
                settled = not sender.is_alive() and len(uploaded) == len(corpus)
                if reindex is not None and reindex.poll() is None:
                    settled = False
                if settled and _settled(http) >= len(corpus):
                    break
                if now - last_change > 1800:
                    raise TimeoutError(f"{scenario.name}: nothing indexed for 30 minutes")
                time.sleep(0.25)
        elapsed = time.monotonic() - started
    finally:
        stack.stop()
    audit = audit_stopped(data_dir)
    documents = audit["documents"].values()
    switched = None
    if reindex is not None:
        other = weights_fingerprint(str(workdir / "other-weights"))
        switched = reindex.returncode == 0 and model_fingerprint(audit["model"] or "") == other
    whole = [
        d
        for d in documents
        if d["status"] == "indexed" and d["vectors"] >= d["graph_chunks"] == d["chunk_count"]
    ]
    extra = sum(max(0, d["vectors"] - d["chunk_count"]) for d in documents)
    orphans = audit["vectors_total"] - sum(d["vectors"] for d in documents)
    return {
        "scenario": scenario.name,
        "docs": len(corpus),
        "lost": len(corpus) - len(whole),
        "doubled_vectors": extra + max(0, orphans),
        "stuck": sum(1 for d in documents if d["status"] in ("queued", "processing")),
        "struck_at_s": round(struck_at, 1) if struck_at is not None else None,
        "seconds": round(elapsed, 1),
        "longest_stall_s": round(stall, 1),
        "switched": switched,
    }


def _reindex(data_dir: Path, workdir: Path) -> subprocess.Popen[str]:
    """olympus reindex against the stack on ``data_dir``, to other weights of its model."""
    other = fine_tuned_encoder(workdir / "other-weights")
    command = [sys.executable, "-m", "olympus.cli", "reindex", "--model", str(other)]
    return subprocess.Popen(
        [*command, "--data-dir", str(data_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def _settled(http: httpx.Client) -> int:
    total = 0
    for status in ("indexed", "failed"):
        r = http.get("/rag/documents", params={"status": status, "limit": 1})
        total += int(r.json()["total"]) if r.status_code == 200 else 0
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--only", nargs="*", help="scenario names (default: all)")
    args = parser.parse_args()
    corpus = load_beir(args.data, max_docs=args.docs).corpus
    corpus = {k: v for k, v in corpus.items() if v.strip()}
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    rows = []
    for scenario in chosen:
        with tempfile.TemporaryDirectory(prefix="olympus-chaos-") as tmp:
            rows.append(run(scenario, corpus, Path(tmp)))
        print(json.dumps(rows[-1]), flush=True)
    baseline = next((r["seconds"] for r in rows if r["scenario"] == "none"), None)
    for row in rows:
        row["x_none"] = round(row["seconds"] / baseline, 2) if baseline else None
    header = "| scenario | docs | lost | doubled | stuck | struck at s | s | x none | "
    print(header + "longest stall s | switched |")
    print("|---" * 10 + "|")
    for r in rows:
        switched = {None: "-", True: "yes", False: "NO"}[r["switched"]]
        print(
            f"| {r['scenario']} | {r['docs']} | {r['lost']} | {r['doubled_vectors']} | "
            f"{r['stuck']} | {r['struck_at_s'] or '-'} | {r['seconds']} | {r['x_none'] or '-'} | "
            f"{r['longest_stall_s']} | {switched} |"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "chaos.json"
    out.write_text(
        json.dumps(
            {
                "machine": platform.processor() or platform.machine(),
                "cpus": os.cpu_count(),
                "data": str(args.data),
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
