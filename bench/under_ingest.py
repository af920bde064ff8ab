"""Queries while someone else's upload runs: ``POST /mcp/{sid}/query`` on a small collection,
at rest and then during a bulk ingest into another collection, in one stack.

    python -m bench.under_ingest [--data ../shared/data/scifact] [--docs 2000] [--small 300]

The figures: each mode's p50 and p99 during the ingest against the same queries at rest, and
their ratio. The embedder and the indexer share the machine's cores with the ingest, so the
ratio is never 1; what should not happen is queries getting slower and slower as the upload goes
on (``--windows`` parts of the ingest, each with its p50). Run it again with
``OLYMPUS_INDEXER_FLUSH_ROWS=1000000000`` for what the stack did before it sealed Milvus
segments while writes went on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

import httpx

from bench.retrieval import percentiles, settled
from olympus.evaluation import ingest, load_beir, wait_indexed
from olympus.stack import Stack, temporary_stack

RESULTS = Path(__file__).parent / "results"
MODES = ("bm25", "dense")


async def _query(http: httpx.AsyncClient, text: str, mode: str) -> float:
    started = time.perf_counter()
    r = await http.post(
        "/mcp/bench/query",
        json={"input": text, "top_k": 10, "mode": mode, "collection": "small"},
    )
    r.raise_for_status()
    return time.perf_counter() - started


async def _phases(stack: Stack, small, bulk, queries: list[str], rest_n: int) -> dict:
    """The small collection uploaded and settled, its queries at rest, then during the bulk
    upload; each latency during it with the time since the upload began."""
    async with httpx.AsyncClient(
        base_url=stack.config.gateway_url,
        headers={"Authorization": f"Bearer {stack.api_key}"},
        timeout=120,
    ) as http:
        ids = await ingest(http, small, "small")
        await wait_indexed(http, "small", len(ids))
        await settled(stack)
        return await _around_an_upload(http, bulk, queries, rest_n)


async def _around_an_upload(http: httpx.AsyncClient, bulk, queries: list[str], rest_n: int) -> dict:
    at_rest: dict[str, list[float]] = {m: [] for m in MODES}
    for i in range(rest_n):
        for mode in MODES:
            at_rest[mode].append(await _query(http, queries[i % len(queries)], mode))

    during: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}

    async def upload() -> None:
        uploaded = await ingest(http, bulk, "bulk")
        await wait_indexed(http, "bulk", len(uploaded))

    started = time.monotonic()
    job = asyncio.create_task(upload())
    i = 0
    while not job.done():
        for mode in MODES:
            latency = await _query(http, queries[i % len(queries)], mode)
            during[mode].append((time.monotonic() - started, latency))
        i += 1
    await job
    return {"at_rest": at_rest, "during": during, "ingest_s": time.monotonic() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--docs", type=int, default=2000, help="documents the bulk upload sends")
    parser.add_argument("--small", type=int, default=300, help="documents of the queried one")
    parser.add_argument("--rest", type=int, default=60, help="queries per mode at rest")
    parser.add_argument("--windows", type=int, default=4, help="parts of the ingest reported")
    args = parser.parse_args()
    bulk = load_beir(args.data, max_docs=args.docs).corpus
    small = dict(list(bulk.items())[: args.small])
    queries = [json.loads(line)["text"] for line in (args.data / "queries_train.jsonl").open()]
    with temporary_stack("olympus-bench-") as (stack, _config):
        runs = asyncio.run(_phases(stack, small, bulk, queries, args.rest))
    flush_rows = os.environ.get("OLYMPUS_INDEXER_FLUSH_ROWS", "default")
    print(
        f"\n{args.docs} documents uploaded in {runs['ingest_s']:.0f} s"
        f" (OLYMPUS_INDEXER_FLUSH_ROWS={flush_rows}); queries on {args.small} others"
    )
    print(
        f"{'mode':<7}{'rest p50':>10}{'p99':>8}{'ingest p50':>12}{'p99':>8}{'x p50':>7}{'x p99':>7}"
    )
    rows = []
    for mode in MODES:
        rest = percentiles(runs["at_rest"][mode])
        samples = runs["during"][mode]
        busy = percentiles([latency for _, latency in samples])
        span = runs["ingest_s"] / args.windows
        windows = [
            statistics.median([lat for t, lat in samples if k * span <= t < (k + 1) * span] or [0])
            * 1000
            for k in range(args.windows)
        ]
        row = {
            "mode": mode,
            "at_rest": rest,
            "during_ingest": busy,
            "p50_ratio": busy["p50_ms"] / rest["p50_ms"],
            "p99_ratio": busy["p99_ms"] / rest["p99_ms"],
            "p50_by_window_ms": windows,
        }
        rows.append(row)
        print(
            f"{mode:<7}{rest['p50_ms']:>10.1f}{rest['p99_ms']:>8.1f}{busy['p50_ms']:>12.1f}"
            f"{busy['p99_ms']:>8.1f}{row['p50_ratio']:>7.2f}{row['p99_ratio']:>7.2f}"
            f"   p50 through the ingest: {' / '.join(f'{w:.0f}' for w in windows)} ms"
        )
    RESULTS.mkdir(exist_ok=True)
    out = {"docs": args.docs, "small": args.small, "flush_rows": flush_rows, "rows": rows}
    (RESULTS / "under_ingest.json").write_text(json.dumps(out, indent=2))
    print(f"written {RESULTS / 'under_ingest.json'}")


if __name__ == "__main__":
    main()
