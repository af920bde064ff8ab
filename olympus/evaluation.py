"""``olympus eval DIR``: retrieval quality of the whole pipeline on a BEIR-layout folder.

The corpus goes in through the gateway like any upload, into a fresh embedded stack in a
temporary folder; the queries go through ``POST /mcp/{sid}/query`` in each mode (and, with
``--expand``, in each mode again with that expansion); nDCG@10, Recall@10 and Recall@100 come
from ``ir-measures``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay

from olympus.client import raise_for_gateway, told_to_wait, wait_as_told
from olympus.stack import temporary_stack

MODES = ("dense", "bm25", "hybrid")


@dataclass(frozen=True)
class Beir:
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def _first(folder: Path, pattern: str, name: str | None) -> Path:
    if name:
        return folder / name
    found = sorted(folder.glob(pattern))
    if not found:
        raise FileNotFoundError(f"no {pattern} in {folder}")
    return found[0]


def load_beir(
    folder: Path, queries: str | None = None, qrels: str | None = None, max_docs: int = 0
) -> Beir:
    corpus: dict[str, str] = {}
    with (folder / "corpus.jsonl").open() as f:
        for line in f:
            row = json.loads(line)
            text = "\n\n".join(p for p in (row.get("title", ""), row.get("text", "")) if p.strip())
            corpus[str(row["_id"])] = text
            if max_docs and len(corpus) >= max_docs:
                break
    judged: dict[str, dict[str, int]] = {}
    with _first(folder, "qrels*.tsv", qrels).open() as f:
        next(f)
        for line in f:
            qid, did, score = line.rstrip("\n").split("\t")
            if did in corpus:
                judged.setdefault(qid, {})[did] = int(score)
    asked: dict[str, str] = {}
    with _first(folder, "queries*.jsonl", queries).open() as f:
        for line in f:
            row = json.loads(line)
            if str(row["_id"]) in judged:
                asked[str(row["_id"])] = row["text"]
    return Beir(corpus, asked, judged)


def filename_of(corpus_id: str) -> str:
    return f"{corpus_id}.txt"


_patient = AsyncRetrying(
    retry=retry_if_exception(told_to_wait),
    wait=wait_as_told,
    stop=stop_after_delay(600),
    reraise=True,
)


async def _call(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request, sent again as long as a 429 or 503 says (a bounded queue, a restart)."""
    async for attempt in _patient.copy():
        with attempt:
            r = await http.request(method, url, **kwargs)
            raise_for_gateway(r)
    return r


async def ingest(
    http: httpx.AsyncClient, corpus: dict[str, str], collection: str, concurrency: int = 16
) -> dict[str, str]:
    """Upload every non-empty document; return doc_id -> corpus id."""
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for item in corpus.items():
        if item[1].strip():
            queue.put_nowait(item)
    ids: dict[str, str] = {}

    async def worker() -> None:
        while not queue.empty():
            corpus_id, text = queue.get_nowait()
            # The tenant's share of the ingest queue is bounded: a 429 says when to send again.
            body = {"filename": filename_of(corpus_id), "content": text, "collection": collection}
            r = await _call(http, "POST", "/rag/add_document", json=body)
            ids[r.json()["doc_id"]] = corpus_id

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ids


