"""ui.markdown.literal: outside text shown in Streamlit's Markdown exactly as written."""

from __future__ import annotations

import html
import re

import pytest

from ftvpe_core.ui import markdown

WJ = markdown.WORD_JOINER
TRICKS = [
    "[Sign in again](http://example.invalid/login)",
    "![x](http://example.invalid/pixel.png)",
    "<img src=x onerror=alert(1)> <a href='http://example.invalid'>here</a> <script>1</script>",
    "`rm -rf` and ```fenced```",
    "*bold* **strong** _under_ __dunder__ ~~gone~~",
    "# Heading\n## Sub\nTitle\n===\n> quote\n- item\n+ item\n1. item\n| a | b |\n|---|---|",
    "$x^2$ and $$y$$",
    ":red[coloured] :material/home: &amp; &#60;b&#62;",
    "[ref]: http://example.invalid\n[ref]",
    r"back\slash \[already escaped\]",
]


def test_literal_backslash_escapes_every_markdown_special_character():
    assert markdown.literal("[Sign in again](http://example.invalid/login)") == (
        rf"\[Sign in again\]\({WJ}http\:\/\/example\.invalid\/login\)"
    )
    assert markdown.literal("![x](y.png)") == r"\!\[x\]\(y\.png\)"
    assert markdown.literal("<b>hi</b>") == r"\<b\>hi\<\/b\>"
    assert markdown.literal("`code`") == r"\`code\`"
    assert markdown.literal("*a* _b_") == r"\*a\* \_b\_"
    assert markdown.literal("# Title") == r"\# Title"
    assert markdown.literal(r"a\b") == r"a\\b"
    assert markdown.literal("plain words, no marks") == "plain words, no marks"
    assert markdown.literal(42) == "42"


def test_literal_keeps_bare_urls_and_emails_from_becoming_links():
    # Streamlit's GFM finds these in the text after escapes are undone; a word joiner in front stops it.
    shown = markdown.literal("see www.example.invalid, HTTPS://example.invalid or me@example.invalid")
    assert f"{WJ}www" in shown and f"{WJ}HTTPS" in shown and rf"\@{WJ}example" in shown
    assert not re.search(r"(?<![\\\u2060])(https?:|www\.)", shown, re.I)


@pytest.mark.parametrize("text", TRICKS)
def test_literal_renders_back_to_the_same_characters_and_no_markup(text):
    markdown_it = pytest.importorskip("markdown_it")
    rendered = (
        markdown_it.MarkdownIt("commonmark").enable("table").enable("strikethrough").render(markdown.literal(text))
    )
    inner = re.sub(r"</?p>", "", rendered).strip()
    assert "<" not in inner.replace("<br />", ""), rendered  # no tag of its own: no link, image, emphasis, code
    shown = html.unescape(inner.replace("<br />", "")).replace(WJ, "")
    assert " ".join(shown.split()) == " ".join(text.split())
