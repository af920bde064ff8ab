"""What tracing costs: ingest throughput and query latency with tracing off, then on, on the
same documents and queries, in one run. "On" is measured twice: exporting to an OTLP receiver
that keeps nothing (the services' own cost, as when Phoenix runs elsewhere) and exporting to a
local Phoenix on the same cores (what `olympus up --phoenix` costs on one machine).

    python -m bench.tracing [--data ../shared/data/scifact] [--docs 400] [--queries 200]

Target: tracing on costs <= 5% (ingest chunks/s and query p50).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import http.server
import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from bench.ingest import cpu_seconds
from olympus.evaluation import chunk_total, ingest, load_beir, wait_indexed
from olympus.stack import temporary_stack

RESULTS = Path(__file__).parent / "results"
# Tracing off; on, exported to a receiver that only counts the spans (standing in for a Phoenix
# on another machine, as in production); on, exported to a Phoenix on the same two cores.
ARMS = ("off", "collector", "phoenix")
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


Names = Callable[[], collections.Counter[str]]


@contextlib.contextmanager
def _collector() -> Iterator[tuple[str, Names]]:
    """An OTLP/HTTP receiver that counts the spans it is sent and keeps nothing: where they go
    when Phoenix runs on another machine, as in production. Yields its URL and the counts."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    names: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            export = ExportTraceServiceRequest.FromString(body)
            with lock:
                for resource in export.resource_spans:
                    for scope in resource.scope_spans:
                        names.update(span.name for span in scope.spans)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def counted() -> collections.Counter[str]:
        with lock:
            return collections.Counter(names)

    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", counted
    finally:
        server.shutdown()


def _in_phoenix(url: str) -> Names:
    def counted() -> collections.Counter[str]:
        names: collections.Counter[str] = collections.Counter()
        cursor = None
        while True:
            params: dict[str, object] = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
            page = httpx.get(f"{url}/v1/projects/olympus/spans", params=params).json()
            names.update(span["name"] for span in page["data"])
            if not (cursor := page.get("next_cursor")):
                return names

    return counted


def _spans_arrived(counted: Names, docs: int, settle_s: float = 300) -> dict[str, float]:
    """Wait until an EMBEDDING span for every document ingested has arrived, and say how long
    after the run that took: spans may arrive late (a busy Phoenix) but none may be lost."""
    ended = time.perf_counter()
    while True:
        names = counted()
        if names["olympus.embed"] >= docs:
            return {"total": sum(names.values()), "late_s": time.perf_counter() - ended}
        if time.perf_counter() - ended > settle_s:
            raise RuntimeError(f"spans were lost: {names['olympus.embed']} of {docs} embeds")
        time.sleep(2)


def run_arm(arm: str, data, queries: list[str], docs: int) -> dict:
    """One whole stack with tracing as ``arm`` says: ingest, then query; what it measured."""
    with contextlib.ExitStack() as scope:
        env = {"OLYMPUS_GENERATOR_MODELS_DIR": str(MODELS)}
        counted: Names | None = None
        if arm == "collector":
            env["OTEL_EXPORTER_OTLP_ENDPOINT"], counted = scope.enter_context(_collector())
        stack, config = scope.enter_context(
            temporary_stack(f"olympus-bench-trace-{arm}-", env=env, phoenix=arm == "phoenix")
        )
        assert stack.api_key is not None
        before = cpu_seconds(stack)
        result = asyncio.run(measure(config.gateway_url, stack.api_key, data.corpus, queries))
        if config.phoenix_url:
            counted = _in_phoenix(config.phoenix_url)
        if counted is not None:  # tracing was on: check it saw the whole run
            result["spans"] = _spans_arrived(counted, docs)
        after = cpu_seconds(stack)
        result["cpu_s"] = {k: round(after[k] - before[k], 1) for k in after}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--rounds", type=int, default=2, help="each round runs every arm; odd rounds backwards"
    )
    args = parser.parse_args()
    data = load_beir(args.data, max_docs=args.docs)
    queries = [json.loads(line)["text"] for line in (args.data / "queries_train.jsonl").open()]
    queries = queries[: args.queries]
    # Arms in ABC CBA order, so a drift of the machine over the run falls on every arm alike.
    rounds: list[dict[str, dict]] = []
    for n in range(args.rounds):
        order = ARMS if n % 2 == 0 else ARMS[::-1]
        rounds.append({arm: run_arm(arm, data, queries, args.docs) for arm in order})
    summary: dict[str, object] = {"docs": args.docs, "queries": len(queries), "rounds": rounds}
    print()
    for n, runs in enumerate(rounds):
        for arm in ARMS:
            print(f"round {n + 1}, CPU seconds used, {arm:>9}: {runs[arm]['cpu_s']}")
    print(
        f"\n{'mean of ' + str(args.rounds) + ' rounds':24}"
        + "".join(f"{arm:>11}" for arm in ARMS)
        + "".join(f"{arm + '/off':>14}" for arm in ARMS[1:])
        + "   per round"
    )
    for key, label in (("chunks_per_s", "ingest chunks/s"), ("query_p50_ms", "query p50 ms")):
        mean = {arm: statistics.fmean(r[arm][key] for r in rounds) for arm in ARMS}
        ratios = {arm: mean[arm] / mean["off"] for arm in ARMS[1:]}
        each = [
            f"{arm}: " + " ".join(f"{r[arm][key] / r['off'][key]:.3f}" for r in rounds)
            for arm in ARMS[1:]
        ]
        summary[key] = mean
        summary[f"{key}_ratio"] = ratios
        print(
            f"{label:24}"
            + "".join(f"{mean[arm]:>11.1f}" for arm in ARMS)
            + "".join(f"{ratios[arm]:>14.3f}" for arm in ARMS[1:])
            + "   "
            + "; ".join(each)
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tracing.json").write_text(json.dumps(summary, indent=2))
    print(f"written {RESULTS / 'tracing.json'}")


if __name__ == "__main__":
    main()
