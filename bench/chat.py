"""Chat speed: time to first token and tokens/s through the gateway beside the generator's own
engine and beside transformers' ``generate()``, on the same prompt and model; and aggregate
tokens/s at 1, 4 and 8 chats.

    python -m bench.chat [--tokens 64] [--repeats 5]

Through the gateway: ``POST /v1/chat/completions`` (``olympus-chat``, streamed), timed at the
client from the request to the first and last token. Engine: the generator's ``Engine`` in this
process, with the generator's sampling settings: gateway minus engine is what the pipeline's
hops cost. generate(): the same prompt ids into transformers' ``generate()`` with a streamer
(greedy), in this process. Runs alternate between the three so machine noise hits all alike.
Targets: the pipeline adds <= 30 ms to time to first token and keeps >= 90% of direct
tokens/s; 8 concurrent chats give >= 3x the aggregate tokens/s of one.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import queue
import statistics
import threading
import time
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse

from olympus.stack import temporary_stack

RESULTS = Path(__file__).parent / "results"
MODELS = Path(__file__).resolve().parent.parent / ".olympus" / "models"
QUESTION = "Write a long story about a lighthouse keeper and a storm."
CONCURRENCY = (1, 4, 8)


async def through_gateway(http: httpx.AsyncClient, tokens: int) -> dict[str, float]:
    body = {
        "model": "olympus-chat",
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = last = None
    completion = 0
    async with aconnect_sse(http, "POST", "/v1/chat/completions", json=body) as source:
        async for sse in source.aiter_sse():
            if sse.data == "[DONE]":
                break
            chunk = json.loads(sse.data)
            if chunk.get("usage"):
                completion = chunk["usage"]["completion_tokens"]
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
    if first is None or last is None:
        raise RuntimeError("no token came back")
    return _figures(started, first, last, completion)


def direct(model, tokenizer, ids: list[int], tokens: int) -> dict[str, float]:
    import torch
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    inputs = torch.tensor([ids])
    out: list = []
    started = time.perf_counter()
    worker = threading.Thread(
        target=lambda: out.append(
            model.generate(
                inputs,
                attention_mask=torch.ones_like(inputs),
                max_new_tokens=tokens,
                do_sample=False,
                streamer=streamer,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    )
    worker.start()
    first = last = None
    for piece in streamer:
        if piece:
            last = time.perf_counter()
            first = first or last
    worker.join()
    assert first is not None
    assert last is not None
    return _figures(started, first, last, out[0].shape[1] - len(ids))


def in_engine(engine, ids: list[int], tokens: int, temperature: float, top_p: float) -> dict:
    """The generator's own Engine in this process: the gateway's figures minus these are what
    the pipeline's hops (HTTP, NATS, the worker, SSE) cost."""
    from workers.generator.engine import Job

    pieces: queue.Queue = queue.Queue()
    started = time.perf_counter()
    first = last = None
    engine.submit(
        Job(
            request_id=f"bench-{started}",
            prompt_ids=ids,
            max_new_tokens=tokens,
            emit=pieces.put,
            temperature=temperature,
            top_p=top_p,
        )
    )
    while True:
        piece = pieces.get()
        if piece.text:
            last = time.perf_counter()
            first = first or last
        if piece.finish_reason is not None:
            break
    assert first is not None
    assert last is not None
    return _figures(started, first, last, piece.completion_tokens)


def _figures(started: float, first: float, last: float, completion: int) -> dict[str, float]:
    decode_s = last - first
    return {
        "ttft_ms": (first - started) * 1000,
        "tokens": completion,
        "tokens_per_s": (completion - 1) / decode_s if decode_s > 0 else 0.0,
    }


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


async def run(url: str, key: str, tokens: int, repeats: int, model, tokenizer, ids, engine) -> dict:
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600
    ) as http:
        await through_gateway(http, 8)  # warm every side
        direct(model, tokenizer, ids, 8)
        engine(8)
        gateway_runs, engine_runs, direct_runs = [], [], []
        for _ in range(repeats):
            gateway_runs.append(await through_gateway(http, tokens))
            engine_runs.append(await asyncio.to_thread(engine, tokens))
            direct_runs.append(await asyncio.to_thread(direct, model, tokenizer, ids, tokens))
        concurrent = []
        for clients in CONCURRENCY:
            # each client asks twice in a row: the batch fills, drains and refills
            results = await asyncio.gather(
                *(_client(http, tokens, rounds=2) for _ in range(clients))
            )
            concurrent.append(_sum(clients, results))
    return {
        "gateway": gateway_runs,
        "engine": engine_runs,
        "direct": direct_runs,
        "concurrent": concurrent,
    }


