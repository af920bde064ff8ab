"""What reading in a reader process costs: PDF, DOCX and HTML documents extracted in the
embedder's own process (the baseline), then through ``Reader`` (a pebble process with a memory
and a time limit), the same documents in the same run.

    python -m bench.reading [--rounds 30]

Target: the reader adds at most a few milliseconds per document (ratio printed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from schemas.formats import media_type_of
from tests.support.samples import TOPICS, render
from workers.embedder.extract import Reader, ReadLimits, extract_text

RESULTS = Path(__file__).parent / "results"
ISOLATED = (".pdf", ".docx", ".html")


async def run(rounds: int) -> dict[str, float]:
    docs = [(name, render(name, text)) for name, (text, _) in sorted(TOPICS.items())]
    docs = [(name, data, media_type_of(name) or "") for name, data in docs]
    docs = [d for d in docs if d[0].endswith(ISOLATED)]
    reader = Reader(ReadLimits())
    try:
        await reader.read(docs[0][1], docs[0][2])  # start the reader process: not measured
        in_process, isolated = [], []
        for _ in range(rounds):
            for _, data, media_type in docs:
                began = time.perf_counter()
                extract_text(data, media_type)
                in_process.append(time.perf_counter() - began)
                began = time.perf_counter()
                await reader.read(data, media_type)
                isolated.append(time.perf_counter() - began)
    finally:
        reader.close()
    base, limited = statistics.median(in_process) * 1000, statistics.median(isolated) * 1000
    return {
        "documents": len(docs) * rounds,
        "in_process_ms_p50": base,
        "reader_ms_p50": limited,
        "added_ms_p50": limited - base,
        "ratio": limited / base,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    result = asyncio.run(run(args.rounds))
    print(f"{'documents':<22}{result['documents']:>10}")
    print(f"{'in process, p50 ms':<22}{result['in_process_ms_p50']:>10.2f}")
    print(f"{'reader, p50 ms':<22}{result['reader_ms_p50']:>10.2f}")
    print(f"{'added, p50 ms':<22}{result['added_ms_p50']:>10.2f}")
    print(f"{'ratio':<22}{result['ratio']:>10.2f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reading.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
