"""What tracing costs: ingest throughput and query latency with tracing off, then on (spans
exported to a local Phoenix), on the same documents and queries, in one run.

    python -m bench.tracing [--data ../shared/data/scifact] [--docs 400] [--queries 200]

Target: tracing on costs <= 5% (ingest chunks/s and query p50).
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

from olympus.evaluation import chunk_total, ingest, load_beir, wait_indexed
from olympus.stack import temporary_stack

RESULTS = Path(__file__).parent / "results"
MODELS = Path(__file__).resolve().parent.parent / ".olympus" / "models"


async def measure(url: str, key: str, corpus, queries: list[str]) -> dict[str, float]:
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    ) as http:
        started = time.perf_counter()
        ids = await ingest(http, corpus, "bench")
        await wait_indexed(http, "bench", len(ids))
        ingest_s = time.perf_counter() - started
        chunks = await chunk_total(http, "bench")
        await asyncio.sleep(2)  # let the indexer seal its segments, as it does when idle
        for text in queries[:20]:  # warm-up
            await http.post("/mcp/bench/query", json={"input": text, "top_k": 10})
        latencies = []
        for text in queries:
            began = time.perf_counter()
            r = await http.post("/mcp/bench/query", json={"input": text, "top_k": 10})
            r.raise_for_status()
            latencies.append(time.perf_counter() - began)
    return {
        "chunks": chunks,
        "ingest_s": ingest_s,
        "chunks_per_s": chunks / ingest_s,
        "query_p50_ms": statistics.median(latencies) * 1000,
        "query_p90_ms": statistics.quantiles(latencies, n=10)[8] * 1000,
    }


def _cpu_seconds(stack) -> dict[str, float]:
    """CPU time each process of the stack has used so far (user + system, from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for child in stack.supervisor._children:
        fields = Path(f"/proc/{child.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        used[child.name] = (int(fields[11]) + int(fields[12])) / ticks
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    data = load_beir(args.data, max_docs=args.docs)
    queries = [json.loads(line)["text"] for line in (args.data / "queries_train.jsonl").open()]
    queries = queries[: args.queries]
    env = {"OLYMPUS_GENERATOR_MODELS_DIR": str(MODELS)}
    results = {}
    for label, phoenix in (("off", False), ("on", True)):
        with temporary_stack(f"olympus-bench-trace-{label}-", env=env, phoenix=phoenix) as (
            stack,
            config,
        ):
            assert stack.api_key is not None
            before = _cpu_seconds(stack)
            results[label] = asyncio.run(
                measure(config.gateway_url, stack.api_key, data.corpus, queries)
            )
            after = _cpu_seconds(stack)
            results[label]["cpu_s"] = {k: round(after[k] - before[k], 1) for k in after}
            if phoenix:
                spans = httpx.get(
                    f"{config.phoenix_url}/v1/projects/olympus/spans", params={"limit": 10}
                ).json()["data"]
                if not spans:
                    raise RuntimeError("tracing was on but Phoenix received no span")
    off, on = results["off"], results["on"]
    summary = {
        "docs": args.docs,
        "queries": len(queries),
        "off": off,
        "on": on,
        "ingest_ratio": on["chunks_per_s"] / off["chunks_per_s"],
        "query_p50_ratio": on["query_p50_ms"] / off["query_p50_ms"],
    }
    print(f"\nCPU seconds used, off: {off['cpu_s']}\n                   on: {on['cpu_s']}")
    print(f"\n{'':26}{'tracing off':>12}{'on':>10}{'on/off':>9}")
    print(
        f"{'ingest chunks/s':26}{off['chunks_per_s']:>12.1f}{on['chunks_per_s']:>10.1f}"
        f"{summary['ingest_ratio']:>9.3f}"
    )
    print(
        f"{'query p50 ms (hybrid)':26}{off['query_p50_ms']:>12.1f}{on['query_p50_ms']:>10.1f}"
        f"{summary['query_p50_ratio']:>9.3f}"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tracing.json").write_text(json.dumps(summary, indent=2))
    print(f"written {RESULTS / 'tracing.json'}")


if __name__ == "__main__":
    main()
