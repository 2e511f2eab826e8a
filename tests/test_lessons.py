"""The Learn page's text: the seed article's ideas in our own words, and its short quiz names real questions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ftvpe_core import FtvpeError
from ftvpe_core.tasks import prompts
from ftvpe_core.teaching import classroom, content, lessons, quiz

SEED_ARTICLE = Path(__file__).resolve().parents[2] / "shared" / "seed-article.txt"
COPY_RUN = 8  # this many consecutive words shared with the seed article count as copying


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _texts() -> dict[str, str]:
    texts = {f"{s.key}.body": s.body for s in lessons.SECTIONS}
    texts |= {f"{s.key}.try_it": s.try_it for s in lessons.SECTIONS}
    texts |= {f"technique.{k}": text for k, (_, text) in lessons.TECHNIQUES.items()}
    texts |= {f"step.{n}": step.say for n, step in enumerate(classroom.STEPS, 1)}
    texts["content.CLASSROOM"] = content.CLASSROOM
    return texts


@pytest.mark.skipif(not SEED_ARTICLE.is_file(), reason="the seed article is not next to the repository")
def test_lessons_and_guided_steps_copy_no_run_of_words_from_the_seed_article():
    seed = words(SEED_ARTICLE.read_text(encoding="utf-8"))
    seed_runs = {tuple(seed[i : i + COPY_RUN]) for i in range(len(seed) - COPY_RUN + 1)}
    copied = []
    for name, text in _texts().items():
        ws = words(text)
        copied += [
            f"{name}: {' '.join(ws[i : i + COPY_RUN])}"
            for i in range(len(ws) - COPY_RUN + 1)
            if tuple(ws[i : i + COPY_RUN]) in seed_runs
        ]
    assert not copied, "\n".join(copied)


def test_the_lesson_covers_the_seed_ideas_in_six_sections():
    assert [s.key for s in lessons.SECTIONS] == ["prompting", "finetuning", "weights", "difference", "together", "quiz"]
    assert set(lessons.TECHNIQUES) == set(prompts.TECHNIQUES)
    body = {s.key: s.body.lower() for s in lessons.SECTIONS}
    assert "travel" in body["prompting"] and "marketing expert" in lessons.TECHNIQUES["role"][1]
    for idea in ("specialisation", "accuracy", "experience", "brand", "overfitting", "cost"):
        assert idea in body["finetuning"], idea
    assert "medical" in body["together"] and "patient" in body["together"]


def test_the_learn_quiz_names_three_questions_with_all_three_answers():
    asked = [quiz.question(k) for k in lessons.LEARN_QUIZ]
    assert {q.answer for q in asked} == set(quiz.ANSWERS)
    graded = quiz.grade({q.key: q.answer for q in asked}, lessons.LEARN_QUIZ)
    assert (graded.score, graded.total) == (3, 3)


def test_grading_a_subset_counts_only_its_questions_and_refuses_unknown_keys():
    first = quiz.QUESTIONS[0]
    graded = quiz.grade({first.key: first.answer}, [first.key])
    assert (graded.score, graded.total, graded.missing) == (1, 1, [])
    with pytest.raises(FtvpeError, match="Unknown quiz question 'nope'"):
        quiz.grade({}, ["nope"])
