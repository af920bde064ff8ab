"""`olympus eval` as a user runs it, on a small BEIR folder written here: every mode, and each
again with `--expand graph` once the documents are related to their similar ones."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CORPUS = {
    "volcano": "Volcanoes erupt molten lava, ash and gas from the mantle.",
    "lava": "Lava flows cool into basalt; eruptions of volcanoes build islands.",
    "tide": "Tides rise and fall twice a day, pulled by the moon.",
    "moon": "The moon orbits the earth, and its gravity lifts the sea into tides.",
    "bread": "Bread rises when yeast ferments the sugars in the dough.",
    "yeast": "Yeast is a fungus bakers and brewers use to ferment sugars.",
}
QUERIES = {"q1": "what comes out of an erupting volcano", "q2": "why the sea has tides"}
QRELS = [("q1", "volcano", 2), ("q1", "lava", 1), ("q2", "tide", 2), ("q2", "moon", 1)]


def test_eval_reports_each_mode_with_and_without_graph_expansion(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in CORPUS.items())
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items())
    )
    (folder / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in QRELS)
    )
    out = tmp_path / "eval.json"
    done = subprocess.run(
        [sys.executable, "-m", "olympus.cli", "eval", str(folder), "--expand", "graph",
         "--json", str(out)],
        capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["results"]) == {
        "dense",
        "bm25",
        "hybrid",
        "dense+graph",
        "bm25+graph",
        "hybrid+graph",
    }
    assert report["ingest"]["documents"] == len(CORPUS)
    for mode, measured in report["results"].items():
        assert measured["queries"] == len(QUERIES)
        assert measured["R@100"] == 1.0, (mode, measured)
        assert 0 < measured["nDCG@10"] <= 1, (mode, measured)
        if "+" not in mode:
            # Six documents, two obvious questions: each mode finds the right ones first.
            # (Expansion may reorder them: whether it helps is what the eval measures.)
            assert measured["nDCG@10"] > 0.8, (mode, measured)
    assert "hybrid+graph" in done.stdout
