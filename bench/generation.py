"""The in-process generator backends side by side: transformers (the batched engine) and
llama.cpp (llama-cpp-python on the packaged GGUF), same model, same prompt ids, one run.

    python -m bench.generation [--tokens 64] [--rounds 2]

Each round runs every (prompt size, concurrency) cell on both backends, alternating, so
machine noise hits both alike. A prompt is the generator's own RAG prompt (numbered passages,
the question) grown to ~200, ~800 and ~1,600 tokens. Reported per cell, median over rounds:
time to first token (p50 over the concurrent answers), decode tokens/s of one answer, and
aggregate tokens/s (all completion tokens / wall time); and llama.cpp / transformers ratios.
Writes bench/results/generation.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path

from schemas.messages import ChatSpec, QueryGenerate, RetrievedChunk

RESULTS = Path(__file__).parent / "results"
MODELS = Path(__file__).resolve().parent.parent / ".olympus" / "models"
PASSAGE = (
    "The lighthouse at Cape Morrow was built in 1871 by the engineer Ada Whitcombe, whose "
    "design used a rotating Fresnel lens floated on a bath of mercury. Its keeper, Tomas "
    "Lind, kept the light for forty-one years and logged every storm in a ledger now held by "
    "the county museum. "
)
SIZES = {"short": 1, "medium": 6, "long": 13}  # passages of ~110 tokens each
CONCURRENCY = (1, 4)


def prompt_ids(tokenizer, passages: int, salt: str) -> list[int]:
    """The generator's prompt with ``passages`` passages. ``salt`` names the first passage's
    file: every request's prompt differs right after the system text, as two users' do, so
    no engine reuses another request's prompt cache."""
    from workers.generator.prompt import build

    request = QueryGenerate(
        request_id="bench",
        tenant="bench",
        input="Who built the lighthouse at Cape Morrow, and what was unusual about its lens?",
        chat=ChatSpec(model="olympus-chat"),
        passages=[
            RetrievedChunk(
                doc_id=f"d{i}",
                filename=f"lighthouse-{salt}-{i}.md",
                collection="bench",
                chunk_id=f"d{i}:0",
                position=0,
                text=PASSAGE,
                score=1.0,
            )
            for i in range(passages)
        ],
        deadline=time.time() + 3600,
    )
    return build(request, tokenizer, budget=2048 - 64).ids


async def answers(backend, prompts: list[list[int]], tokens: int) -> dict[str, float]:
    """Every prompt answered at once; TTFT and decode rate of each, aggregate of all."""
    from workers.generator.backend import Job, Piece

    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    done: list[tuple[Job, Piece, float]] = []

    async def one(i: int, ids: list[int]) -> None:
        pieces: asyncio.Queue[Piece] = asyncio.Queue()
        job = Job(
            f"bench-{started}-{i}",
            ids,
            tokens,
            lambda p: loop.call_soon_threadsafe(pieces.put_nowait, p),
        )
        backend.submit(job)
        while True:
            piece = await pieces.get()
            if piece.finish_reason:
                done.append((job, piece, time.perf_counter()))
                return

    await asyncio.gather(*(one(i, ids) for i, ids in enumerate(prompts)))
    wall = time.perf_counter() - started
    ttfts, rates, total = [], [], 0
    for job, piece, ended in done:
        assert piece.finish_reason in ("stop", "length"), piece
        first = job.first_token_at or ended
        ttfts.append((first - job.submitted_at) * 1000)
        total += piece.completion_tokens
        if ended > first and piece.completion_tokens > 1:
            rates.append((piece.completion_tokens - 1) / (ended - first))
    return {
        "ttft_ms": statistics.median(ttfts),
        "decode_tokens_per_s": statistics.median(rates) if rates else 0.0,
        "aggregate_tokens_per_s": total / wall,
        "completion_tokens": total,
    }


