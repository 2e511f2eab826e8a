"""A class challenge's chart for the projector: each learner's best score per track, as named points."""

from __future__ import annotations

import plotly.graph_objects as go

from ftvpe_core.figures.common import ARM_COLORS, _capital, _empty, _plain, metric_words

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
        submissions: ``results.submissions`` entries (``track``, ``score`` in 0-1 or None, ``name``).
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
