"""Plotly figure builders: pure functions from data to ``plotly.graph_objects.Figure``.

No data gives an empty figure with its title, never an exception. Nothing here computes model outputs.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

# Imported before plotly on purpose: plotly looks numpy up in sys.modules without the import lock, so
# a model loading in another thread (torch imports numpy) could hand it a half-imported module.
import numpy  # noqa: F401
import plotly.graph_objects as go

from ftvpe_core.tasks.prompts import TECHNIQUE_LABELS, BuiltPrompt

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


LENS_COLORS = ["#94a3b8", "#16a34a", "#2563eb", "#7c3aed", "#d97706"]
"""One colour per lens condition, in order: plain prompt grey, engineered green, fine-tuned blue (as the arms)."""
LENS_HIGHLIGHT = "#f59e0b"
"""The bar of the token the answer actually continues with."""


def _lens_data(lens) -> dict:
    """A lens as its dict (``lens.Lens`` or the dict the page keeps); {} for None."""
    if lens is None:
        return {}
    return lens.to_dict() if hasattr(lens, "to_dict") else dict(lens)


def _short(text: str, n: int = 40) -> str:
    text = text.replace("\n", "⏎")
    return text if len(text) <= n else "…" + text[-n:]


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


RUN_COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d"]


def loss_curves(
    metrics: dict[str, Sequence[tuple[int, float]]],
    total_steps: int | None = None,
    overfit_step: int | None = None,
    title: str = "Training and validation loss",
) -> go.Figure:
    """Train loss per step and validation loss per evaluation, with a marker where validation turns up.

    Args:
        metrics: name -> [(step, value)], as ``RunStore.metrics`` returns; uses 'train_loss' and 'val_loss'.
        total_steps: the run's planned steps, to fix the x axis while it trains (the curve grows into it).
        overfit_step: the step after which the validation loss rose (``finetune.overfit_step``).
    """
    train = list(metrics.get("train_loss") or [])
    val = list(metrics.get("val_loss") or [])
    if not train and not val:
        return _empty(title, "The curves appear after the first training step")
    fig = go.Figure()
    if train:
        fig.add_scatter(
            x=[s for s, _ in train],
            y=[v for _, v in train],
            name="train loss",
            mode="lines",
            line={"color": "#94a3b8", "width": 1.5},
            hovertemplate="step %{x}: train %{y:.3f}<extra></extra>",
        )
    if val:
        fig.add_scatter(
            x=[s for s, _ in val],
            y=[v for _, v in val],
            name="validation loss",
            mode="lines+markers",
            line={"color": "#2563eb", "width": 3},
            hovertemplate="step %{x}: validation %{y:.3f}<extra></extra>",
        )
    if overfit_step is not None:
        fig.add_vline(x=overfit_step, line={"color": "#dc2626", "dash": "dash"})
        fig.add_annotation(
            x=overfit_step,
            y=1,
            yref="paper",
            text="overfitting starts: validation loss turns up",
            showarrow=False,
            xanchor="left",
            font={"color": "#dc2626"},
        )
    xaxis: dict = {"title": "training step"}
    if total_steps:
        xaxis["range"] = [0, total_steps * 1.02]
    # showlegend: plotly hides the legend of a lone curve, so before the first validation the train loss
    # would be an unnamed line.
    fig.update_layout(
        title=title,
        xaxis=xaxis,
        yaxis={"title": "loss (lower is better)", "rangemode": "tozero"},
        height=360,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "y": 1.12},
        showlegend=True,
    )
    return fig


def loss_overlay(curves: dict[str, dict[str, Sequence[tuple[int, float]]]]) -> go.Figure:
    """Several runs' curves on one chart: validation loss solid, train loss dotted, one colour per run.

    Args:
        curves: run label -> metrics (name -> [(step, value)]).
    """
    title = "Runs compared: loss by step"
    curves = {label: m for label, m in curves.items() if m.get("train_loss") or m.get("val_loss")}
    if not curves:
        return _empty(title, "Pick runs with recorded losses")
    fig = go.Figure()
    for n, (label, m) in enumerate(curves.items()):
        color = RUN_COLORS[n % len(RUN_COLORS)]
        for name, dash, mode in (("val_loss", "solid", "lines+markers"), ("train_loss", "dot", "lines")):
            points = list(m.get(name) or [])
            if points:
                kind = "validation" if name == "val_loss" else "train"
                fig.add_scatter(
                    x=[s for s, _ in points],
                    y=[v for _, v in points],
                    mode=mode,
                    name=f"{label} · {kind}",
                    line={"color": color, "dash": dash},
                    hovertemplate=f"{label}<br>step %{{x}}: {kind} %{{y:.3f}}<extra></extra>",
                )
    fig.update_layout(
        title=title,
        xaxis={"title": "training step"},
        yaxis={"title": "loss", "rangemode": "tozero"},
        height=420,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def token_length_histogram(lengths: dict[str, Sequence[int]], max_length: int | None = None) -> go.Figure:
    """How long the examples are, in tokens, per split; a line where training cuts them (max length).

    Args:
        lengths: split name -> token count of each example (prompt + response with the chat template).
    """
    title = "Example lengths in tokens"
    lengths = {name: list(v) for name, v in lengths.items() if v}
    if not lengths:
        return _empty(title, "No examples")
    fig = go.Figure()
    colors = {"train": "#2563eb", "validation": "#d97706", "test": "#16a34a"}
    for n, (name, values) in enumerate(lengths.items()):
        fig.add_histogram(
            x=values,
            name=f"{name} ({len(values)})",
            opacity=0.7,
            marker_color=colors.get(name, RUN_COLORS[n % len(RUN_COLORS)]),
            hovertemplate="%{x} tokens: %{y} examples<extra></extra>",
        )
    if max_length:
        longest = max(max(v) for v in lengths.values())
        cut = sum(x > max_length for v in lengths.values() for x in v)
        if longest >= max_length * 0.5:
            fig.add_vline(x=max_length, line={"color": "#dc2626", "dash": "dash"})
            fig.add_annotation(
                x=max_length,
                y=1,
                yref="paper",
                showarrow=False,
                xanchor="right",
                text=f"max length {max_length}: {cut} example{'s' if cut != 1 else ''} cut",
                font={"color": "#dc2626"},
            )
    fig.update_layout(
        title=title,
        barmode="overlay",
        xaxis={"title": "tokens per example"},
        yaxis={"title": "examples"},
        height=300,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "y": 1.15},
    )
    return fig


def parameter_share(trainable: int, total: int) -> go.Figure:
    """Trainable (LoRA) against frozen (base) weights, on a log scale so the small share stays visible."""
    title = "What LoRA trains: its share of the weights"
    if total <= 0:
        return _empty(title, "Load a model to count its weights")
    frozen = max(total - trainable, 0)
    share = trainable / total
    fig = go.Figure()
    fig.add_bar(
        y=["trainable (LoRA adapter)", "frozen (base model)"],
        x=[trainable, frozen],
        orientation="h",
        marker_color=["#dc2626", "#94a3b8"],
        text=[f"{trainable:,} ({share:.2%})", f"{frozen:,} ({1 - share:.2%})"],
        textposition="auto",
        hovertemplate="%{y}: %{x:,} weights<extra></extra>",
    )
    fig.update_layout(
        title=f"{title}: {share:.2%} trains, {1 - share:.2%} stays frozen",
        xaxis={"type": "log", "title": "weights (log scale)"},
        height=200,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig


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


def _arm_color(arm: dict, n: int) -> str:
    return ARM_COLORS.get(arm.get("name", ""), RUN_COLORS[n % len(RUN_COLORS)])


def arm_scores(arms: list[dict], metric: str) -> go.Figure:
    """One bar per arm (base, prompt, tuned, tuned+prompt): its score on the held-out examples, in %.

    Args:
        arms: the comparison's arms (``name``, ``label``, ``score`` in 0-1, ``n``); arms without a score are left out.
        metric: the task's metric name ("accuracy", "constraints", "fact_recall", "token_f1").
    """
    words = metric_words(metric)
    title = f"{_capital(words)} by arm"
    arms = [a for a in arms or [] if a.get("score") is not None]
    if not arms:
        return _empty(title, "Run a comparison to score the arms")
    labels = [a.get("label") or a.get("name", "?") for a in arms]
    scores = [float(a["score"]) for a in arms]
    fig = go.Figure()
    fig.add_bar(
        x=labels,
        y=scores,
        marker_color=[_arm_color(a, n) for n, a in enumerate(arms)],
        text=[f"{s:.0%}" for s in scores],
        textposition="outside",
        customdata=[a.get("n") or 0 for a in arms],
        hovertemplate=f"%{{x}}<br>{words}: %{{y:.1%}}<br>%{{customdata}} examples<extra></extra>",
    )
    fig.update_layout(
        title=title,
        yaxis={"tickformat": ".0%", "range": [0, 1.1], "title": f"{words} (higher is better)"},
        height=360,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        showlegend=False,
    )
    return fig


def break_even_calls(a: dict, b: dict) -> float | None:
    """How many calls until two arms have cost the same compute time, training included.

    An arm's total time after ``c`` calls is ``train_seconds + c * mean_latency_s``; the two lines meet once at most.

    Returns:
        The number of calls where the totals are equal, or None when they never are at a positive number of calls
        (the same latency, or one arm cheaper from the first call on).
    """
    la, lb = a.get("mean_latency_s"), b.get("mean_latency_s")
    if la is None or lb is None or la == lb:
        return None
    calls = ((b.get("train_seconds") or 0.0) - (a.get("train_seconds") or 0.0)) / (la - lb)
    return calls if calls > 0 else None


def _first(arms: list[dict], names: Sequence[str]) -> dict | None:
    by_name = {a.get("name"): a for a in arms}
    return next((by_name[n] for n in names if n in by_name), None)


def break_even(arms: list[dict], max_calls: int = 100_000) -> go.Figure:
    """Total compute time (training + answering) against the number of calls, one line per arm, log-log.

    Where the fine-tuned arm's line crosses the prompted arm's (or the base arm's when no prompt arm ran), a marker
    says after how many calls fine-tuning pays for its training (or after how many the prompt stays cheaper).
    """
    title = "Break-even: total compute time by number of calls"
    arms = [a for a in arms or [] if a.get("mean_latency_s") is not None]
    if not arms:
        return _empty(title, "Run a comparison to time the arms")
    max_calls = max(int(max_calls), 10)
    calls = numpy.geomspace(1, max_calls, 200)
    totals = {a.get("name"): (a.get("train_seconds") or 0.0) + calls * a["mean_latency_s"] for a in arms}
    log_y = all(float(t.min()) > 0 for t in totals.values())
    fig = go.Figure()
    for n, a in enumerate(arms):
        label = a.get("label") or a.get("name", "?")
        fig.add_scatter(
            x=calls,
            y=totals[a.get("name")],
            mode="lines",
            name=label,
            line={"color": _arm_color(a, n), "width": 2.5},
            hovertemplate=f"{label}<br>%{{x:,.0f}} calls: %{{y:,.1f}} s<extra></extra>",
        )
    tuned, other = _first(arms, ("tuned", "tuned+prompt")), _first(arms, ("prompt", "base"))
    crossing = break_even_calls(tuned, other) if tuned and other else None
    if crossing is not None:
        n_calls = int(numpy.ceil(round(crossing, 6)))  # round first: 4000 / (0.21 - 0.2) is 400000.00000000006
        if tuned["mean_latency_s"] < other["mean_latency_s"]:
            text = f"fine-tuning pays off after {n_calls:,} calls"
        else:
            text = f"{other.get('label') or other['name']} stays cheaper after {n_calls:,} calls"
        cost = (tuned.get("train_seconds") or 0.0) + crossing * tuned["mean_latency_s"]
        if crossing <= max_calls:
            fig.add_scatter(
                x=[crossing],
                y=[cost],
                mode="markers",
                name="break-even",
                showlegend=False,
                marker={"color": "#dc2626", "size": 11, "symbol": "x"},
                hovertemplate=f"{text}<extra></extra>",
            )
            # Annotations on log axes take log10 positions (plotly's rule; traces take data values).
            fig.add_annotation(
                x=numpy.log10(crossing),
                y=numpy.log10(cost) if log_y else cost,
                text=text,
                showarrow=True,
                arrowhead=2,
                ax=-40,
                ay=-40,
                font={"color": "#dc2626"},
            )
        else:
            fig.add_annotation(
                x=0,
                y=1,
                xref="paper",
                yref="paper",
                xanchor="left",
                showarrow=False,
                text=f"{text}, beyond this chart",
                font={"color": "#dc2626"},
            )
    fig.update_layout(
        title=title,
        xaxis={"type": "log", "title": "calls answered (log scale)", "range": [0, numpy.log10(max_calls)]},
        yaxis={
            "type": "log" if log_y else "linear",
            "title": "total seconds: training + answering" + (" (log scale)" if log_y else ""),
        },
        height=380,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


# Zero examples cannot sit on a log axis: it is drawn at this position and its tick is labelled "0".
ZERO_EXAMPLES_AT = 0.5


def data_efficiency(efficiency: dict | None, metric: str) -> go.Figure:
    """Score against examples used: k in the prompt (k-shot prompting) or N to train on (LoRA fine-tuning).

    The x axis is logarithmic, labelled with the true counts; zero examples (plain prompt) is drawn at its left edge.

    Args:
        efficiency: {"kshot": [{"k", "score", "mean_prompt_tokens"}], "lora": [{"n", "score", "train_seconds"}]}.
        metric: the task's metric name.
    """
    words = metric_words(metric)
    title = f"Data efficiency: {words} by examples used"
    efficiency = efficiency or {}
    series = [
        (
            "k-shot prompting",
            "k",
            [p for p in efficiency.get("kshot") or [] if p.get("score") is not None],
            ARM_COLORS["prompt"],
            "examples in the prompt",
        ),
        (
            "LoRA fine-tuning",
            "n",
            [p for p in efficiency.get("lora") or [] if p.get("score") is not None],
            ARM_COLORS["tuned"],
            "training examples",
        ),
    ]
    if not any(points for _, _, points, _, _ in series):
        return _empty(title, "Run the data-efficiency sweep to see this chart")
    fig = go.Figure()
    ticks: set[int] = set()
    for name, key, points, color, unit in series:
        if not points:
            continue
        points = sorted(points, key=lambda p: p[key])
        counts = [int(p[key]) for p in points]
        ticks.update(counts)
        if key == "k":
            extra = [f"{p.get('mean_prompt_tokens') or 0:.0f} prompt tokens" for p in points]
        else:
            extra = [f"{p.get('train_seconds') or 0:.0f} s training" for p in points]
        fig.add_scatter(
            x=[c if c > 0 else ZERO_EXAMPLES_AT for c in counts],
            y=[p["score"] for p in points],
            name=name,
            mode="lines+markers",
            line={"color": color, "width": 2.5},
            marker={"size": 9},
            customdata=list(zip(counts, extra, strict=True)),
            hovertemplate=f"{name}<br>%{{customdata[0]}} {unit}: %{{y:.1%}}<br>%{{customdata[1]}}<extra></extra>",
        )
    tickvals = sorted(t if t > 0 else ZERO_EXAMPLES_AT for t in ticks)
    fig.update_layout(
        title=title,
        xaxis={
            "type": "log",
            "title": "examples used (log scale; 0 = none, drawn at the left edge)",
            "tickvals": tickvals,
            "ticktext": [str(int(v)) if v >= 1 else "0" for v in tickvals],
        },
        yaxis={"tickformat": ".0%", "range": [0, 1.05], "title": f"{words} (higher is better)"},
        height=400,
        margin={"l": 10, "r": 10, "t": 80, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
    )
    return fig


def combination_label(techniques: Sequence[str]) -> str:
    """A combination of prompt techniques in words: "role + few-shot", or "plain" for none."""
    return " + ".join(techniques) if techniques else "plain"


def ablation_chart(combinations: list[dict], metric: str | None = None) -> go.Figure:
    """One horizontal bar per combination of techniques, best on top, coloured by its mean prompt tokens.

    Args:
        combinations: [{"techniques", "score", "mean_prompt_tokens", "n"}]; those without a score are left out.
        metric: the task's metric name, for the axis title (optional).
    """
    words = metric_words(metric)
    title = "Ablation: every combination of prompt techniques"
    combos = sorted((c for c in combinations or [] if c.get("score") is not None), key=lambda c: c["score"])
    if not combos:
        return _empty(title, "Run the ablation to see this chart")
    labels = [combination_label(c.get("techniques") or []) for c in combos]
    tokens = [float(c.get("mean_prompt_tokens") or 0.0) for c in combos]
    fig = go.Figure()
    fig.add_bar(
        y=labels,
        x=[c["score"] for c in combos],
        orientation="h",
        text=[f"{c['score']:.0%}" for c in combos],
        textposition="outside",
        customdata=list(zip(tokens, [c.get("n") or 0 for c in combos], strict=True)),
        marker={
            "color": tokens,
            "colorscale": [[0, "#bfdbfe"], [1, "#1e3a8a"]],
            "showscale": True,
            "colorbar": {"title": {"text": "mean prompt<br>tokens"}},
            "line": {"color": "#475569", "width": 0.5},
        },
        hovertemplate=f"%{{y}}<br>{words}: %{{x:.1%}}<br>%{{customdata[0]:.0f}} prompt tokens"
        "<br>%{customdata[1]} examples<extra></extra>",
    )
    fig.update_layout(
        title=title,
        xaxis={"tickformat": ".0%", "range": [0, 1.12], "title": f"{words} (higher is better)"},
        height=120 + 26 * len(combos),
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        showlegend=False,
    )
    return fig


def technique_gains_chart(gains: dict[str, float] | None, metric: str | None = None) -> go.Figure:
    """How much each prompt technique changes the score, in percentage points: green helps, red hurts.

    Args:
        gains: technique -> change in score (0-1 scale) when the technique is added; None values are left out.
        metric: the task's metric name, for the axis title (optional).
    """
    words = metric_words(metric)
    title = "What each technique adds"
    items = sorted(((t, float(g)) for t, g in (gains or {}).items() if g is not None), key=lambda item: item[1])
    if not items:
        return _empty(title, "Run the ablation to measure each technique")
    labels = [TECHNIQUE_LABELS.get(t, t) for t, _ in items]
    points = [g * 100 for _, g in items]
    fig = go.Figure()
    fig.add_bar(
        y=labels,
        x=points,
        orientation="h",
        text=[f"{p:+.1f} pp" for p in points],
        textposition="auto",
        marker_color=["#16a34a" if p > 0 else "#dc2626" if p < 0 else "#94a3b8" for p in points],
        hovertemplate=f"%{{y}}: %{{x:+.1f}} percentage points of {words}<extra></extra>",
    )
    fig.add_vline(x=0, line={"color": "#475569", "width": 1})
    fig.update_layout(
        title=title,
        xaxis={"title": f"change in {words} when added (percentage points)", "zeroline": True},
        height=140 + 40 * len(items),
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        showlegend=False,
    )
    return fig


WEIGHT_COLUMNS = {
    "q_proj": "q",
    "k_proj": "k",
    "v_proj": "v",
    "o_proj": "o",
    "gate_proj": "gate",
    "up_proj": "up",
    "down_proj": "down",
}
"""Projection -> column label of ``words_vs_weights`` (the linear layers of a Llama-style decoder layer)."""


def _millions(n: int | None) -> str:
    return f"{n / 1e6:.0f} M" if n and n >= 1e7 else f"{n / 1e6:.1f} M" if n and n >= 1e5 else f"{n or 0:,}"


def words_vs_weights(changes: dict | None, prompt_tokens_added: int | None = None) -> go.Figure:
    """Which weights each approach changes: prompting none (left), LoRA every adapted matrix (right).

    Two heatmaps with rows = decoder layers and columns = q, k, v, o, gate, up, down, on one colour scale.

    Args:
        changes: ``weights.adapter_changes(...)``; coloured by the relative change ‖ΔW‖/‖W‖ when it has base
            weights, else by ‖ΔW‖. Projections the adapter leaves alone are 0.
        prompt_tokens_added: how many tokens prompt engineering adds instead (shown under the left map).
    """
    from plotly.subplots import make_subplots

    title = "Words vs weights: what each approach changes in the model"
    if not changes or not changes.get("matrices"):
        return _empty(title, "Fine-tune a model (or pick a recorded run) to see which weights its adapter changes")
    relative = bool(changes.get("has_base"))
    layers = list(range(int(changes.get("layers") or 1 + max(m["layer"] for m in changes["matrices"]))))
    columns = list(WEIGHT_COLUMNS)
    by_cell = {(m["layer"], m["projection"]): m for m in changes["matrices"] if m["projection"] in WEIGHT_COLUMNS}
    right, hover_right, hover_left = [], [], []
    for layer in layers:
        row, hover_row, left_row = [], [], []
        for proj in columns:
            left_row.append(f"layer {layer} · {proj}<br>prompting changes no weight: ΔW = 0")
            m = by_cell.get((layer, proj))
            if m is None:
                row.append(0.0)
                hover_row.append(f"layer {layer} · {proj}<br>not adapted: unchanged")
                continue
            value = m["relative"] if relative and m.get("relative") is not None else m["delta_norm"]
            row.append(float(value) * (100 if relative else 1))
            base = f"{m['base_norm']:.3g}" if m.get("base_norm") is not None else "unknown"
            rel = f"{m['relative']:.3%}" if m.get("relative") is not None else "unknown (no base weights)"
            hover_row.append(
                f"layer {layer} · {proj}<br>‖ΔW‖ = {m['delta_norm']:.4g}<br>‖W‖ = {base}<br>relative change {rel}"
                f"<br>{m['entries']:,} entries change (ΔW is dense)<br>from {m['lora_parameters']:,} LoRA numbers"
            )
        right.append(row)
        hover_right.append(hover_row)
        hover_left.append(left_row)
    unit = "relative change ‖ΔW‖/‖W‖ (%)" if relative else "‖ΔW‖ (no base weights to compare)"
    fig = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        horizontal_spacing=0.04,
        subplot_titles=[
            "Prompt engineering: weights changed",
            f"Fine-tuning (LoRA): {'relative' if relative else 'absolute'} change per layer",
        ],
    )
    x = [WEIGHT_COLUMNS[p] for p in columns]
    # xgap/ygap let the grey background draw the cell grid, so the all-zero map still shows its cells.
    zeros = [[0.0] * len(columns) for _ in layers]
    panels = ((zeros, hover_left, "prompt engineering"), (right, hover_right, "fine-tuning (LoRA)"))
    for col, (z, text, name) in enumerate(panels, 1):
        fig.add_heatmap(
            z=z,
            x=x,
            y=layers,
            coloraxis="coloraxis",
            text=text,
            xgap=1,
            ygap=1,
            hovertemplate="%{text}<extra></extra>",
            name=name,
            row=1,
            col=col,
        )
    total = changes.get("total_parameters")
    of_total = f" of {_millions(total)}" if total else ""
    grows = (
        f"the prompt grows by {prompt_tokens_added:,} tokens instead"
        if prompt_tokens_added is not None
        else ("the prompt grows instead")
    )
    touched = int(changes.get("weights_touched") or 0)
    notes = [
        (0.23, f"0{of_total} weights change; {grows}"),
        (
            0.77,
            f"{_millions(touched)}{of_total} weights change, from {changes.get('lora_parameters', 0):,} "
            "trained LoRA numbers",
        ),
    ]
    for x_pos, text in notes:
        fig.add_annotation(
            x=x_pos,
            y=-0.07,
            xref="paper",
            yref="paper",
            text=text,
            showarrow=False,
            xanchor="center",
            yanchor="top",
            font={"size": 12},
        )
    top = max((v for row in right for v in row), default=0.0) or 1.0
    fig.update_layout(
        title=title,
        height=max(320, 120 + 14 * len(layers)),
        margin={"l": 10, "r": 10, "t": 80, "b": 70},
        plot_bgcolor="#cbd5e1",
        coloraxis={
            "colorscale": "Blues",
            "cmin": 0.0,
            "cmax": top,
            "colorbar": {"title": {"text": unit, "side": "right"}},
        },
    )
    fig.update_yaxes(title_text="decoder layer", autorange="reversed", row=1, col=1)
    return fig


CHALLENGE_TRACKS = {"prompt": ("Prompt", ARM_COLORS["prompt"]), "finetune": ("Fine-tune", ARM_COLORS["tuned"])}


CHART_FONT = 20
"""Type size of the challenge chart's ticks and names: readable from the back of a room on a projector."""


def challenge_points(submissions: list[dict]) -> dict[str, list[dict]]:
    """Each learner's best score per track, spread sideways where scores are close so names do not overlap.

    Returns:
        per track (in CHALLENGE_TRACKS order), best first: {'name', 'score', 'x', 'textposition'}, x the offset
        from the track's centre (-0.4 to 0.4); names on the outer side, and up or down as a band fills.
    """
    best: dict[tuple[str, str], dict] = {}
    for s in submissions or []:
        if s.get("score") is None or s.get("track") not in CHALLENGE_TRACKS:
            continue
        key = (s["track"], str(s.get("name", "")))
        if key not in best or float(s["score"]) > best[key]["score"]:
            best[key] = {"name": key[1], "score": float(s["score"])}
    out: dict[str, list[dict]] = {}
    for track in CHALLENGE_TRACKS:
        mine = sorted((v for (t, _), v in best.items() if t == track), key=lambda v: (-v["score"], v["name"]))
        bands: dict[int, int] = {}
        for point in mine:
            band = round(point["score"] * 20)  # within 5 points of each other: side by side
            k = bands.get(band, 0)
            bands[band] = k + 1
            # left, right, further left, further right...; each name on its point's outer side
            side, level = (-1 if k % 2 == 0 else 1), k // 2
            point["x"] = max(-0.4, min(0.4, side * (0.06 + 0.16 * level)))
            vertical = ("middle", "top", "bottom")[level % 3]
            point["textposition"] = f"{vertical} {'left' if side < 0 else 'right'}"
        out[track] = mine
    return out


def challenge_scores(submissions: list[dict], metric: str | None = None, height: int = 380) -> go.Figure:
    """The class's answer to "prompt or fine-tune?": each learner's best score as a named point per track,
    with the track's mean as a bar across it, in type large enough for a projector.

    Args:
        submissions: ``challenges.submissions`` entries (``track``, ``score`` in 0-1 or None, ``name``).
        height: the figure's height in pixels (the presenter view fits it under the leaderboard).
    """
    words = metric_words(metric)
    title = f"{_capital(words)} on the hidden test, by track"
    points = challenge_points(submissions)
    if not any(points.values()):
        return _empty(title, "No scored submissions yet")
    fig = go.Figure()
    tracks = list(CHALLENGE_TRACKS)
    for i, track in enumerate(tracks):
        label, color = CHALLENGE_TRACKS[track]
        mine = points[track]
        fig.add_scatter(
            x=[i + p["x"] for p in mine],
            y=[p["score"] for p in mine],
            name=label,
            mode="markers+text",
            marker={"color": color, "size": 18, "line": {"color": "white", "width": 2}},
            text=[_plain(p["name"]) for p in mine],  # a learner's name: text, never markup
            textposition=[p["textposition"] for p in mine],
            textfont={"size": CHART_FONT - 2, "color": "#111827"},
            cliponaxis=False,
            hovertemplate=f"%{{text}}<br>{words}: %{{y:.0%}}<extra>{label}</extra>",
        )
        if mine:  # the track's mean as a bar across its points (a shape, so the traces are the points)
            mean = sum(p["score"] for p in mine) / len(mine)
            fig.add_shape(
                type="line", x0=i - 0.4, x1=i + 0.4, y0=mean, y1=mean, line={"color": color, "width": 5}, opacity=0.45
            )
            fig.add_annotation(
                x=i + 0.4, y=mean, text=f"mean {mean:.0%}", showarrow=False, xanchor="right", yanchor="bottom",
                font={"size": CHART_FONT - 4, "color": color},
            )  # fmt: skip
    fig.update_layout(
        title={"text": title, "font": {"size": CHART_FONT + 2}},
        xaxis={
            "tickvals": list(range(len(tracks))),
            "ticktext": [f"{CHALLENGE_TRACKS[t][0]} ({len(points[t])})" for t in tracks],
            "tickfont": {"size": CHART_FONT + 2},
            "range": [-0.6, len(tracks) - 0.1],
            "showgrid": False,
            "zeroline": False,
        },
        yaxis={
            "tickformat": ".0%",
            "range": [-0.08, 1.08],
            "tickvals": [0, 0.25, 0.5, 0.75, 1],
            "tickfont": {"size": CHART_FONT},
            "title": {"text": f"{words} (higher is better)", "font": {"size": CHART_FONT - 4}},
            "gridcolor": "#e5e7eb",
        },
        height=height,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        showlegend=False,
        plot_bgcolor="white",
    )
    return fig


def _plain(text: str) -> str:
    """Text for plotly's labels, which read a few HTML tags (<b>, <br>, <a>): escaped, so it shows as typed."""
    return html.escape(text, quote=False)
