"""Re-embedding a filled stack under another model (``olympus reindex``), beside the same
encoder alone on the same passages.

    python -m bench.reindex [--data ../shared/data/scifact] [--size 1000] [--rounds 2]

The first N SciFact documents go into a fresh embedded stack with ``olympus ingest``, and the
stack stops. Then, in rounds: ``olympus reindex`` in a fresh process, timed from its start to
its exit (loading the model, reading the graph, writing Milvus and renaming included), and the
embedder's encoder alone on the passages the graph holds, in a fresh process (bench.ingest's
``olympus`` arm, at the same precision). The rounds alternate the target model between a copy
of the packaged encoder with other weights and the packaged one, so each round re-embeds
everything. Ratio: reindex passages/s over the encoder's, each its best round.

Then live: the stack starts again and ``olympus reindex`` runs against it, alternating the
model (``--live-rounds``), while one client asks SciFact's questions (dense) one after another;
then ``--quiet-rounds`` more with no question. Its figures: the run's passages/s against the
same encoder, and the questions' p50 during it against the same questions at rest just before,
with the questions that failed (none should).
Everything goes to bench/results/reindex-<size>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.ingest import RESULTS, _measure_arm, _pipeline_dtype, cpu_flags, write_corpus
from bench.retrieval import percentiles
from olympus.evaluation import load_beir
from olympus.stack import Stack, StackConfig, start_with_key
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


async def _ask(http: httpx.AsyncClient, question: str, failures: list[str]) -> float | None:
    """One dense question's seconds; None if it failed (and why, in ``failures``)."""
    started = time.perf_counter()
    r = await http.post("/mcp/bench/query", json={"input": question, "mode": "dense"})
    if r.status_code != 200:
        failures.append(f"{r.status_code} {r.text[:200]}")
        return None
    return time.perf_counter() - started


async def _live_round(
    stack: Stack, key: str, stack_dir: Path, model: str, questions: list[str]
) -> dict:
    olympus = Path(sys.executable).parent / "olympus"
    async with httpx.AsyncClient(
        base_url=stack.config.gateway_url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    ) as http:
        failures: list[str] = []
        at_rest = [await _ask(http, q, failures) for q in questions[:100]]  # none when quiet
        if failures:
            raise RuntimeError(f"questions fail at rest: {failures[:3]}")
        started = time.perf_counter()
        run = await asyncio.create_subprocess_exec(
            str(olympus), "reindex", "--model", model, "--data-dir", str(stack_dir),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        finished = asyncio.ensure_future(run.communicate())
        during: list[float | None] = []
        while questions and not finished.done():
            during.append(await _ask(http, questions[len(during) % len(questions)], failures))
        _, err = await finished
        seconds = time.perf_counter() - started
        if run.returncode != 0:
            raise RuntimeError(f"olympus reindex failed: {err.decode()}")
    answered = [d for d in during if d is not None]
    if not questions:
        return {"seconds": round(seconds, 2), "questions_during": 0}
    return {
        "seconds": round(seconds, 2),
        "p50_ms_at_rest": round(percentiles([d for d in at_rest if d])["p50_ms"], 1),
        "p50_ms_during": round(percentiles(answered)["p50_ms"], 1),
        "questions_during": len(during),
        "failed": len(failures),
        "failures": failures[:5],
    }


def live(
    stack_dir: Path, holds: str, targets: list[str], questions: list[str], quiet: int
) -> list[dict]:
    """``olympus reindex`` against the running stack once to each of ``targets``, the last
    ``quiet`` of them with no question asked."""
    env = {"OLYMPUS_GATEWAY_RATE_LIMIT": "", "OLYMPUS_EMBEDDER_MODEL": holds}
    config = StackConfig.on_free_ports(stack_dir, env=env)
    with (stack_dir.parent / "live.log").open("w") as log:
        stack, key = start_with_key(config, log)  # fill's key is not kept
        try:
            return [
                asyncio.run(
                    _live_round(
                        stack, key, stack_dir, t, questions if i < len(targets) - quiet else []
                    )
                )
                for i, t in enumerate(targets)
            ]
        finally:
            stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--live-rounds", type=int, default=2, help="with questions")
    parser.add_argument("--quiet-rounds", type=int, default=1, help="live, no question asked")
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
        holds = models[(args.rounds - 1) % 2]
        runs = args.live_rounds + args.quiet_rounds
        targets = [models[(args.rounds + r) % 2] for r in range(runs)]
        questions = list(load_beir(args.data).queries.values())
        lives = live(stack_dir, holds, targets, questions, args.quiet_rounds) if runs else []
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
        "live_rounds": lives,
        "cpu": f"{os.cpu_count()} cores, {cpu_flags()}",
    }
    asked = [r for r in lives if r["questions_during"]]
    quiet = [r for r in lives if not r["questions_during"]]
    for name, rounds in (("live", asked), ("live_quiet", quiet)):
        if rounds:
            best = passages / min(r["seconds"] for r in rounds)
            row[f"{name}_passages_per_s"] = round(best, 1)
            row[f"{name}_ratio"] = round(best / max(encoder), 3)
    print(f"\nCPU: {row['cpu']}; precision {dtype}; passages/s, best of {args.rounds} rounds")
    print(f"{'docs':>6}{'passages':>10}{'reindex':>9}{'encoder':>9}{'ratio':>7}")
    print(
        f"{documents:>6}{passages:>10}{row['reindex_passages_per_s']:>9.1f}"
        f"{row['encoder_passages_per_s']:>9.1f}{row['ratio']:>7.2f}"
    )
    if asked:
        print("\nlive, the stack answering dense questions one after another all along:")
        print(f"{'round':>6}{'s':>8}{'p50 rest':>10}{'p50 during':>12}{'asked':>7}{'failed':>8}")
        for i, r in enumerate(asked):
            print(
                f"{i + 1:>6}{r['seconds']:>8.1f}{r['p50_ms_at_rest']:>10.1f}"
                f"{r['p50_ms_during']:>12.1f}{r['questions_during']:>7}{r['failed']:>8}"
            )
        print(f"live passages/s {row['live_passages_per_s']}, ratio {row['live_ratio']:.2f}")
    if quiet:
        print(
            f"live, no question asked: {[r['seconds'] for r in quiet]} s, passages/s "
            f"{row['live_quiet_passages_per_s']}, ratio {row['live_quiet_ratio']:.2f}"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"reindex-{args.size}.json"
    out.write_text(json.dumps(row, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