async def run(args: argparse.Namespace) -> dict:
    from workers.generator.engine import Engine
    from workers.generator.llamacpp import LlamaCppBackend
    from workers.generator.settings import GeneratorSettings

    settings = GeneratorSettings(dtype="auto")
    backends = {
        "transformers": Engine.from_settings(settings, MODELS),
        "llamacpp": LlamaCppBackend.from_settings(settings, MODELS),
    }
    for backend in backends.values():
        await backend.open()
    tokenizer = backends["transformers"].tokenizer
    sizes = {name: len(prompt_ids(tokenizer, n, "size")) for name, n in SIZES.items()}
    # The answer must not end early on one backend and run long on the other: a story
    # question would, a greedy answer to this one stops at its own pace. Both are greedy and
    # see the same ids, so each cell compares like with like; tokens/s is per token anyway.
    runs: dict[str, list[dict]] = {}
    try:
        for name, backend in backends.items():  # warm-up: first calls allocate and compile
            await answers(backend, [prompt_ids(tokenizer, 1, f"warm-{name}")], 8)
        for round_ in range(args.rounds):
            for size, passages in SIZES.items():
                for concurrency in CONCURRENCY:
                    for name, backend in backends.items():
                        prompts = [
                            prompt_ids(tokenizer, passages, f"{round_}-{name}-{size}-{i}")
                            for i in range(concurrency)
                        ]
                        cell = await answers(backend, prompts, args.tokens)
                        key = f"{name}|{size}|{concurrency}"
                        runs.setdefault(key, []).append(cell | {"round": round_})
    finally:
        for backend in backends.values():
            await backend.close()
    cells = []
    for size in SIZES:
        for concurrency in CONCURRENCY:
            row: dict = {"prompt": size, "prompt_tokens": sizes[size], "concurrency": concurrency}
            for name in backends:
                measured = runs[f"{name}|{size}|{concurrency}"]
                for metric in ("ttft_ms", "decode_tokens_per_s", "aggregate_tokens_per_s"):
                    row[f"{name}.{metric}"] = statistics.median(m[metric] for m in measured)
            for metric in ("decode_tokens_per_s", "aggregate_tokens_per_s"):
                row[f"ratio.{metric}"] = row[f"llamacpp.{metric}"] / row[f"transformers.{metric}"]
            row["ratio.ttft"] = row["llamacpp.ttft_ms"] / row["transformers.ttft_ms"]
            cells.append(row)
    engine = backends["transformers"]
    return {
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor()},
        "transformers": engine.describe(),
        "llamacpp": backends["llamacpp"].describe(),
        "max_tokens": args.tokens,
        "rounds": args.rounds,
        "cells": cells,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    out = asyncio.run(run(args))
    print(f"\ntransformers {out['transformers']}, llama.cpp {out['llamacpp']}")
    print(
        f"{'prompt':>8}{'tokens':>8}{'conc':>6}"
        f"{'TTFT ms tf / lc':>20}{'decode t/s tf / lc':>22}{'aggregate t/s tf / lc':>25}"
        f"{'lc/tf decode':>14}{'lc/tf TTFT':>12}"
    )
    for c in out["cells"]:
        tf = {k.split(".", 1)[1]: v for k, v in c.items() if k.startswith("transformers.")}
        lc = {k.split(".", 1)[1]: v for k, v in c.items() if k.startswith("llamacpp.")}
        print(
            f"{c['prompt']:>8}{c['prompt_tokens']:>8}{c['concurrency']:>6}"
            f"{tf['ttft_ms']:>11.0f} / {lc['ttft_ms']:<6.0f}"
            f"{tf['decode_tokens_per_s']:>12.1f} / {lc['decode_tokens_per_s']:<7.1f}"
            f"{tf['aggregate_tokens_per_s']:>14.1f} / {lc['aggregate_tokens_per_s']:<8.1f}"
            f"{c['ratio.decode_tokens_per_s']:>12.2f}x{c['ratio.ttft']:>11.2f}x"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "generation.json").write_text(json.dumps(out, indent=2))
    print(f"written {RESULTS / 'generation.json'}")


if __name__ == "__main__":
    main()
