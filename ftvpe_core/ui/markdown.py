"""Text from outside the app (a link, an upload, a model, an error that quotes them) shown exactly as written.

Every ``st.*`` call that takes a message (``st.warning``, ``st.error``, ``st.markdown``, ``st.caption``, ...)
renders it as Markdown, so a link's ``[Sign in](http://...)`` would become a real link and ``![x](...)`` a
remote image. Pass any such text through :func:`literal` first; our own Markdown (``**bold**``) stays
outside it.
"""

from __future__ import annotations

import re

WORD_JOINER = "\u2060"
"""Invisible and unbreakable: placed before ``http://``, ``https://`` and ``www.`` and after ``@``, it stops
GFM's bare-URL and e-mail links, which Streamlit's renderer finds in the text after escapes are undone."""

_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~$:/&@=])")
"""Characters that start Markdown, GFM, KaTeX, HTML, entity or Streamlit directive syntax."""
_BARE_LINK = re.compile(r"(?i)(?=https?\\:\\/\\/|www\\\.)|(?<=\\@)")


def literal(text: object) -> str:
    """``text`` as Markdown that renders as the same characters: no links, images, HTML, code or emphasis.

    Args:
        text: anything; it is converted with ``str()``.
    Returns:
        The text with Markdown's special characters backslash-escaped (``[x](y)`` -> ``\\[x\\]\\(y\\)``) and
        a word joiner that keeps bare URLs and e-mail addresses from turning into links.
    """
    return _BARE_LINK.sub(WORD_JOINER, _SPECIAL.sub(r"\\\1", str(text)))
