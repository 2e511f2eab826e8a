"""The Prompt Lab's and the Token Lens' figures: a prompt's tokens by technique, next-token probabilities, the lens."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from ftvpe_core.figures.common import TECHNIQUE_COLORS, _empty, _short
from ftvpe_core.tasks.prompts import TECHNIQUE_LABELS, BuiltPrompt


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


LENS_COLORS = ["#94a3b8", "#16a34a", "#2563eb", "#7c3aed", "#d97706"]
"""One colour per lens condition, in order: plain prompt grey, engineered green, fine-tuned blue (as the arms)."""


LENS_HIGHLIGHT = "#f59e0b"
"""The bar of the token the answer actually continues with."""


def _lens_data(lens) -> dict:
    """A lens as its dict (``lens.Lens`` or the dict the page keeps); {} for None."""
    if lens is None:
        return {}
    return lens.to_dict() if hasattr(lens, "to_dict") else dict(lens)


def lens_position(lens, position: int) -> go.Figure:
    """Side by side, one panel per condition: the top-k next tokens at one answer position, with the token the
    answer continues with highlighted (added under the top k, with its rank, when it is not among them).

    Args:
        lens: a ``lens.Lens`` or its ``to_dict()``.
        position: the answer position (0 = the first answer token); clamped into the answer.
    """
    from plotly.subplots import make_subplots

    data = _lens_data(lens)
    tokens, labels = data.get("answer_tokens") or [], data.get("labels") or []
    title = "Next-token choices under each condition"
    if not tokens or not labels:
        return _empty(title, "Press Look to read the next-token choices")
    position = min(max(int(position), 0), len(tokens) - 1)
    followed_id, followed = data["answer_ids"][position], tokens[position]
    titles = [
        f"{label}: {100 * data['followed_prob'][label][position]:.0f} % on {_token_label(followed)}" for label in labels
    ]
    fig = make_subplots(rows=1, cols=len(labels), subplot_titles=titles, horizontal_spacing=0.12)
    for n, label in enumerate(labels):
        items = list(data["tops"][label][position])
        if all(t["id"] != followed_id for t in items):
            rank = data["followed_rank"][label][position]
            items.append(
                {"id": followed_id, "token": followed, "prob": data["followed_prob"][label][position], "rank": rank}
            )
        names, seen = [], set()
        for t in items:
            name = _token_label(t["token"]) + (f" (#{t['rank']})" if "rank" in t else "")
            while name in seen:  # two ids can decode alike; a category axis needs distinct names
                name += " "
            seen.add(name)
            names.append(name)
        color = LENS_COLORS[n % len(LENS_COLORS)]
        fig.add_bar(
            x=[t["prob"] for t in items][::-1],
            y=names[::-1],
            orientation="h",
            name=label,
            marker_color=[LENS_HIGHLIGHT if t["id"] == followed_id else color for t in items][::-1],
            text=[f"{100 * t['prob']:.0f} %" for t in items][::-1],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{y}: %{x:.1%}<extra>" + label + "</extra>",
            row=1,
            col=n + 1,
        )
        fig.update_xaxes(range=[0, 1.15], tickformat=".0%", row=1, col=n + 1)
    before = "".join(tokens[:position])
    where = f"after “{_short(before)}”" if before else "at the start of the answer"
    fig.update_layout(
        title=f"Token {position + 1} of {len(tokens)}: the next token {where}",
        showlegend=False,
        height=160 + 30 * (data.get("k") or 8),
        margin={"l": 10, "r": 10, "t": 90, "b": 10},
    )
    return fig


def lens_track(lens, position: int | None = None) -> go.Figure:
    """The probability each condition gives the answer's own token, token by token, with a marker at
    ``position``.

    Args:
        lens: a ``lens.Lens`` or its ``to_dict()``.
        position: the answer position to mark (None: no marker).
    """
    data = _lens_data(lens)
    tokens, labels = data.get("answer_tokens") or [], data.get("labels") or []
    title = "How sure each condition is of the answer, token by token"
    if not tokens or not labels:
        return _empty(title, "Press Look to follow an answer token by token")
    xs = list(range(len(tokens)))
    fig = go.Figure()
    for n, label in enumerate(labels):
        fig.add_scatter(
            x=xs,
            y=data["followed_prob"][label],
            mode="lines+markers",
            name=label,
            line={"color": LENS_COLORS[n % len(LENS_COLORS)]},
            customdata=data["followed_rank"][label],
            hovertemplate="%{y:.1%} (rank %{customdata})<extra>" + label + "</extra>",
        )
    if position is not None:
        fig.add_vline(x=min(max(int(position), 0), len(tokens) - 1), line_dash="dot", line_color=LENS_HIGHLIGHT)
    fig.update_layout(
        title=title,
        xaxis={"tickmode": "array", "tickvals": xs, "ticktext": [_token_label(t) for t in tokens], "tickangle": -45},
        yaxis={"tickformat": ".0%", "title": "probability of the answer's token", "range": [0, 1.05]},
        height=360,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "y": 1.12},
    )
    return fig
