"""``olympus eval-answers DIR``: how right the answers are, on a question-answering folder.

The folder holds ``corpus.jsonl``, ``queries.jsonl`` and ``answers.jsonl`` (the annotators'
answer spans and the paragraph holding them, as ../shared/data/squad-qa). The corpus goes in
through the gateway of a fresh embedded stack, like any upload; every question (or a seeded
sample) is asked through chat, as a user asks it; each answer is graded:

- SQuAD exact match and token F1 against any annotated answer (torchmetrics' implementation
  of the official script), with the citation markers taken out of the answer first;
- whether it cites the paragraph that holds the answer;
- whether it refuses although that paragraph was among its passages;
- whether retrieval gave it that paragraph at all (recall@k, k the passages it was given);
- its latency: the first token and the whole answer.

The generator is whatever the environment configures (``OLYMPUS_GENERATOR_BACKEND``…), so one
folder compares backends, models and prompts run by run.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from olympus.client import Gateway, GatewayError

MARKERS = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")
REFUSAL = re.compile(
    r"\b(do(es)? not (say|contain|mention|provide|include|specify)|don't (say|contain|know)|"
    r"no (information|mention|passage)|not (mentioned|stated|specified|provided)|"
    r"cannot (answer|find|determine)|can't (answer|find)|unable to)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    answers: list[str]
    starts: list[int]
    paragraph: str  # the corpus id of the paragraph holding the answer


@dataclass
class Graded:
    id: str
    question: str
    answer: str
    gold: list[str]
    exact_match: float
    f1: float
    retrieved: bool  # the gold paragraph was among the passages
    cited_gold: bool
    refused: bool
    finish_reason: str
    first_token_s: float | None
    total_s: float
    cited: list[int] = field(default_factory=list)
    error: str | None = None


def load(folder: Path) -> tuple[dict[str, str], list[Question]]:
    corpus: dict[str, str] = {}
    with (folder / "corpus.jsonl").open() as f:
        for line in f:
            row = json.loads(line)
            corpus[str(row["_id"])] = "\n\n".join(
                p for p in (row.get("title", ""), row.get("text", "")) if p.strip()
            )
    texts: dict[str, str] = {}
    with (folder / "queries.jsonl").open() as f:
        for line in f:
            row = json.loads(line)
            texts[str(row["_id"])] = row["text"]
    questions = []
    with (folder / "answers.jsonl").open() as f:
        for line in f:
            row = json.loads(line)
            qid = str(row["_id"])
            if qid in texts and row["corpus-id"] in corpus:
                questions.append(
                    Question(
                        qid,
                        texts[qid],
                        list(row["answers"]),
                        list(row["answer_starts"]),
                        row["corpus-id"],
                    )
                )
    return corpus, questions


def squad_scores(answer: str, question: Question) -> tuple[float, float]:
    """(exact match, F1), each 0..1, of one answer: the official definitions (torchmetrics)."""
    from torchmetrics.functional.text import squad

    result = squad(
        [{"prediction_text": MARKERS.sub("", answer).strip(), "id": question.id}],
        [
            {
                "answers": {"answer_start": question.starts, "text": question.answers},
                "id": question.id,
            }
        ],
    )
    return float(result["exact_match"]) / 100, float(result["f1"]) / 100


def ask(
    gateway: Gateway, question: Question, paragraph_of: dict[str, str], max_tokens: int
) -> Graded:
    """One question through chat, graded. ``paragraph_of`` maps filename -> corpus id."""
    started = time.perf_counter()
    first: float | None = None
    sources: dict[int, str] = {}
    answer, cited, finish, error = "", [], "error", None
    try:
        for event in gateway.chat(f"qa-{question.id}", question.text, max_tokens=max_tokens):
            if event.event == "sources":
                sources = {p.n: paragraph_of.get(p.filename, "") for p in event.sources}
            elif event.event == "token" and first is None:
                first = time.perf_counter() - started
            elif event.event == "done":
                answer = event.data.get("text", "")
                cited = list(event.data.get("cited", []))
                finish = event.data.get("finish_reason") or "stop"
            elif event.event == "error":
                error = event.data.get("error", {}).get("message", "failed")
    except GatewayError as exc:
        error = str(exc)
    return grade(
        question, answer, cited, sources, finish, first, time.perf_counter() - started, error
    )


def grade(
    question: Question,
    answer: str,
    cited: list[int],
    sources: dict[int, str],
    finish_reason: str,
    first_token_s: float | None,
    total_s: float,
    error: str | None = None,
) -> Graded:
    """One answer graded; ``sources`` maps each passage number to its paragraph's corpus id."""
    em, f1 = squad_scores(answer, question)
    return Graded(
        id=question.id,
        question=question.text,
        answer=answer,
        gold=question.answers,
        exact_match=em,
        f1=f1,
        retrieved=question.paragraph in sources.values(),
        cited_gold=any(sources.get(n) == question.paragraph for n in cited),
        refused=bool(REFUSAL.search(answer)),
        finish_reason=finish_reason,
        first_token_s=first_token_s,
        total_s=total_s,
        cited=cited,
        error=error,
    )


