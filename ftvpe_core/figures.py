"""Plotly figure builders: pure functions from data to ``plotly.graph_objects.Figure``.

No data gives an empty figure with its title, never an exception. Nothing here computes model outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

# Imported before plotly on purpose: plotly looks numpy up in sys.modules without the import lock, so
# a model loading in another thread (torch imports numpy) could hand it a half-imported module.
import numpy  # noqa: F401
import plotly.graph_objects as go

from ftvpe_core.prompts import TECHNIQUE_LABELS, BuiltPrompt

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


def prompt_token_bar(prompts: dict[str, BuiltPrompt], template_tokens: dict[str, int] | None = None) -> go.Figure:
    """One stacked horizontal bar per prompt: how many tokens each technique adds.

    Args:
        prompts: label -> built prompt (e.g. {"Plain": ..., "Engineered": ...}).
        template_tokens: label -> tokens the chat template itself adds (role markers, default system prompt).
    """
    title = "Prompt tokens by technique"
    if not prompts:
        return _empty(title)
    labels = list(prompts)[::-1]  # first prompt on top
    fig = go.Figure()
    order = ["task", "role", "few-shot", "cot", "context"]
    for technique in order + ["template"]:
        xs = []
        for label in labels:
            if technique == "template":
                xs.append((template_tokens or {}).get(label, 0))
            else:
                xs.append(prompts[label].tokens_by_technique().get(technique, 0))
        if not any(xs):
            continue
        name = "Chat template" if technique == "template" else TECHNIQUE_LABELS[technique]
        fig.add_bar(
            y=labels,
            x=xs,
            name=name,
            orientation="h",
            marker_color=TECHNIQUE_COLORS[technique],
            text=[str(x) if x else "" for x in xs],
            textposition="inside",
            hovertemplate=f"{name}: %{{x}} tokens<extra></extra>",
        )
    exact = all(p.exact_tokens for p in prompts.values())
    fig.update_layout(
        title=title if exact else title + " (estimated until the tokenizer loads)",
        barmode="stack",
        height=110 + 45 * len(labels),
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis_title="tokens",
        legend={"orientation": "h", "y": -0.35},
    )
    return fig


def _token_label(token: str) -> str:
    shown = token.replace("\n", "⏎").replace(" ", "·")
    return f"“{shown}”" if shown else "“”"


def next_token_chart(tops: dict[str, Sequence], k: int = 10) -> go.Figure:
    """Grouped bars of next-token probabilities under several prompts, on the union of their top tokens.

    Args:
        tops: label -> list of objects with ``token`` and ``prob`` (most likely first).
    """
    title = "Next-token probabilities: the answer's first token"
    tops = {label: list(items)[:k] for label, items in tops.items() if items}
    if not tops:
        return _empty(title, "Run a prompt to see the model's first-token choices")
    best: dict[str, float] = {}
    for items in tops.values():
        for t in items:
            best[t.token] = max(best.get(t.token, 0.0), t.prob)
    tokens = sorted(best, key=best.get, reverse=True)[: k + 5]
    fig = go.Figure()
    colors = ["#94a3b8", "#16a34a", "#7c3aed", "#d97706"]
    for n, (label, items) in enumerate(tops.items()):
        probs = {t.token: t.prob for t in items}
        fig.add_bar(
            x=[_token_label(t) for t in tokens],
            y=[probs.get(t, 0.0) for t in tokens],
            name=label,
            marker_color=colors[n % len(colors)],
            hovertemplate="%{x}: %{y:.1%}<extra>" + label + "</extra>",
        )
    fig.update_layout(
        title=title,
        barmode="group",
        yaxis={"tickformat": ".0%", "title": "probability"},
        xaxis={"title": "token (· is a space, ⏎ a new line)"},
        height=360,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "y": 1.12},
    )
    return fig
