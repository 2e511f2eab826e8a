"""Constraint checks on answers: hand-made texts with known verdicts."""

from __future__ import annotations

import pytest

from ftvpe_core.tasks import checks, presets
from ftvpe_core.tasks.prompts import PromptSpec


def text_of(n: int) -> str:
    return " ".join(["word"] * n)


@pytest.mark.parametrize("n, passed", [(79, False), (80, True), (100, True), (120, True), (121, False)])
def test_word_count_passes_within_twenty_percent(n, passed):
    check = checks.check_words(text_of(n), 100)
    assert check.passed is passed
    assert check.detail == f"{n} words (asked for about 100: 80-120)"


def test_words_ignore_punctuation_and_keep_contractions():
    assert checks.words("Don't stop - it's 3 p.m., OK?") == ["Don't", "stop", "it's", "3", "p", "m", "OK"]


@pytest.mark.parametrize(
    "text, fmt, passed",
    [
        ("- trains\n- light bags\n• bottles", "a bulleted list", True),
        ("* only one bullet\nand prose", "a bulleted list", False),
        ("Trains are great. Bags too.", "a bulleted list", False),
        ("1. trains\n2) bags", "a numbered list", True),
        ("1. just one", "a numbered list", False),
        ('{"name": "Maria", "city": "Denver"}', "JSON", True),
        ('Here you go:\n```json\n{"name": "Maria"}\n```', "JSON with the keys name", True),
        ('```\n["a", "b"]\n```', "json", True),
        ("name: Maria, city: Denver", "JSON", False),
        ("| a | b |\n|---|---|\n| 1 | 2 |", "a table", True),
        ("a | b", "a table", False),
        ("billing", "one word: billing, shipping, technical or account", True),
        ("Billing.", "a single word", True),
        ("billing issue", "one word", False),
        ("It rains in Lisbon.", "one sentence", True),
        ("It rains. It pours.", "one sentence", False),
    ],
)
def test_format_checks(text, fmt, passed):
    check = checks.check_format(text, fmt)
    assert check.name == "Format"
    assert check.passed is passed


def test_json_detail_says_whether_it_parsed():
    assert checks.check_format("{}", "JSON").detail == "valid JSON"
    assert checks.check_format("{", "JSON").detail == "not valid JSON"


def test_unknown_format_is_not_measurable():
    check = checks.check_format("Once upon a time", "a haiku")
    assert check.passed is None
    assert "'a haiku' cannot be checked automatically" in check.detail


@pytest.mark.parametrize(
    "text, tone, passed",
    [
        ("Hello! You will love these easy tips.", "friendly", True),
        ("The report is attached.", "friendly", False),
        ("We are pleased to confirm the booking.", "formal", True),
        ("We're thrilled, it's booked!", "formal", False),
        ("Don't worry: this is common and treatable.", "reassuring", True),
        ("Amazing! What an exciting trip!", "enthusiastic", True),
    ],
)
def test_tone_checks(text, tone, passed):
    check = checks.check_tone(text, tone)
    assert check.name == "Tone"
    assert check.passed is passed


def test_formal_tone_counts_contractions_and_exclamation_marks():
    assert checks.check_tone("We're here! It's fine!", "formal").detail == "4 contractions or exclamation marks"


def test_unmeasurable_tone_gives_none():
    check = checks.check_tone("Sure.", "sarcastic")
    assert check.passed is None
    assert "'sarcastic' tone cannot be measured" in check.detail


def test_audience_matches_on_a_word_prefix():
    check = checks.check_audience("Great fun for the whole family.", "families in the USA")
    assert check.passed is True
    assert check.detail == "mentions families"


def test_audience_not_mentioned_lists_the_words_looked_for():
    check = checks.check_audience("A guide to night clubs.", "families in the USA")
    assert check.passed is False
    assert check.detail == "none of: families, USA"


def test_audience_of_only_stopwords_is_not_measurable():
    assert checks.check_audience("anything", "all of the people").passed is None


@pytest.mark.parametrize(
    "text, passed",
    [
        ("85 minutes is 1 h 25 min.\n3:40 + 1:25 = 5:05\nAnswer: 5:05 pm", True),
        ("Steps...\n\n**Answer:** 5:05 pm\n", True),
        ("answer: five past five", True),
        ("Answer: 5:05 pm\nHope this helps!", False),
        ("The train arrives at 5:05 pm.", False),
        ("", False),
    ],
)
def test_final_answer_line(text, passed):
    assert checks.check_final_answer(text).passed is passed


def test_empty_answer_says_so():
    assert checks.check_final_answer("  \n").detail == "empty answer"


def test_plain_spec_has_no_checks():
    spec = presets.get("travel").spec.plain()
    assert checks.run_checks(spec, "anything at all") == []


def test_travel_preset_runs_the_context_checks_in_order():
    spec = presets.get("travel").spec
    answer = "Hello friends! " + text_of(98)
    results = checks.run_checks(spec, answer)
    assert [c.name for c in results] == ["Word count", "Format", "Tone", "Audience"]
    by_name = {c.name: c.passed for c in results}
    # 100 words and two friendly markers pass, 'a blog introduction' cannot be measured, no family or USA.
    assert by_name == {"Word count": True, "Format": None, "Tone": True, "Audience": False}


def test_only_filled_context_fields_are_checked():
    spec = PromptSpec(task="Hi", enabled=("context",), tone="friendly")
    assert [c.name for c in checks.run_checks(spec, "Hi")] == ["Tone"]


def test_context_fields_are_ignored_when_context_is_off():
    spec = PromptSpec(task="Hi", enabled=("role",), role="a pirate", tone="friendly", words=50)
    assert checks.run_checks(spec, "Hi") == []


def test_chain_of_thought_adds_the_final_answer_check():
    spec = presets.get("train").spec
    results = checks.run_checks(spec, "3:40 plus 85 minutes.\nAnswer: 5:05 pm")
    assert [(c.name, c.passed) for c in results] == [("Final answer line", True)]


def test_audience_is_not_found_inside_another_word():
    answer = "Pack light and bring a reusable bottle."
    assert checks.check_audience(answer, presets.get("travel").spec.audience).passed is False
