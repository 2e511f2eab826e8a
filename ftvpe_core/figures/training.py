"""The Fine-Tune Lab's figures: loss curves (one run, several overlaid), token lengths, the share of trainable parameters."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from ftvpe_core.figures.common import RUN_COLORS, _empty


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
