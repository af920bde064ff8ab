"""Re-embedding a filled stack under another model (``olympus reindex``), beside the same
encoder alone on the same passages.

    python -m bench.reindex [--data ../shared/data/scifact] [--size 1000] [--rounds 2]

The first N SciFact documents go into a fresh embedded stack with ``olympus ingest``, and the
stack stops. Then, in rounds: ``olympus reindex`` in a fresh process, timed from its start to
its exit (loading the model, reading the graph, writing Milvus and renaming included), and the
embedder's encoder alone on the passages the graph holds, in a fresh process (bench.ingest's
``olympus`` arm, at the same precision). The rounds alternate the target model between a copy
of the packaged encoder with other weights and the packaged one, so each round re-embeds
everything. Ratio: reindex passages/s over the encoder's, each its best round; the figures
go to bench/results/reindex-<size>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.ingest import RESULTS, _measure_arm, _pipeline_dtype, cpu_flags, write_corpus
from olympus.stack import Stack, StackConfig
from tests.support.samples import fine_tuned_encoder
from workers.embedder.encoder import default_model_path


def fill(corpus_folder: Path, stack_dir: Path) -> int:
    """A stack in ``stack_dir`` holding the SciFact files of ``corpus_folder``; stopped after."""
    olympus = Path(sys.executable).parent / "olympus"
    config = StackConfig.on_free_ports(stack_dir, env={"OLYMPUS_GATEWAY_RATE_LIMIT": ""})
    with (stack_dir.parent / "stack.log").open("w") as log, Stack(config, sink=log) as stack:
        assert stack.api_key
        command = [str(olympus), "ingest", str(corpus_folder), "--collection", "bench", "--json"]
        command += ["--url", config.gateway_url, "--key", stack.api_key]
        report = json.loads(subprocess.run(command, check=True, capture_output=True).stdout)
    return int(report["failed"])


def reindex(stack_dir: Path, model: str) -> float:
    olympus = Path(sys.executable).parent / "olympus"
    started = time.perf_counter()
    subprocess.run(
        [str(olympus), "reindex", "--model", model, "--data-dir", str(stack_dir)],
        check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    dtype = _pipeline_dtype()
    with tempfile.TemporaryDirectory(prefix="olympus-bench-reindex-") as tmp:
        work = Path(tmp)
        folder = work / "corpus"
        write_corpus(args.data, args.size, folder)
        stack_dir = work / "stack"
        failed = fill(folder, stack_dir)
        db = sqlite3.connect(stack_dir / "graph.sqlite3")
        texts = [row[0] for row in db.execute("SELECT text FROM chunks ORDER BY rowid")]
        documents = db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        db.close()
        texts_file = work / "chunks.json"
        texts_file.write_text(json.dumps(texts))
        models = [str(fine_tuned_encoder(work / "other-weights")), default_model_path()]
        reindex_s: list[float] = []
        encoder: list[float] = []
        for r in range(args.rounds):
            reindex_s.append(reindex(stack_dir, models[r % 2]))
            encoder.append(_measure_arm("olympus", texts_file, dtype, 1)["chunks_per_s"])
    passages = len(texts)
    best_reindex = passages / min(reindex_s)
    row = {
        "documents": documents,
        "failed": failed,
        "passages": passages,
        "dtype": dtype,
        "reindex_s_rounds": [round(s, 2) for s in reindex_s],
        "reindex_passages_per_s": round(best_reindex, 1),
        "encoder_passages_per_s_rounds": [round(e, 1) for e in encoder],
        "encoder_passages_per_s": round(max(encoder), 1),
        "ratio": round(best_reindex / max(encoder), 3),
        "cpu": f"{os.cpu_count()} cores, {cpu_flags()}",
    }
    print(f"\nCPU: {row['cpu']}; precision {dtype}; passages/s, best of {args.rounds} rounds")
    print(f"{'docs':>6}{'passages':>10}{'reindex':>9}{'encoder':>9}{'ratio':>7}")
    print(
        f"{documents:>6}{passages:>10}{row['reindex_passages_per_s']:>9.1f}"
        f"{row['encoder_passages_per_s']:>9.1f}{row['ratio']:>7.2f}"
    )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"reindex-{args.size}.json"
    out.write_text(json.dumps(row, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