def summary(graded: list[Graded]) -> dict[str, float]:
    n = len(graded)
    retrieved = [g for g in graded if g.retrieved]
    firsts = [g.first_token_s for g in graded if g.first_token_s is not None]
    totals = sorted(g.total_s for g in graded)
    return {
        "questions": n,
        "exact_match": sum(g.exact_match for g in graded) / n,
        "f1": sum(g.f1 for g in graded) / n,
        "cites_gold": sum(g.cited_gold for g in graded) / n,
        "cites_any": sum(bool(g.cited) for g in graded) / n,
        "refused_though_retrieved": sum(g.refused for g in retrieved) / max(1, len(retrieved)),
        "recall_at_k": len(retrieved) / n,
        "errors": sum(g.error is not None for g in graded),
        "first_token_p50_s": statistics.median(firsts) if firsts else float("nan"),
        "answer_p50_s": statistics.median(totals),
        "answer_p95_s": totals[min(n - 1, int(0.95 * n))],
    }


def sample(questions: list[Question], n: int, seed: int) -> list[Question]:
    if not n or n >= len(questions):
        return questions
    return random.Random(seed).sample(questions, n)  # noqa: S311  # a repeatable sample


def filename_of(corpus_id: str) -> str:
    return f"{corpus_id}.txt"


def ingest(gateway: Gateway, corpus: dict[str, str], collection: str) -> None:
    """Every paragraph through the gateway, in batches; until all are indexed."""
    items = list(corpus.items())
    for start in range(0, len(items), 32):
        batch = items[start : start + 32]
        gateway.upload([(filename_of(cid), text.encode()) for cid, text in batch], collection)
    while True:
        _, done = gateway.documents_page(collection=collection, status="indexed", limit=1)
        _, failed = gateway.documents_page(collection=collection, status="failed", limit=1)
        if done + failed >= len(items):
            return
        time.sleep(0.5)


def table(label: str, s: dict[str, float]) -> str:
    rows: Iterable[tuple[str, str]] = (
        ("questions", f"{int(s['questions'])}"),
        ("exact match", f"{s['exact_match']:.3f}"),
        ("token F1", f"{s['f1']:.3f}"),
        ("cites the gold paragraph", f"{s['cites_gold']:.3f}"),
        ("cites any passage", f"{s['cites_any']:.3f}"),
        ("refuses though retrieved", f"{s['refused_though_retrieved']:.3f}"),
        ("gold paragraph retrieved (recall@k)", f"{s['recall_at_k']:.3f}"),
        ("errors", f"{int(s['errors'])}"),
        ("first token p50 (s)", f"{s['first_token_p50_s']:.2f}"),
        ("answer p50 / p95 (s)", f"{s['answer_p50_s']:.2f} / {s['answer_p95_s']:.2f}"),
    )
    width = max(len(r[0]) for r in rows)
    lines = [f"{label}", *(f"  {name:<{width}}  {value:>12}" for name, value in rows)]
    return "\n".join(lines)


def evaluate(
    gateway: Gateway,
    corpus: dict[str, str],
    questions: list[Question],
    collection: str,
    concurrency: int,
    max_tokens: int,
) -> tuple[list[Graded], float]:
    started = time.perf_counter()
    ingest(gateway, corpus, collection)
    ingest_s = time.perf_counter() - started
    paragraph_of = {filename_of(cid): cid for cid in corpus}
    with ThreadPoolExecutor(concurrency) as pool:
        graded = list(pool.map(lambda q: ask(gateway, q, paragraph_of, max_tokens), questions))
    return graded, ingest_s


def run(args: argparse.Namespace) -> int:
    import os

    from olympus.stack import temporary_stack

    corpus, questions = load(args.folder)
    asked = sample(questions, args.sample, args.seed)
    from workers.generator.settings import GeneratorSettings

    label = args.label or os.environ.get(
        "OLYMPUS_GENERATOR_BACKEND", GeneratorSettings.model_fields["backend"].default
    )
    with temporary_stack("olympus-eval-answers-") as (stack, config):
        assert stack.api_key is not None
        gateway = Gateway(config.gateway_url, stack.api_key, timeout_s=120)
        try:
            graded, ingest_s = evaluate(
                gateway, corpus, asked, "qa", args.concurrency, args.max_tokens
            )
        finally:
            gateway.close()
    result = summary(graded)
    print(
        f"\n{args.folder.name}: {len(corpus)} paragraphs ingested in {ingest_s:.0f}s, "
        f"{len(asked)} of {len(questions)} questions asked (seed {args.seed})"
    )
    print(table(f"generator: {label}", result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "dataset": args.folder.name,
                    "label": label,
                    "seed": args.seed,
                    "max_tokens": args.max_tokens,
                    "summary": result,
                    "answers": [asdict(g) for g in graded],
                },
                indent=2,
            )
        )
    return 0


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "eval-answers", help="answer quality (SQuAD EM/F1, citations) on a QA folder"
    )
    p.add_argument("folder", type=Path, help="corpus.jsonl, queries.jsonl, answers.jsonl")
    p.add_argument("--sample", type=int, default=0, help="ask N questions (default: all)")
    p.add_argument("--seed", type=int, default=13, help="which N (the same seed, the same N)")
    p.add_argument("--concurrency", type=int, default=4, help="questions asked at once")
    p.add_argument("--max-tokens", type=int, default=96, help="the longest answer")
    p.add_argument("--label", help="the generator's name in the report (default: its backend)")
    p.add_argument("--json", type=Path, help="also write the summary and every answer as JSON")
    p.set_defaults(func=run)