async def _client(http: httpx.AsyncClient, tokens: int, rounds: int) -> tuple[int, float]:
    started = time.perf_counter()
    total = 0
    for _ in range(rounds):
        total += int((await through_gateway(http, tokens))["tokens"])
    return total, time.perf_counter() - started


def _sum(clients: int, results: list[tuple[int, float]]) -> dict[str, float]:
    tokens = sum(t for t, _ in results)
    wall = max(w for _, w in results)
    return {"clients": clients, "tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from schemas.messages import ChatSpec, QueryGenerate
    from workers.generator.engine import Engine
    from workers.generator.prompt import build
    from workers.generator.settings import GeneratorSettings
    from workers.generator.weights import load

    settings = GeneratorSettings()
    model, tokenizer, device, name = load("", MODELS, settings.device, settings.dtype)
    # The very prompt the generator builds for this question: same template, same system text.
    request = QueryGenerate(
        request_id="bench",
        tenant="bench",
        input=QUESTION,
        chat=ChatSpec(model="olympus-chat"),
        retrieval=False,
        deadline=time.time() + 60,
    )
    ids = build(request, tokenizer, budget=settings.context_tokens).ids
    engine = Engine(model, tokenizer, device, settings.max_batch)
    engine.start()
    in_process = functools.partial(
        in_engine, engine, ids, temperature=settings.temperature, top_p=settings.top_p
    )
    env = {"OLYMPUS_GENERATOR_MODELS_DIR": str(MODELS)}
    try:
        with temporary_stack("olympus-bench-chat-", env=env) as (stack, config):
            assert stack.api_key is not None
            out = asyncio.run(
                run(
                    config.gateway_url,
                    stack.api_key,
                    args.tokens,
                    args.repeats,
                    model,
                    tokenizer,
                    ids,
                    in_process,
                )
            )
    finally:
        engine.stop()
    arms = ("gateway", "engine", "direct")
    summary: dict = {
        "model": name,
        "device": device,
        "dtype": str(model.dtype),
        "prompt_tokens": len(ids),
        "max_tokens": args.tokens,
        "repeats": args.repeats,
        "ttft_ms": {arm: _median(out[arm], "ttft_ms") for arm in arms},
        "tokens_per_s": {arm: _median(out[arm], "tokens_per_s") for arm in arms},
        "concurrent": out["concurrent"],
        "runs": out,
    }
    ttft, rate = summary["ttft_ms"], summary["tokens_per_s"]
    summary["ttft_added_ms"] = ttft["gateway"] - ttft["engine"]  # what the pipeline adds
    summary["ttft_vs_generate_ms"] = ttft["gateway"] - ttft["direct"]
    summary["tokens_per_s_ratio"] = rate["gateway"] / rate["engine"]
    summary["tokens_per_s_vs_generate"] = rate["gateway"] / rate["direct"]
    one = out["concurrent"][0]["tokens_per_s"]
    summary["aggregate_ratio_vs_1"] = {
        str(c["clients"]): c["tokens_per_s"] / one for c in out["concurrent"]
    }
    print(f"\n{name} on {device} ({model.dtype}), prompt {len(ids)} tokens, {args.tokens} new")
    print(
        f"{'p50 of ' + str(args.repeats):22}{'gateway':>10}{'Engine':>10}{'generate()':>12}"
        f"{'gw - Engine':>13}{'gw - generate':>15}"
    )
    print(
        f"{'TTFT (ms)':22}{ttft['gateway']:>10.1f}{ttft['engine']:>10.1f}{ttft['direct']:>12.1f}"
        f"{summary['ttft_added_ms']:>+13.1f}{summary['ttft_vs_generate_ms']:>+15.1f}"
    )
    print(
        f"{'decode tokens/s':22}{rate['gateway']:>10.1f}{rate['engine']:>10.1f}"
        f"{rate['direct']:>12.1f}{summary['tokens_per_s_ratio']:>12.2f}x"
        f"{summary['tokens_per_s_vs_generate']:>14.2f}x"
    )
    print(f"\n{'concurrent chats':24}{'tokens/s':>10}{'x one':>10}")
    for row in out["concurrent"]:
        ratio = summary["aggregate_ratio_vs_1"][str(row["clients"])]
        print(f"{row['clients']:<24}{row['tokens_per_s']:>10.1f}{ratio:>10.2f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "chat.json").write_text(json.dumps(summary, indent=2))
    print(f"written {RESULTS / 'chat.json'}")


if __name__ == "__main__":
    main()
