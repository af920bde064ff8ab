"""Ingest throughput: a folder uploaded with ``olympus ingest`` until every document is indexed,
beside the bare encoders on the same chunks, at the precision the pipeline chose.

    python -m bench.ingest [--data ../shared/data/scifact] [--sizes 1000 5183] [--rounds 2]

For each size the first N SciFact documents (title and text) are written to a folder, one file
each, and ``olympus ingest`` sends them to a fresh embedded stack, the way a user loads a
corpus. The clock runs from the command's start to the last document's ``indexed`` time as
H.A.D.E.S. recorded it. The CPU time of every process of the stack and of the command is
counted: on a small machine everything shares the cores the encoder needs. So are the bytes
each process of the stack wrote to storage (where the kernel counts them).

The chunks the pipeline made (read back from the graph store) go through three encoders, each
in a fresh process, at the pipeline's precision (``OLYMPUS_EMBEDDER_DTYPE``, auto: bf16 only on
a CPU with native bf16):

- ``raw``: the model as transformers runs it, mean-pooled, in batches of 16 sorted by length in
  characters (as sentence-transformers sorts), all threads. The target is the pipeline at
  >= 0.9 of this.
- ``sentence-transformers``: ``SentenceTransformer.encode``, batch 16: what Haystack's and
  LlamaIndex's embedders run.
- ``olympus``: the embedder's own encoder in-process (batches sorted by token count), so the
  pipeline's own overhead shows apart from its encoder's gain; up to ``--other-max`` documents
  also at the other CPU precision, with the lowest cosine to it.

Each round runs the pipeline (on a fresh stack) and then each encoder once; every arm's figure
is its best round, so noise on a shared machine flatters none of them.

``--similar`` measures instead what relating each document to its similar ones costs ingest:
rounds of the pipeline with ``OLYMPUS_INDEXER_SIMILAR_DOCUMENTS=0`` and with the default,
interleaved, best of each; the ratio is with over without (bench/results/ingest-similar.json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

from olympus.evaluation import filename_of, load_beir
from olympus.stack import Stack, temporary_stack

RESULTS = Path(__file__).parent / "results"
ARMS = ("raw", "sentence-transformers", "olympus")
BATCH = 16


# --- the encoders, each run in a process of its own (python -m bench.ingest --arm ...) --------
def _arm(arm: str, texts: list[str], dtype: str, rounds: int, vectors_out: Path | None) -> dict:
    import numpy as np
    import torch

    from workers.embedder.encoder import Encoder, default_model_path

    path = default_model_path()
    torch_dtype = getattr(torch, dtype)
    if arm == "olympus":
        encoder = Encoder(dtype=dtype, batch_size=BATCH)
        run = encoder.embed
    elif arm == "sentence-transformers":
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(path, device="cpu").to(torch_dtype)

        def run(batch: list[str]) -> np.ndarray:
            out = st.encode(batch, batch_size=BATCH, convert_to_tensor=True)
            return out.float().cpu().numpy()
    else:
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path, dtype=torch_dtype).eval()

        @torch.inference_mode()
        def run(batch: list[str]) -> np.ndarray:
            out = np.zeros((len(batch), model.config.hidden_size), dtype=np.float32)
            order = sorted(range(len(batch)), key=lambda i: -len(batch[i]))
            for start in range(0, len(order), BATCH):
                idx = order[start : start + BATCH]
                encoded = tokenizer(
                    [batch[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=256,
                    return_tensors="pt",
                )
                hidden = model(**encoded).last_hidden_state
                mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(pooled.float(), dim=1).numpy()
            return out

    run(texts[:32])  # warm up
    best = 0.0
    vectors = None
    for _ in range(rounds):
        started = time.perf_counter()
        vectors = run(texts)
        best = max(best, len(texts) / (time.perf_counter() - started))
    if vectors_out is not None and vectors is not None:
        np.save(vectors_out, vectors)
    return {"arm": arm, "dtype": dtype, "chunks_per_s": best}


def _measure_arm(
    arm: str, texts_file: Path, dtype: str, rounds: int, vectors_out: Path | None = None
) -> dict:
    command = [sys.executable, "-m", "bench.ingest", "--arm", arm, "--texts", str(texts_file)]
    command += ["--dtype", dtype, "--rounds", str(rounds)]
    if vectors_out is not None:
        command += ["--vectors", str(vectors_out)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# --- the pipeline -----------------------------------------------------------------------------
def _trees(stack: Stack) -> list[tuple[str, list[psutil.Process]]]:
    """Each process of the stack with its children, by the stack's name for it."""
    trees = []
    for child in stack.supervisor._children:
        if child.proc is None:
            continue
        try:
            process = psutil.Process(child.proc.pid)
            trees.append((child.name, [process, *process.children(recursive=True)]))
        except psutil.Error:
            trees.append((child.name, []))
    return trees


