"""Ingest throughput: HTTP upload to indexed, beside the raw embedder on the same chunks.

    python -m bench.ingest [--data ../shared/data/scifact] [--sizes 1000 5183]

For each size a fresh embedded stack ingests the first N SciFact documents through
``POST /rag/add_document``; the clock runs from the first upload to the last document indexed.
Then, with the stack stopped, the same chunks (read back from the graph store) go through the
bare encoder in-process, sorted by length in batches, at the precision the pipeline chose
(``OLYMPUS_EMBEDDER_DTYPE``, auto: bf16 only on a CPU with native bf16) and, up to
``--other-max`` documents, at the other CPU precision beside it (the better of two runs each).
The ratio pipeline/raw at the pipeline's own precision is the figure; its target is >= 0.9.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import time
from pathlib import Path

import httpx
import numpy as np

from olympus.evaluation import chunk_total, ingest, load_beir, wait_indexed
from olympus.stack import temporary_stack

RESULTS = Path(__file__).parent / "results"


async def _pipeline(url: str, key: str, corpus: dict[str, str]) -> dict[str, float]:
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    ) as http:
        started = time.perf_counter()
        ids = await ingest(http, corpus, "bench")
        counts = await wait_indexed(http, "bench", len(ids))
        seconds = time.perf_counter() - started
        chunks = await chunk_total(http, "bench")
    return {"documents": len(ids), "chunks": chunks, "seconds": seconds, **counts}


def _chunks(data_dir: Path) -> list[str]:
    db = sqlite3.connect(data_dir / "graph.sqlite3")
    texts = [row[0] for row in db.execute("SELECT text FROM chunks")]
    db.close()
    return texts


def _raw(texts: list[str], dtype: str) -> tuple[float, np.ndarray, str]:
    from workers.embedder.encoder import Encoder
    from workers.embedder.settings import EmbedderSettings

    settings = EmbedderSettings()  # what the stack's embedder read from the same environment
    encoder = Encoder(settings.model, device=settings.device, dtype=dtype, batch_size=16)
    encoder.embed(texts[:32])  # warm up
    best = 0.0
    for _ in range(2):  # the better of two runs: the baseline is never flattered by noise
        started = time.perf_counter()
        vectors = encoder.embed(texts)
        best = max(best, len(texts) / (time.perf_counter() - started))
    return best, vectors, str(encoder.dtype).removeprefix("torch.")


def run(data: Path, sizes: list[int], other_max: int) -> list[dict]:
    from workers.embedder.settings import EmbedderSettings

    rows = []
    for size in sizes:
        corpus = load_beir(data, max_docs=size).corpus
        with temporary_stack("olympus-bench-") as (stack, config):
            assert stack.api_key
            result = asyncio.run(_pipeline(config.gateway_url, stack.api_key, corpus))
            stack.stop()  # the stores are read back, and the encoder measured, on an idle machine
            texts = _chunks(config.data_dir)
        # The baseline is the encoder at the precision the pipeline itself ran at.
        raw, v_raw, dtype = _raw(texts, EmbedderSettings().dtype)
        row = {
            "size": size,
            **result,
            "dtype": dtype,
            "pipeline_chunks_per_s": result["chunks"] / result["seconds"],
            "raw_chunks_per_s": raw,
        }
        row["ratio"] = row["pipeline_chunks_per_s"] / raw
        if size <= other_max:  # the other CPU precision beside it, and how close it comes
            other = "float32" if dtype == "bfloat16" else "bfloat16"
            raw_other, v_other, _ = _raw(texts, other)
            cosine = (v_raw * v_other).sum(axis=1)
            row |= {
                "other_dtype": other,
                "raw_other_chunks_per_s": raw_other,
                "other_speedup": raw_other / raw,
                "other_cosine_min": float(cosine.min()),
            }
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5183])
    parser.add_argument(
        "--other-max", type=int, default=1000, help="the other precision too, up to N docs"
    )
    args = parser.parse_args()
    rows = run(args.data, args.sizes, args.other_max)
    print(
        f"\n{'docs':>6}{'chunks':>8}{'dtype':>10}{'pipeline/s':>12}{'raw/s':>9}{'ratio':>7}"
        f"{'other':>10}{'other/s':>9}{'other x':>9}{'cos min':>9}"
    )
    for r in rows:
        print(
            f"{r['documents']:>6}{r['chunks']:>8}{r['dtype']:>10}"
            f"{r['pipeline_chunks_per_s']:>12.1f}{r['raw_chunks_per_s']:>9.1f}{r['ratio']:>7.2f}"
            f"{r.get('other_dtype', '-'):>10}"
            f"{r.get('raw_other_chunks_per_s', float('nan')):>9.1f}"
            f"{r.get('other_speedup', float('nan')):>9.2f}"
            f"{r.get('other_cosine_min', float('nan')):>9.4f}"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ingest.json").write_text(json.dumps(rows, indent=2))
    print(f"written {RESULTS / 'ingest.json'}")


if __name__ == "__main__":
    main()
