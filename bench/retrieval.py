"""Retrieval latency: ``POST /mcp/{sid}/query`` through the gateway and NATS, beside the same
search called in-process on H.A.D.E.S. (same encoder, same Indexer code, same stores).

    python -m bench.retrieval [--data ../shared/data/scifact] [--docs 1000] [--queries 200]

Both sides run the same queries at 1 and 8 concurrent clients for each mode. The figures: the
p50 the gateway and NATS add at one client (target <= 3 ms), and the queries per second 8
clients get through the gateway against in-process one at a time (target > 1). Beside them, the
CPU time a query costs each process of the stack and the in-process search: on a machine with
few cores the processes' CPU, not the hops, sets the latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import httpx

from bench.ingest import cpu_seconds
from olympus.evaluation import MODES, ingest, load_beir, wait_indexed
from olympus.stack import Stack, temporary_stack

RESULTS = Path(__file__).parent / "results"
CONCURRENCY = (1, 8)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000, "n": len(ordered)}


async def _drive(call, queries: list[str], clients: int) -> dict[str, float]:
    """Latency percentiles and queries per second of ``clients`` callers sharing ``queries``."""
    pending = list(queries)
    latencies: list[float] = []

    async def client() -> None:
        while pending:
            text = pending.pop()
            started = time.perf_counter()
            await call(text)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - started
    return {**percentiles(latencies), "qps": len(latencies) / wall}


def _per_query(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    """CPU milliseconds per query of each process that used any."""
    spent = {name: (after[name] - before.get(name, 0.0)) * 1000 / n for name in after}
    return {name: round(ms, 2) for name, ms in spent.items() if ms > 0}


async def settled(stack: Stack, quiet_s: float = 2.0, timeout_s: float = 600.0) -> None:
    """Until the indexer has used almost no CPU for ``quiet_s``: once the last document is
    indexed it still relates each to its similar ones (dense searches, when writes pause) and
    seals its segments. Measured before that ends, the first mode paid for it (dense queries
    showed 36 ms of the indexer's CPU each instead of ~10)."""
    deadline = time.monotonic() + timeout_s
    last = cpu_seconds(stack)["indexer"]
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet_s)
        now = cpu_seconds(stack)["indexer"]
        if now - last < 0.05 * quiet_s:
            return
        last = now
    raise TimeoutError(f"the indexer was still busy after {timeout_s:.0f} s")


async def _gateway(stack: Stack, url: str, key: str, corpus, queries, warmup: int) -> dict:
    results = {}
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as http:
        ids = await ingest(http, corpus, "bench")
        await wait_indexed(http, "bench", len(ids))
        await settled(stack)

        for mode in MODES:

            async def call(text: str, mode: str = mode) -> None:
                r = await http.post(
                    "/mcp/bench/query", json={"input": text, "top_k": 10, "mode": mode}
                )
                r.raise_for_status()

            await _drive(call, queries[:warmup], 1)
            for clients in CONCURRENCY:
                before = cpu_seconds(stack)
                results[(mode, clients)] = await _drive(call, queries, clients)
                cpu = _per_query(before, cpu_seconds(stack), len(queries))
                results[(mode, clients)]["cpu_ms_per_query"] = cpu
    return results


async def _in_process(data_dir: Path, queries, warmup: int) -> dict:
    from olympus.settings import CommonSettings
    from schemas.messages import QueryEmbed, QueryRetrieve
    from workers.embedder.batching import EmbeddingBatcher
    from workers.embedder.encoder import Encoder
    from workers.indexer.handlers import Indexer
    from workers.indexer.settings import IndexerSettings
    from workers.indexer.stores import open_stores

    encoder = Encoder()
    batcher = EmbeddingBatcher(
        encoder.tokenize, encoder.embed_tokens, encoder.dims, encoder.batch_size
    )
    batcher.start()
    vectors, graph = open_stores(CommonSettings(data_dir=data_dir), IndexerSettings())

    async def nothing(_event) -> None:
        return None

    indexer = Indexer(vectors, graph, nothing)  # type: ignore[arg-type]
    results = {}
    for mode in MODES:

        async def call(text: str, mode: str = mode) -> None:
            query = QueryEmbed(
                request_id="b",
                tenant="default",
                input=text,
                top_k=10,
                mode=mode,
                session_id="bench",
                deadline=time.time() + 60,
            )
            vector = None
            if mode != "bm25":
                vector = (await batcher.embed([text], lane="query"))[0].tolist()
            await indexer.retrieve(QueryRetrieve(**query.model_dump(), vector=vector))

        await _drive(call, queries[:warmup], 1)
        for clients in CONCURRENCY:
            before = time.process_time()  # this process: the encoder and H.A.D.E.S.' stores
            results[(mode, clients)] = await _drive(call, queries, clients)
            spent = (time.process_time() - before) * 1000 / len(queries)
            results[(mode, clients)]["cpu_ms_per_query"] = round(spent, 2)
    await batcher.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    data = load_beir(args.data, max_docs=args.docs)
    all_queries = [json.loads(line)["text"] for line in (args.data / "queries_train.jsonl").open()]
    queries = all_queries[: args.queries]
    warmup = 20
    with temporary_stack("olympus-bench-") as (stack, config):
        assert stack.api_key
        gateway = asyncio.run(
            _gateway(stack, config.gateway_url, stack.api_key, data.corpus, queries, warmup)
        )
        stack.stop()  # H.A.D.E.S. in-process opens the same stores: the indexer must let go
        direct = asyncio.run(_in_process(config.data_dir, queries, warmup))
    rows = []
    print(
        f"\n{'mode':<8}{'clients':>8}{'gateway p50':>13}{'p99':>8}{'q/s':>7}"
        f"{'in-proc p50':>13}{'p99':>8}{'q/s':>7}{'added p50':>11}{'q/s vs 1 in-proc':>18}"
    )
    for (mode, clients), g in gateway.items():
        d = direct[(mode, clients)]
        row = {
            "mode": mode,
            "clients": clients,
            "gateway": g,
            "in_process": d,
            "added_p50_ms": g["p50_ms"] - d["p50_ms"],
            "qps_vs_in_process_sequential": g["qps"] / direct[(mode, 1)]["qps"],
        }
        rows.append(row)
        print(
            f"{mode:<8}{clients:>8}{g['p50_ms']:>13.1f}{g['p99_ms']:>8.1f}{g['qps']:>7.1f}"
            f"{d['p50_ms']:>13.1f}{d['p99_ms']:>8.1f}{d['qps']:>7.1f}{row['added_p50_ms']:>11.1f}"
            f"{row['qps_vs_in_process_sequential']:>18.2f}"
        )
    print("\nCPU ms per query: through the stack, by process | in-process")
    for row in rows:
        spent = row["gateway"]["cpu_ms_per_query"]
        by_process = ", ".join(f"{name} {ms:.2f}" for name, ms in sorted(spent.items()))
        print(
            f"{row['mode']:<8}{row['clients']:>3}  {by_process} (all {sum(spent.values()):.2f})"
            f" | {row['in_process']['cpu_ms_per_query']:.2f}"
        )
    RESULTS.mkdir(exist_ok=True)
    out = {"docs": args.docs, "queries": len(queries), "rows": rows}
    (RESULTS / "retrieval.json").write_text(json.dumps(out, indent=2))
    print(f"written {RESULTS / 'retrieval.json'}")


if __name__ == "__main__":
    main()
