"""Learners' display names: cleaned, keyed and checked for look-alikes, so nobody can pass for a classmate.

A name is NFKC-normalised (fullwidth ``Ｂob`` and the Kelvin sign's ``Kim`` become plain letters) and its
key is that form case-folded (``ÉVA`` and ``éva`` are one name): the run store keeps the key beside the name
and every comparison, the leaderboard's included, uses it. Names that are blank or invisible (Hangul fillers,
Braille blanks, zero-width or control characters, lone combining marks) are refused, and so is a name that
looks like one already taken: two names clash when their skeletons agree, the skeleton of Unicode's
confusables data (UTS #39) as the ``confusable_homoglyphs`` package ships it (``А`` Cyrillic is ``A``, ``rn``
is ``m``). A word that mixes scripts with look-alike letters (``Аlice``) is refused on its own.

This module keeps no table of its own: the confusables come from the package's copy of Unicode's data, read
from disk on first use (never from the network). It does not touch the store.
"""

from __future__ import annotations

import functools
import unicodedata

from ftvpe_core import FtvpeError

MAX_NAME_CHARS = 30
MAX_MARKS = 3
"""Combining marks allowed on one letter (more is text stacked over its neighbours)."""
BLANKS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
"""Letters and symbols that print as nothing: the Hangul fillers and the Braille blank (Unicode's other
invisible characters are format or control characters, refused by category)."""
_LRM = "\u200e"  # the confusables data wraps right-to-left characters in left-to-right marks


def clean(name: str) -> str:
    """A display name checked and normalised (NFKC, blanks and runs of spaces made one space).

    Raises:
        FtvpeError: an empty, blank or invisible name, one over MAX_NAME_CHARS, one with control or format
            characters, marks stacked on a letter, or a word mixing scripts with look-alike letters.
    """
    text = unicodedata.normalize("NFKC", str(name))
    text = " ".join("".join(" " if ch in BLANKS else ch for ch in text).split())
    if any(unicodedata.category(ch).startswith("C") for ch in text):
        raise FtvpeError("Your name has invisible control characters; type it again.")
    if not any(unicodedata.category(ch)[0] in "LNPS" for ch in text):
        raise FtvpeError("Type a display name: blank or invisible characters do not count.")
    if len(text) > MAX_NAME_CHARS:
        raise FtvpeError(f"Your name is {len(text)} characters long; the limit is {MAX_NAME_CHARS}.")
    marks = 0
    for ch in text:
        marks = marks + 1 if unicodedata.category(ch).startswith("M") else 0
        if marks > MAX_MARKS:
            raise FtvpeError(f"Your name stacks more than {MAX_MARKS} marks on one letter; type it plainly.")
    for word in text.split():
        if _mixes_lookalike_scripts(word):
            raise FtvpeError(
                f"'{word}' mixes letters of different alphabets that look alike; type your name in one alphabet."
            )
    return text


def key(name: str) -> str:
    """The form names are compared and stored by: NFKC, case-folded, runs of spaces made one (``clean`` a new
    name first)."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", str(name)).casefold())
    return " ".join(folded.split())


def skeletons(name: str) -> tuple[str, str]:
    """The name's confusables skeletons as written and as keyed (case-folded): two names look the same when
    either agrees (``Ian`` and ``lan`` as written, ``Аlice`` and ``alice`` once folded; ``Ian`` and ``Lan``
    in neither)."""
    return _skeleton(unicodedata.normalize("NFKC", name)), _skeleton(key(name))


def lookalike(name: str, taken: list[str]) -> str | None:
    """The first of the ``taken`` names this one could be mistaken for (its own key excluded), or None."""
    written, folded = skeletons(name)
    own = key(name)
    for other in taken:
        if key(other) != own and any(a == b for a, b in zip((written, folded), skeletons(other))):
            return other
    return None


def _skeleton(text: str) -> str:
    """UTS #39's skeleton: each character of the decomposed text replaced by its prototype, decomposed again."""
    table = _prototypes()
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFD", "".join(table.get(ch, ch) for ch in decomposed))


@functools.cache
def _prototypes() -> dict[str, str]:
    """Each confusable character's prototype, from the package's data: a prototype lists all the characters
    that look like it; each of those lists only its prototype. A pair that lists only each other (a
    prototype with one look-alike) maps both to the smaller, so the two still agree."""
    from confusable_homoglyphs import confusables

    data = {k.strip(_LRM): [e["c"].strip(_LRM) for e in v] for k, v in confusables.confusables_data.items()}
    table = {}
    for ch, glyphs in data.items():
        if len(ch) != 1 or len(glyphs) != 1:
            continue  # a prototype (it has several look-alikes), or a sequence
        target = glyphs[0]
        if len(target) > 1 or len(data.get(target, ())) > 1:
            table[ch] = target
        else:
            table[ch] = min(ch, target)
    return table


def _mixes_lookalike_scripts(word: str) -> bool:
    from confusable_homoglyphs import confusables

    # Marks belong to their letter's script: only the letters are compared (Yoruba's ẹ́ is Latin).
    letters = "".join(ch for ch in unicodedata.normalize("NFD", word) if not unicodedata.category(ch).startswith("M"))
    return bool(confusables.is_dangerous(letters))
