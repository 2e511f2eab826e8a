"""The quiz: its questions are well formed and written in our own words, and grading counts and reports."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from ftvpe_core import FtvpeError
from ftvpe_core.teaching import quiz

REPO = Path(__file__).resolve().parents[1]
SEED_ARTICLE = Path(__file__).resolve().parents[2] / "shared" / "seed-article.txt"
COPY_RUN = 8  # this many consecutive words shared with the seed article count as copying


def sentences(text: str) -> list[str]:
    # Split after ., ! or ? followed by a space, so "4.4 %" stays in one sentence.
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def all_correct() -> dict[str, str]:
    return {q.key: q.answer for q in quiz.QUESTIONS}


def test_quiz_has_at_least_twelve_questions_with_unique_keys():
    keys = [q.key for q in quiz.QUESTIONS]
    assert len(keys) >= 12
    assert len(set(keys)) == len(keys)
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", k) for k in keys)


def test_every_answer_kind_is_used_at_least_three_times():
    counts = Counter(q.answer for q in quiz.QUESTIONS)
    assert set(counts) == set(quiz.ANSWERS)
    assert min(counts.values()) >= 3


def test_every_answer_has_a_display_label():
    assert quiz.ANSWERS == ("prompt", "fine-tune", "both")
    assert quiz.ANSWER_LABELS == {"prompt": "Prompt engineering", "fine-tune": "Fine-tuning", "both": "Both"}


@pytest.mark.parametrize("q", quiz.QUESTIONS, ids=lambda q: q.key)
def test_question_page_exists_in_the_repo(q):
    assert q.page.startswith("pages/")
    assert (REPO / q.page).is_file()


@pytest.mark.parametrize("q", quiz.QUESTIONS, ids=lambda q: q.key)
def test_question_texts_have_the_promised_shape(q):
    assert 2 <= len(sentences(q.scenario)) <= 3
    assert 2 <= len(sentences(q.explanation)) <= 4
    assert len(sentences(q.page_hint)) == 1


@pytest.mark.parametrize("q", quiz.QUESTIONS, ids=lambda q: q.key)
def test_explanation_does_not_open_by_restating_the_answer(q):
    opener = r"^\W*(prompt engineering|prompt|fine-tuning|fine-tune|both)\W*([.!:;,]|$)"
    assert not re.match(opener, q.explanation, flags=re.IGNORECASE)
    assert len(words(sentences(q.explanation)[0])) >= 6


def test_every_page_is_demonstrated_by_some_question():
    assert {q.page for q in quiz.QUESTIONS} == {
        "pages/1_Prompt_Lab.py",
        "pages/2_Fine_Tune_Lab.py",
        "pages/6_Runs.py",
        "pages/4_Compare.py",
    }


def test_question_returns_it_by_key_and_rejects_unknown_keys():
    first = quiz.QUESTIONS[0]
    assert quiz.question(first.key) is first
    with pytest.raises(FtvpeError, match="Unknown quiz question 'nope'"):
        quiz.question("nope")


def test_a_question_with_an_invalid_answer_cannot_be_built():
    with pytest.raises(FtvpeError, match="has answer 'maybe'"):
        quiz.Question("k", "A. B.", "maybe", "C. D.", "pages/6_Runs.py", "E.")


def test_all_correct_scores_full_marks_and_the_top_band():
    graded = quiz.grade(all_correct())
    assert graded.score == graded.total == len(quiz.QUESTIONS)
    assert graded.percent == 100.0
    assert graded.missing == [] and graded.wrong == []
    assert graded.summary().startswith(f"{graded.total} of {graded.total} right: you pick the right tool")


def test_one_wrong_and_one_missing_are_counted_and_listed():
    choices = all_correct()
    first, second = quiz.QUESTIONS[0], quiz.QUESTIONS[1]
    choices[first.key] = next(a for a in quiz.ANSWERS if a != first.answer)
    del choices[second.key]
    graded = quiz.grade(choices)
    assert graded.score == graded.total - 2
    assert graded.wrong == [first.key]
    assert graded.missing == [second.key]
    by_key = {r.key: r for r in graded.results}
    assert by_key[first.key].correct is False and by_key[first.key].answer == first.answer
    assert by_key[second.key].chosen is None and by_key[second.key].correct is False
    assert [r.key for r in graded.results] == [q.key for q in quiz.QUESTIONS]


def test_none_counts_as_unanswered():
    graded = quiz.grade({quiz.QUESTIONS[0].key: None})
    assert quiz.QUESTIONS[0].key in graded.missing and graded.score == 0


@pytest.mark.parametrize(
    "right, band",
    [(1.0, "you pick the right tool"), (0.6, "a solid start"), (0.2, "every scenario links to a page")],
)
def test_summary_sentence_follows_the_score_band(right, band):
    n = round(len(quiz.QUESTIONS) * right)
    choices = {q.key: q.answer for q in quiz.QUESTIONS[:n]}
    graded = quiz.grade(choices)
    assert band in graded.summary()
    assert graded.summary().endswith(".") and len(sentences(graded.summary())) == 1


def test_empty_choices_score_zero_and_list_every_question_as_missing():
    graded = quiz.grade({})
    assert graded.score == 0 and graded.percent == 0.0
    assert graded.missing == [q.key for q in quiz.QUESTIONS]


def test_grading_an_unknown_key_raises():
    with pytest.raises(FtvpeError, match="Unknown quiz question 'not-a-question'"):
        quiz.grade({"not-a-question": "prompt"})


@pytest.mark.parametrize("bad", ["Prompt engineering", "finetune", "", "both "])
def test_grading_an_answer_outside_answers_raises(bad):
    key = quiz.QUESTIONS[0].key
    with pytest.raises(FtvpeError, match=f"to question '{key}' is not one of prompt, fine-tune, both"):
        quiz.grade({key: bad})


@pytest.mark.skipif(not SEED_ARTICLE.is_file(), reason="the seed article is not next to the repository")
def test_no_text_copies_a_run_of_words_from_the_seed_article():
    seed = words(SEED_ARTICLE.read_text(encoding="utf-8"))
    seed_runs = {tuple(seed[i : i + COPY_RUN]) for i in range(len(seed) - COPY_RUN + 1)}
    copied = []
    for q in quiz.QUESTIONS:
        for name in ("scenario", "explanation", "page_hint"):
            ws = words(getattr(q, name))
            copied += [
                f"{q.key}.{name}: {' '.join(ws[i : i + COPY_RUN])}"
                for i in range(len(ws) - COPY_RUN + 1)
                if tuple(ws[i : i + COPY_RUN]) in seed_runs
            ]
    assert not copied, "\n".join(copied)