async def wait_indexed(
    http: httpx.AsyncClient, collection: str, expected: int, timeout_s: float = 3600
) -> dict[str, int]:
    """Wait until every document is indexed or failed; return the counts by status."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = {}
        for status in ("indexed", "failed"):
            params = {"collection": collection, "status": status, "limit": 1}
            r = await _call(http, "GET", "/rag/documents", params=params)
            counts[status] = r.json()["total"]
        if counts["indexed"] + counts["failed"] >= expected:
            return counts
        await asyncio.sleep(0.2)
    raise TimeoutError(f"only {counts} of {expected} documents were done in time")


async def chunk_total(http: httpx.AsyncClient, collection: str) -> int:
    total, offset = 0, 0
    while True:
        params = {"collection": collection, "limit": 1000, "offset": offset}
        r = await _call(http, "GET", "/rag/documents", params=params)
        items = r.json()["items"]
        total += sum(d["chunk_count"] for d in items)
        if len(items) < 1000:
            return total
        offset += 1000


async def run_queries(
    http: httpx.AsyncClient,
    queries: dict[str, str],
    mode: str,
    doc_ids: dict[str, str],
    collection: str,
    concurrency: int = 8,
    expand: str = "none",
) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    pending = list(queries.items())

    async def worker() -> None:
        while pending:
            qid, text = pending.pop()
            body = {
                "input": text[:2000],
                "top_k": 100,
                "mode": mode,
                "collection": collection,
                "unique_documents": True,
                "expand": expand,
            }
            r = await _call(http, "POST", "/mcp/eval/query", json=body)
            hits = r.json()["retrieved_documents"]
            # Rank, not raw score: fused scores tie, and the gateway's order is the answer. A
            # document counts where it first appears (expansion may bring it again).
            ranked = list(dict.fromkeys(doc_ids[h["doc_id"]] for h in hits))
            run[qid] = {doc: float(len(ranked) - i) for i, doc in enumerate(ranked)}

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return run


def score(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    import ir_measures
    from ir_measures import R, nDCG

    measures = [nDCG @ 10, R @ 10, R @ 100]
    # Every judged query counts, also those that retrieved nothing (they score zero).
    full_run = {qid: run.get(qid) or {"-": 0.0} for qid in qrels}
    result = ir_measures.calc_aggregate(measures, qrels, full_run)
    return {str(m): float(result[m]) for m in measures}


async def wait_related(http: httpx.AsyncClient, collection: str, timeout_s: float = 3600) -> None:
    """Wait until H.A.D.E.S. has related the newest document to its similar ones: it does so
    in the order documents were written, once writes pause, so then it has done them all."""
    params = {"collection": collection, "status": "indexed", "limit": 1}
    newest = (await _call(http, "GET", "/rag/documents", params=params)).json()["items"]
    if not newest:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = await _call(http, "GET", "/rag/relations", params={"doc_id": newest[0]["doc_id"]})
        if any(item["origin"] == "similar" for item in r.json()["items"]):
            return
        await asyncio.sleep(1)
    raise TimeoutError("the documents were not related to their similar ones in time")


async def evaluate(
    data: Beir, url: str, key: str, collection: str, expand: str | None = None
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    ) as http:
        started = time.perf_counter()
        doc_ids = await ingest(http, data.corpus, collection)
        counts = await wait_indexed(http, collection, len(doc_ids))
        ingest_s = time.perf_counter() - started
        related_s = 0.0
        if expand == "graph":
            started = time.perf_counter()
            await wait_related(http, collection)
            related_s = time.perf_counter() - started
        results = {}
        for mode in MODES:
            for how in ("none", expand) if expand else ("none",):
                started = time.perf_counter()
                run = await run_queries(http, data.queries, mode, doc_ids, collection, expand=how)
                results[mode if how == "none" else f"{mode}+{how}"] = score(data.qrels, run) | {
                    "queries": len(data.qrels),
                    "seconds": time.perf_counter() - started,
                }
    info = {"ingest_s": ingest_s, "related_s": related_s, **counts, "documents": len(doc_ids)}
    return results, info


def run_eval(args: argparse.Namespace) -> int:
    folder: Path = args.folder
    data = load_beir(folder, args.queries, args.qrels, args.max_docs)
    collection = "".join(c if c.isalnum() else "-" for c in folder.name)[:64] or "eval"
    with temporary_stack("olympus-eval-") as (stack, config):
        assert stack.api_key is not None
        results, ingest_info = asyncio.run(
            evaluate(data, config.gateway_url, stack.api_key, collection, args.expand)
        )
    print(
        f"\n{folder.name}: {ingest_info['documents']} documents "
        f"({ingest_info['failed']} failed), {len(data.qrels)} judged queries, "
        f"ingest {ingest_info['ingest_s']:.0f}s"
    )
    print(f"{'mode':<18}{'nDCG@10':>9}{'R@10':>8}{'R@100':>8}{'queries':>9}")
    for mode, r in results.items():
        print(
            f"{mode:<18}{r['nDCG@10']:>9.3f}{r['R@10']:>8.3f}{r['R@100']:>8.3f}"
            f"{int(r['queries']):>9}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"dataset": folder.name, "ingest": ingest_info, "results": results}, indent=2
            )
        )
    return 0
