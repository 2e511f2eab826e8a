"""What every figure shares: colours by technique, run and arm, the metrics' words, the empty figure, text helpers."""

from __future__ import annotations

import html

import plotly.graph_objects as go

TECHNIQUE_COLORS = {
    "task": "#64748b",
    "role": "#7c3aed",
    "few-shot": "#0891b2",
    "cot": "#d97706",
    "context": "#16a34a",
    "template": "#cbd5e1",
}


def _empty(title: str, note: str = "No data yet") -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        title=title,
        xaxis={"visible": False},
        yaxis={"visible": False},
        annotations=[{"text": note, "showarrow": False, "font": {"size": 14}}],
        height=220,
    )
    return fig


def _short(text: str, n: int = 40) -> str:
    text = text.replace("\n", "⏎")
    return text if len(text) <= n else "…" + text[-n:]


RUN_COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d"]


# The four arms of a comparison, one colour each wherever they appear (scores, costs, data efficiency).
ARM_COLORS = {"base": "#94a3b8", "prompt": "#16a34a", "tuned": "#2563eb", "tuned+prompt": "#7c3aed"}


METRIC_WORDS = {
    "accuracy": "accuracy",
    "constraints": "rules kept",
    "fact_recall": "facts recalled",
    "token_f1": "token F1",
    "exact_match": "exact match",
}


def metric_words(metric: str | None) -> str:
    """A task's metric in words ("constraints" -> "rules kept"); unknown names lose their underscores."""
    if not metric:
        return "score"
    return METRIC_WORDS.get(metric, metric.replace("_", " "))


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _plain(text: str) -> str:
    """Text for plotly's labels, which read a few HTML tags (<b>, <br>, <a>): escaped, so it shows as typed."""
    return html.escape(text, quote=False)
