"""The cost curve as the collection grows: query latency, filtered recall and write rate of the
vector store at 10k, 50k and 100k+ chunks, with the exact (FLAT) dense index Olympus uses on
Milvus Lite beside the HNSW index it used before, in the same run.

    python -m bench.scale [--data ../shared/data/scifact] [--sizes 10000 50000 100000]

The first ``--base`` SciFact documents are embedded once with the packaged encoder; the
collection is those vectors repeated under distinct ids, each copy moved by a little noise, three
chunks per document, the documents spread over four tenants holding 1%, 10%, 50% and 39% of
them. At each size the index is closed and reopened (Milvus Lite builds its segment indexes on
load, so only a reopened collection searches its HNSW graph), then each mode is timed for the
smallest and the largest tenant, and dense recall@10 is checked against an exact search over
that tenant's vectors, as is a ``doc_ids`` search for one document (``top_k=100``: all three of
its chunks are expected).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.retrieval import percentiles
from hades import ChunkRecord, SearchQuery
from hades.milvus import MilvusVectorIndex
from olympus.evaluation import load_beir

RESULTS = Path(__file__).parent / "results"
TERM_KEY = bytes(range(32))
TENANTS = (("t1", 1), ("t10", 10), ("t50", 50), ("t39", 39))  # name, percent of documents
CHUNKS_PER_DOC = 3
BATCH = 256
MODES = ("dense", "bm25", "hybrid")


def _tenant(doc: int) -> str:
    slot, low = doc % 100, 0
    for name, percent in TENANTS:
        if slot < low + percent:
            return name
        low += percent
    raise AssertionError(slot)


class Corpus:
    """The base vectors and texts, and the rows made from them under distinct ids."""

    def __init__(self, texts: list[str], vectors: np.ndarray, seed: int = 0) -> None:
        self.texts, self.base = texts, vectors
        self.rng = np.random.default_rng(seed)
        self.vectors = np.zeros((0, vectors.shape[1]), dtype=np.float32)
        self.tenants: list[str] = []

    def grow(self, size: int) -> list[ChunkRecord]:
        start = len(self.tenants)
        picks = np.arange(start, size) % len(self.base)
        noise = self.rng.standard_normal((size - start, self.base.shape[1])).astype(np.float32)
        vectors = self.base[picks] + 0.1 / np.sqrt(self.base.shape[1]) * noise
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        self.vectors = np.vstack([self.vectors, vectors])
        rows = []
        for offset, i in enumerate(range(start, size)):
            doc = i // CHUNKS_PER_DOC
            tenant = _tenant(doc)
            self.tenants.append(tenant)
            rows.append(
                ChunkRecord(
                    f"r{i}",
                    tenant,
                    "c",
                    f"d{doc}",
                    i % CHUNKS_PER_DOC,
                    self.texts[picks[offset]],
                    vectors[offset].tolist(),
                )
            )
        return rows

    def exact(self, tenant: str, query: np.ndarray, k: int) -> set[str]:
        rows = np.flatnonzero(np.array(self.tenants) == tenant)
        best = rows[np.argsort(-(self.vectors[rows] @ query))[:k]]
        return {f"r{i}" for i in best}


def _embed(texts: list[str]) -> np.ndarray:
    from workers.embedder.encoder import Encoder

    return Encoder().embed(texts)


def _measure(index: MilvusVectorIndex, corpus: Corpus, queries: list[tuple[str, np.ndarray]]):
    out: dict[str, dict] = {}
    for mode in MODES:
        text, vector = queries[0]
        started = time.perf_counter()  # the first search after opening loads what it reads
        index.search(SearchQuery("t50", mode, 10, text=text, vector=vector.tolist()))  # type: ignore[arg-type]
        out[f"{mode}/first"] = {"ms": (time.perf_counter() - started) * 1000}
        for tenant in ("t1", "t50"):
            samples = []
            for text, vector in queries:
                q = SearchQuery(tenant, mode, 10, text=text, vector=vector.tolist())  # type: ignore[arg-type]
                started = time.perf_counter()
                index.search(q)
                samples.append(time.perf_counter() - started)
            out[f"{mode}/{tenant}"] = percentiles(samples)
    recall = {}
    for tenant, _ in TENANTS[:3]:
        found = 0
        for _, vector in queries:
            hits = index.search(SearchQuery(tenant, "dense", 10, vector=vector.tolist()))
            found += len({h.chunk_id for h in hits} & corpus.exact(tenant, vector, 10))
        recall[tenant] = found / (10 * len(queries))
    found = 0
    docs = [d for d in range(0, len(corpus.tenants) // CHUNKS_PER_DOC, 97)][: len(queries)]
    for doc, (_, vector) in zip(docs, queries, strict=False):
        q = SearchQuery(_tenant(doc), "dense", 100, vector=vector.tolist(), doc_ids=(f"d{doc}",))
        found += len(index.search(q))
    recall["one_document"] = found / (CHUNKS_PER_DOC * len(docs))
    return out, recall


def _step(path: Path, arm: str, corpus: Corpus, size: int, queries) -> dict:
    dims = corpus.base.shape[1]
    index = MilvusVectorIndex(str(path), dims, term_key=TERM_KEY, dense_index=arm)
    grown = corpus.grow(size)
    started = time.perf_counter()
    for i in range(0, len(grown), BATCH):
        index.upsert(grown[i : i + BATCH])
    index.flush()
    write_s = time.perf_counter() - started
    index.close()
    started = time.perf_counter()
    index = MilvusVectorIndex(str(path), dims, term_key=TERM_KEY, dense_index=arm)
    open_s = time.perf_counter() - started
    latency, recall = _measure(index, corpus, queries)
    index.close()
    return {
        "dense_index": arm,
        "chunks": size,
        "written": len(grown),
        "write_rows_per_s": len(grown) / write_s,
        "open_s": open_s,
        "latency": latency,
        "recall": recall,
    }


def run(data: Path, base: int, sizes: list[int], n_queries: int) -> list[dict]:
    beir = load_beir(data)
    texts = list(beir.corpus.values())[:base]
    asked = list(beir.queries.values())[:n_queries]
    print(f"embedding {len(texts)} documents and {len(asked)} queries once …", flush=True)
    vectors = _embed(texts + asked)
    queries = list(zip(asked, vectors[len(texts) :], strict=True))
    rows = []
    arms = ("FLAT", "HNSW")
    corpora = {arm: Corpus(texts, vectors[: len(texts)]) for arm in arms}
    with tempfile.TemporaryDirectory(prefix="olympus-scale-") as tmp:
        for size in sizes:  # the arms side by side at each size: the machine's load hits both
            for arm in arms:
                rows.append(_step(Path(tmp) / arm, arm, corpora[arm], size, queries))
                _print(rows[-1:], header=len(rows) == 1)
    return rows


def _print(rows: list[dict], header: bool = True) -> None:
    cols = [f"{m}/{t}" for m in MODES for t in ("t1", "t50")]
    if header:
        print(
            f"\n{'index':>6}{'chunks':>8}{'rows/s':>8}{'open s':>7}"
            + "".join(f"{c + ' p50/p99':>22}" for c in cols)
            + "".join(f"{'R@10 ' + t:>10}" for t, _ in TENANTS[:3])
            + f"{'1 doc':>7}"
        )
    for r in rows:
        lat = r["latency"]
        print(
            f"{r['dense_index']:>6}{r['chunks']:>8}{r['write_rows_per_s']:>8.0f}{r['open_s']:>7.1f}"
            + "".join(f"{lat[c]['p50_ms']:>13.1f}/{lat[c]['p99_ms']:<8.1f}" for c in cols)
            + "".join(f"{r['recall'][t]:>10.3f}" for t, _ in TENANTS[:3])
            + f"{r['recall']['one_document']:>7.2f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--base", type=int, default=1000, help="SciFact documents embedded")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    rows = run(args.data, args.base, sorted(args.sizes), args.queries)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(rows, indent=2))
    print(f"written {RESULTS / 'scale.json'}")


if __name__ == "__main__":
    main()
