"""How `olympus eval-answers` grades one answer, on the real squad-qa folder's layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from olympus import answer_eval

pytestmark = pytest.mark.unit
DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "squad-qa"
Q = answer_eval.Question("q1", "Who won?", ["Denver Broncos", "the Broncos"], [177, 181], "00-0")


def test_citation_markers_are_not_part_of_the_answer_graded():
    assert answer_eval.squad_scores("The Denver Broncos [1].", Q) == (1.0, 1.0)
    assert answer_eval.squad_scores("Denver [1, 2]", Q)[0] == 0.0
    assert 0 < answer_eval.squad_scores("Denver [1, 2]", Q)[1] < 1
    assert answer_eval.squad_scores("", Q) == (0.0, 0.0)


def test_refusals_are_recognised_and_answers_are_not():
    assert answer_eval.REFUSAL.search("The documents do not say who won.")
    assert answer_eval.REFUSAL.search("There is no information about that in the passages.")
    assert not answer_eval.REFUSAL.search("The Denver Broncos won [1].")


@pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} is not on this machine")
def test_the_folder_loads_every_question_with_its_paragraph_and_samples_repeatably():
    corpus, questions = answer_eval.load(DATA)
    assert len(corpus) == 1048
    assert len(questions) == 5696
    assert all(q.paragraph in corpus and q.answers for q in questions)
    first = answer_eval.sample(questions, 300, seed=13)
    assert first == answer_eval.sample(questions, 300, seed=13)
    assert len({q.id for q in first}) == 300


def test_an_answer_citing_the_gold_paragraph_is_graded_as_such():
    graded = answer_eval.grade(
        Q, "The Denver Broncos [2].", [2], {1: "00-9", 2: "00-0"}, "stop", 0.1, 1.0
    )
    assert (graded.exact_match, graded.retrieved, graded.cited_gold, graded.refused) == (
        1.0,
        True,
        True,
        False,
    )
    missed = answer_eval.grade(Q, "The documents do not say.", [], {1: "00-9"}, "stop", None, 1.0)
    assert (missed.retrieved, missed.cited_gold, missed.refused) == (False, False, True)
    assert answer_eval.summary([graded, missed])["recall_at_k"] == 0.5