def _sum(processes: list[psutil.Process], measure: Callable[[psutil.Process], float]) -> float:
    total = 0.0
    for p in processes:
        with contextlib.suppress(psutil.Error):  # it ended meanwhile
            total += measure(p)
    return total


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU time (user + system) each process of the stack, with its children, has used so far."""
    return {
        name: _sum(tree, lambda p: sum(p.cpu_times()[:2]))  # user + system
        for name, tree in _trees(stack)
    }


def disk_written(stack: Stack) -> dict[str, float]:
    """Bytes each process of the stack, with its children, has written to storage so far, as
    the kernel counts them (Linux; elsewhere psutil has no such counter and this is empty)."""
    if not hasattr(psutil.Process, "io_counters"):
        return {}
    return {
        name: _sum(tree, lambda p: float(p.io_counters().write_bytes))
        for name, tree in _trees(stack)
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _last_indexed(url: str, key: str) -> tuple[float, int, int]:
    """The latest ``updated_at`` of the collection, its indexed documents and their chunks."""
    latest, indexed, chunks, offset = 0.0, 0, 0, 0
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
        while True:
            params: dict[str, str | int] = {"collection": "bench", "limit": 1000, "offset": offset}
            items = http.get("/rag/documents", params=params).json()["items"]
            for d in items:
                latest = max(latest, d["updated_at"])
                indexed += d["status"] == "indexed"
                chunks += d["chunk_count"]
            offset += len(items)
            if len(items) < 1000:
                return latest, indexed, chunks


def _pipeline(folder: Path, texts_out: Path | None, env: dict[str, str] | None = None) -> dict:
    olympus = Path(sys.executable).parent / "olympus"
    with temporary_stack("olympus-bench-", env=env) as (stack, config):
        assert stack.api_key
        before, cli_before = cpu_seconds(stack), _children_cpu()
        written_before = disk_written(stack)
        started = time.time()
        command = [str(olympus), "ingest", str(folder), "--collection", "bench", "--json"]
        command += ["--url", config.gateway_url, "--key", stack.api_key]
        report = json.loads(subprocess.run(command, check=True, capture_output=True).stdout)
        cli = _children_cpu() - cli_before
        after, written = cpu_seconds(stack), disk_written(stack)
        latest, indexed, chunks = _last_indexed(config.gateway_url, stack.api_key)
        stack.stop()  # the stores are read back, and the encoders measured, on an idle machine
        if texts_out is not None:
            db = sqlite3.connect(config.data_dir / "graph.sqlite3")
            texts = [row[0] for row in db.execute("SELECT text FROM chunks ORDER BY rowid")]
            db.close()
            texts_out.write_text(json.dumps(texts))
    cpu = {name: round(after[name] - before.get(name, 0.0), 1) for name in after}
    cpu["olympus ingest"] = round(cli, 1)
    seconds = latest - started
    return {
        "documents": indexed,
        "failed": report["failed"],
        "chunks": chunks,
        "seconds": round(seconds, 2),
        "chunks_per_s": chunks / seconds,
        "cpu_seconds": cpu,
        "written_mb": {
            name: round((written[name] - written_before.get(name, 0.0)) / 1e6, 1)
            for name in written
        },
    }


def _pipeline_dtype() -> str:
    from workers.embedder.encoder import pick_device, pick_dtype
    from workers.embedder.settings import EmbedderSettings

    settings = EmbedderSettings()
    return str(pick_dtype(settings.dtype, pick_device(settings.device))).removeprefix("torch.")


def write_corpus(data: Path, size: int, folder: Path) -> None:
    """The first ``size`` documents of the BEIR folder ``data``, one file each, in ``folder``
    (the way a user has a corpus to ingest)."""
    folder.mkdir(parents=True, exist_ok=True)
    for corpus_id, text in load_beir(data, max_docs=size).corpus.items():
        if text.strip():
            (folder / filename_of(corpus_id)).write_text(text)


def run(data: Path, sizes: list[int], rounds: int, other_max: int) -> list[dict]:
    import numpy as np

    dtype = _pipeline_dtype()
    other = "float32" if dtype == "bfloat16" else "bfloat16"
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="olympus-bench-corpus-") as tmp:
            folder, work = Path(tmp) / "corpus", Path(tmp)
            write_corpus(data, size, folder)
            texts_file = work / "chunks.json"
            # Rounds interleave the pipeline and the encoders, so a slow spell of a shared
            # machine falls on all of them alike; each keeps its best.
            runs: list[dict] = []
            speeds: dict[str, list[float]] = {arm: [] for arm in ARMS}
            for r in range(rounds):
                runs.append(_pipeline(folder, texts_file if r == 0 else None))
                for arm in ARMS:
                    speeds[arm].append(_measure_arm(arm, texts_file, dtype, 1)["chunks_per_s"])
            best = max(runs, key=lambda r: r["chunks_per_s"])
            arms = {arm: {"chunks_per_s": max(speeds[arm])} for arm in ARMS}
            row = {
                "size": size,
                "dtype": dtype,
                "backend": "torch",
                **{k: best[k] for k in ("documents", "failed", "chunks", "seconds")},
                "pipeline_chunks_per_s": best["chunks_per_s"],
                "pipeline_rounds_chunks_per_s": [r["chunks_per_s"] for r in runs],
                "cpu_seconds": best["cpu_seconds"],
                "written_mb": best["written_mb"],
                "encoders_chunks_per_s": {a: arms[a]["chunks_per_s"] for a in ARMS},
                "encoders_rounds_chunks_per_s": speeds,
            }
            row["ratio"] = row["pipeline_chunks_per_s"] / arms["raw"]["chunks_per_s"]
            row["ratio_sentence_transformers"] = (
                row["pipeline_chunks_per_s"] / arms["sentence-transformers"]["chunks_per_s"]
            )
            row["ratio_own_encoder"] = (
                row["pipeline_chunks_per_s"] / arms["olympus"]["chunks_per_s"]
            )
            if size <= other_max:  # the other CPU precision beside it, and how close it comes
                mine, theirs = work / "mine.npy", work / "theirs.npy"
                _measure_arm("olympus", texts_file, dtype, 1, mine)
                alt = _measure_arm("olympus", texts_file, other, rounds, theirs)
                cosine = (np.load(mine) * np.load(theirs)).sum(axis=1)
                row |= {
                    "other_dtype": other,
                    "other_chunks_per_s": alt["chunks_per_s"],
                    "other_speedup": alt["chunks_per_s"] / arms["olympus"]["chunks_per_s"],
                    "other_cosine_min": float(cosine.min()),
                }
        rows.append(row)
    return rows


def similar_cost(data: Path, size: int, rounds: int) -> dict:
    """Ingest with and without similar relations, rounds interleaved, best of each."""
    arms = {"without": {"OLYMPUS_INDEXER_SIMILAR_DOCUMENTS": "0"}, "with": {}}
    speeds: dict[str, list[float]] = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory(prefix="olympus-bench-corpus-") as tmp:
        folder = Path(tmp)
        write_corpus(data, size, folder)
        for _ in range(rounds):
            for arm, env in arms.items():
                speeds[arm].append(_pipeline(folder, None, env)["chunks_per_s"])
    best = {arm: max(found) for arm, found in speeds.items()}
    return {
        "size": size,
        "chunks_per_s": best,
        "rounds_chunks_per_s": speeds,
        "ratio": best["with"] / best["without"],
    }


def cpu_flags() -> str:
    try:
        flags = next(
            line.split(":", 1)[1].split()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        )
    except (OSError, StopIteration):
        return platform.processor()
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    return " ".join(f for f in wanted if f in flags) or "no AVX2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5183])
    parser.add_argument("--rounds", type=int, default=2, help="runs of each arm; the best counts")
    parser.add_argument(
        "--other-max", type=int, default=1000, help="the other precision too, up to N docs"
    )
    parser.add_argument(
        "--similar", action="store_true", help="ingest with vs without similar relations"
    )
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--texts", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    parser.add_argument("--vectors", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:  # one encoder arm, in this fresh process
        texts = json.loads(args.texts.read_text())
        print(json.dumps(_arm(args.arm, texts, args.dtype, args.rounds, args.vectors)))
        return
    if args.similar:
        cost = [similar_cost(args.data, size, args.rounds) for size in args.sizes]
        print(f"\n{'docs':>6}{'without':>10}{'with':>10}{'ratio':>8}   (chunks/s, best of rounds)")
        for c in cost:
            speed = c["chunks_per_s"]
            print(
                f"{c['size']:>6}{speed['without']:>10.1f}{speed['with']:>10.1f}{c['ratio']:>8.2f}"
            )
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "ingest-similar.json").write_text(json.dumps(cost, indent=2))
        print(f"written {RESULTS / 'ingest-similar.json'}")
        return
    rows = run(args.data, args.sizes, args.rounds, args.other_max)
    cpu = f"{os.cpu_count()} cores, {cpu_flags()}"
    print(f"\nCPU: {cpu}; precision {rows[0]['dtype']}, backend torch; chunks/s, best of rounds")
    print(
        f"{'docs':>6}{'chunks':>8}{'pipeline':>10}{'raw':>8}{'s-t':>8}{'olympus':>9}"
        f"{'ratio':>7}{'vs s-t':>8}{'vs own':>8}{'other':>10}{'other x':>9}{'cos min':>9}"
    )
    for r in rows:
        enc = r["encoders_chunks_per_s"]
        print(
            f"{r['documents']:>6}{r['chunks']:>8}{r['pipeline_chunks_per_s']:>10.1f}"
            f"{enc['raw']:>8.1f}{enc['sentence-transformers']:>8.1f}{enc['olympus']:>9.1f}"
            f"{r['ratio']:>7.2f}{r['ratio_sentence_transformers']:>8.2f}"
            f"{r['ratio_own_encoder']:>8.2f}{r.get('other_dtype', '-'):>10}"
            f"{r.get('other_speedup', float('nan')):>9.2f}"
            f"{r.get('other_cosine_min', float('nan')):>9.4f}"
        )
    for r in rows:
        spent = ", ".join(f"{name} {s:.1f}" for name, s in r["cpu_seconds"].items())
        print(f"CPU-s at {r['documents']} docs ({r['seconds']:.1f} s): {spent}")
        if written := ", ".join(f"{n} {mb:.0f}" for n, mb in r["written_mb"].items() if mb):
            print(f"MB written to storage: {written}")
    RESULTS.mkdir(exist_ok=True)
    out = {"cpu": cpu, "rows": rows}
    (RESULTS / "ingest.json").write_text(json.dumps(out, indent=2))
    print(f"written {RESULTS / 'ingest.json'}")


if __name__ == "__main__":
    main()
