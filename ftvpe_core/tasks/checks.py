"""Constraint checks on an answer, derived from the techniques a prompt asked for.

Each check says pass, fail, or 'not measurable' (None) with a short reason. The same checks run on the
plain answer and the engineered one, so a learner sees what the techniques bought. Pure text functions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ftvpe_core.tasks.prompts import ANSWER_PREFIX, PromptSpec

WORD_TOLERANCE = 0.2

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’-]*")
_STOPWORDS = {
    "the", "and", "for", "with", "who", "are", "that", "this", "from", "their", "your", "our", "all", "any",
    "people", "someone", "readers", "have", "has", "into", "about", "not", "but", "a", "an", "in",
    "of", "on", "to", "no",
}  # fmt: skip
_TONE_MARKERS = {
    "friendly": {"you", "your", "you're", "let's", "we", "enjoy", "fun", "great", "love", "happy", "welcome",
                 "hello", "hi", "easy", "!"},
    "enthusiastic": {"!", "amazing", "exciting", "love", "incredible", "fantastic", "wow", "great"},
    "reassuring": {"don't worry", "common", "manageable", "can help", "you can", "not alone", "normal",
                   "treatable", "help", "safe"},
}  # fmt: skip
_CONTRACTION = re.compile(r"\b\w+(?:'|’)(?:s|t|re|ve|ll|d|m)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool | None
    """True, False, or None when the constraint cannot be measured."""
    detail: str


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def check_words(text: str, target: int) -> Check:
    n = len(words(text))
    low, high = round(target * (1 - WORD_TOLERANCE)), round(target * (1 + WORD_TOLERANCE))
    return Check("Word count", low <= n <= high, f"{n} words (asked for about {target}: {low}-{high})")


def _list_lines(text: str, pattern: str) -> int:
    return sum(1 for line in text.splitlines() if re.match(pattern, line.strip()))


def check_format(text: str, fmt: str) -> Check:
    f = fmt.lower()
    name = "Format"
    if "json" in f:
        candidate = text.strip()
        fence = re.search(r"```(?:json)?\s*(.*?)```", candidate, re.DOTALL)
        if fence:
            candidate = fence.group(1).strip()
        try:
            json.loads(candidate)
            return Check(name, True, "valid JSON")
        except ValueError:
            return Check(name, False, "not valid JSON")
    if "bullet" in f:
        n = _list_lines(text, r"^[-*•]\s+")
        return Check(name, n >= 2, f"{n} bulleted lines")
    if "numbered" in f:
        n = _list_lines(text, r"^\d+[.)]\s+")
        return Check(name, n >= 2, f"{n} numbered lines")
    if "table" in f:
        n = sum(1 for line in text.splitlines() if line.count("|") >= 2)
        return Check(name, n >= 2, f"{n} table rows")
    if "one word" in f or "single word" in f:
        n = len(words(text))
        return Check(name, n == 1, f"{n} words")
    if "one sentence" in f or "single sentence" in f:
        n = len(re.findall(r"[.!?](?:\s|$)", text.strip()))
        return Check(name, n == 1, f"{n} sentences")
    return Check(name, None, f"'{fmt}' cannot be checked automatically")


def check_tone(text: str, tone: str) -> Check:
    t = tone.lower().strip().rstrip(".")
    lowered = text.lower()
    tokens = set(w.lower() for w in words(text))
    if t in ("formal", "professional"):
        issues = len(_CONTRACTION.findall(text)) + text.count("!")
        return Check("Tone", issues == 0, f"{issues} contractions or exclamation marks")
    for key, markers in _TONE_MARKERS.items():
        if key in words(t):
            found = sorted(m for m in markers if (m in tokens if m.isalpha() else m in lowered))
            return Check(
                "Tone", len(found) >= 2, f"{len(found)} {key} markers" + (f": {', '.join(found[:5])}" if found else "")
            )
    return Check("Tone", None, f"a '{tone}' tone cannot be measured automatically")


def check_audience(text: str, audience: str) -> Check:
    keys = [w for w in words(audience) if w.lower() not in _STOPWORDS and len(w) >= 3]
    if not keys:
        return Check("Audience", None, "no audience words to look for")
    answer_words = [w.lower() for w in words(text)]
    # Match whole words on their first five letters, so 'families' finds 'family' and 'patients' finds
    # 'patient', but 'USA' is not found inside 'reusable'.
    found = [k for k in keys if any(w.startswith(k.lower()[:5]) for w in answer_words)]
    return Check(
        "Audience",
        bool(found),
        f"mentions {', '.join(found)}" if found else f"none of: {', '.join(keys)}",
    )


def check_final_answer(text: str) -> Check:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    ok = last.lower().lstrip("*#_ ").startswith(ANSWER_PREFIX.lower())
    return Check("Final answer line", ok, f"last line: {last[:60]!r}" if last else "empty answer")


def run_checks(spec: PromptSpec, text: str) -> list[Check]:
    """The checks the spec's techniques call for, run on one answer."""
    checks: list[Check] = []
    if spec.uses("context"):
        if spec.words:
            checks.append(check_words(text, spec.words))
        if spec.output_format.strip():
            checks.append(check_format(text, spec.output_format))
        if spec.tone.strip():
            checks.append(check_tone(text, spec.tone))
        if spec.audience.strip():
            checks.append(check_audience(text, spec.audience))
    if spec.uses("cot"):
        checks.append(check_final_answer(text))
    return checks
