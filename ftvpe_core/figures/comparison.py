"""Compare's figures: the arms' scores, break-even calls, data efficiency, the ablation, technique gains, words vs weights."""

from __future__ import annotations

from collections.abc import Sequence

import numpy
import plotly.graph_objects as go

from ftvpe_core.figures.common import ARM_COLORS, RUN_COLORS, _capital, _empty, metric_words
from ftvpe_core.tasks.prompts import TECHNIQUE_LABELS


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
