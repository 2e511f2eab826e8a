"""Compare figures, built from hand-made comparison dicts: scores by arm, break-even, data efficiency, ablation."""

import math

import plotly.graph_objects as go
import pytest

from ftvpe_core import figures


def _arm(name, score, latency, train=0.0, label=None, n=45):
    return {
        "name": name,
        "label": label or name.title(),
        "score": score,
        "n": n,
        "mean_prompt_tokens": 40.0,
        "mean_latency_s": latency,
        "train_seconds": train,
        "techniques": [],
        "examples": [],
    }


ARMS = [
    _arm("base", 0.04, 0.21, label="Base, plain prompt"),
    _arm("prompt", 0.5, 0.5, label="Base, engineered prompt"),
    _arm("tuned", 0.9, 0.2, train=45.0, label="Fine-tuned"),
    _arm("tuned+prompt", 0.85, 0.45, train=45.0, label="Fine-tuned, engineered prompt"),
]


def _is_titled_empty(fig, title_part):
    return isinstance(fig, go.Figure) and not fig.data and title_part in fig.layout.title.text


def test_arm_scores_draws_one_bar_per_arm_in_its_colour_with_percent_text():
    fig = figures.arm_scores(ARMS, "accuracy")
    (bar,) = fig.data
    assert list(bar.x) == [a["label"] for a in ARMS]
    assert list(bar.y) == [0.04, 0.5, 0.9, 0.85]
    assert list(bar.text) == ["4%", "50%", "90%", "85%"]
    assert list(bar.marker.color) == [figures.ARM_COLORS[a["name"]] for a in ARMS]
    assert list(bar.customdata) == [45] * 4 and "examples" in bar.hovertemplate
    assert fig.layout.yaxis.tickformat == ".0%"
    assert fig.layout.title.text == "Accuracy by arm" and "accuracy" in fig.layout.yaxis.title.text


@pytest.mark.parametrize(
    "metric, words",
    [
        ("accuracy", "accuracy"),
        ("constraints", "rules kept"),
        ("fact_recall", "facts recalled"),
        ("token_f1", "token F1"),
    ],
)
def test_arm_scores_names_the_metric_in_words_on_a_percent_axis(metric, words):
    fig = figures.arm_scores(ARMS[:2], metric)
    assert words in fig.layout.yaxis.title.text and fig.layout.yaxis.tickformat == ".0%"
    assert figures.metric_words(metric) == words


def test_arm_scores_leaves_out_unscored_arms_and_is_empty_without_arms():
    fig = figures.arm_scores([ARMS[0], {**ARMS[1], "score": None}], "accuracy")
    assert list(fig.data[0].x) == ["Base, plain prompt"]
    assert _is_titled_empty(figures.arm_scores([], "accuracy"), "Accuracy")
    assert _is_titled_empty(figures.arm_scores([{"name": "base", "score": None}], "constraints"), "Rules kept")


@pytest.mark.parametrize(
    "a, b, expected",
    [
        # Slower to start (45 s training), faster per call: they meet after 45 / (0.5 - 0.2) = 150 calls.
        ({"train_seconds": 45.0, "mean_latency_s": 0.2}, {"train_seconds": 0.0, "mean_latency_s": 0.5}, 150.0),
        ({"train_seconds": 0.0, "mean_latency_s": 0.5}, {"train_seconds": 45.0, "mean_latency_s": 0.2}, 150.0),
        # Trained and slower per call: the prompt is cheaper from the first call on, they never meet.
        ({"train_seconds": 45.0, "mean_latency_s": 0.6}, {"train_seconds": 0.0, "mean_latency_s": 0.5}, None),
        # Equal latency: parallel lines, with or without a gap between them.
        ({"train_seconds": 45.0, "mean_latency_s": 0.3}, {"train_seconds": 0.0, "mean_latency_s": 0.3}, None),
        ({"train_seconds": 0.0, "mean_latency_s": 0.3}, {"train_seconds": 0.0, "mean_latency_s": 0.3}, None),
        ({"train_seconds": 5.0, "mean_latency_s": None}, {"train_seconds": 0.0, "mean_latency_s": 0.3}, None),
        ({"mean_latency_s": 0.1, "train_seconds": None}, {"mean_latency_s": 0.2}, None),  # no training: never dearer
    ],
)
def test_break_even_calls_is_where_the_total_times_meet(a, b, expected):
    calls = figures.break_even_calls(a, b)
    if expected is None:
        assert calls is None
    else:
        assert calls == pytest.approx(expected)


def test_break_even_draws_a_line_per_arm_and_marks_where_fine_tuning_pays_off():
    fig = figures.break_even(ARMS, max_calls=10_000)
    lines = [t for t in fig.data if t.mode == "lines"]
    assert [t.name for t in lines] == [a["label"] for a in ARMS]
    assert [t.line.color for t in lines] == [figures.ARM_COLORS[a["name"]] for a in ARMS]
    base = lines[0]
    assert base.x[0] == pytest.approx(1) and base.x[-1] == pytest.approx(10_000)
    assert base.y[0] == pytest.approx(0.21) and base.y[-1] == pytest.approx(0.21 * 10_000)
    assert lines[2].y[0] == pytest.approx(45.2)  # training time plus one call
    (marker,) = [t for t in fig.data if t.name == "break-even"]
    assert marker.x[0] == pytest.approx(150) and marker.y[0] == pytest.approx(45 + 150 * 0.2)
    (note,) = fig.layout.annotations
    assert note.text == "fine-tuning pays off after 150 calls"
    assert note.x == pytest.approx(math.log10(150))  # annotations on log axes take log10 positions
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"


def test_break_even_without_a_crossing_or_a_tuned_arm_has_no_marker():
    slow_tuned = [ARMS[1], {**ARMS[2], "mean_latency_s": 0.9}]
    fig = figures.break_even(slow_tuned)
    assert not fig.layout.annotations and all(t.name != "break-even" for t in fig.data)
    fig = figures.break_even(ARMS[:2])
    assert len(fig.data) == 2 and not fig.layout.annotations


def test_break_even_beyond_the_chart_says_so_and_falls_back_to_the_base_arm():
    arms = [ARMS[0], {**ARMS[2], "train_seconds": 4_000.0, "mean_latency_s": 0.2}]  # 4000 / 0.01 = 400k calls
    fig = figures.break_even(arms, max_calls=100_000)
    (note,) = fig.layout.annotations
    assert "400,000 calls" in note.text and "beyond this chart" in note.text
    assert all(t.name != "break-even" for t in fig.data)


def test_break_even_is_empty_without_timed_arms():
    assert _is_titled_empty(figures.break_even([]), "Break-even")
    assert _is_titled_empty(figures.break_even([{"name": "base", "mean_latency_s": None}]), "Break-even")


EFFICIENCY = {
    "kshot": [
        {"k": k, "score": s, "mean_prompt_tokens": 30 + 25 * k}
        for k, s in [(2, 0.3), (0, 0.05), (1, 0.2), (4, 0.4), (8, 0.5)]
    ],
    "lora": [
        {"n": 10, "score": 0.2, "train_seconds": 3.0},
        {"n": 50, "score": 0.6, "train_seconds": 12.0},
        {"n": 167, "score": 0.9, "train_seconds": 45.0},
    ],
}


def test_data_efficiency_plots_both_series_on_a_log_axis_with_zero_at_the_left_edge():
    fig = figures.data_efficiency(EFFICIENCY, "accuracy")
    kshot, lora = fig.data
    assert (kshot.name, lora.name) == ("k-shot prompting", "LoRA fine-tuning")
    assert "markers" in kshot.mode and "markers" in lora.mode
    assert list(kshot.x) == [figures.ZERO_EXAMPLES_AT, 1, 2, 4, 8]  # sorted; k=0 drawn at 0.5
    assert list(kshot.y) == [0.05, 0.2, 0.3, 0.4, 0.5]
    assert [c[0] for c in kshot.customdata] == [0, 1, 2, 4, 8]  # hover shows the true count
    assert list(lora.x) == [10, 50, 167] and list(lora.y) == [0.2, 0.6, 0.9]
    assert kshot.line.color == figures.ARM_COLORS["prompt"] and lora.line.color == figures.ARM_COLORS["tuned"]
    axis = fig.layout.xaxis
    assert axis.type == "log" and "0 = none" in axis.title.text
    assert list(axis.ticktext) == ["0", "1", "2", "4", "8", "10", "50", "167"]
    assert list(axis.tickvals)[0] == figures.ZERO_EXAMPLES_AT


def test_data_efficiency_with_one_series_or_none():
    fig = figures.data_efficiency({"kshot": None, "lora": EFFICIENCY["lora"]}, "fact_recall")
    assert [t.name for t in fig.data] == ["LoRA fine-tuning"] and "facts recalled" in fig.layout.title.text
    assert _is_titled_empty(figures.data_efficiency(None, "accuracy"), "Data efficiency")
    assert _is_titled_empty(figures.data_efficiency({"kshot": [], "lora": []}, "accuracy"), "Data efficiency")


def test_ablation_chart_sorts_combinations_by_score_and_colours_them_by_prompt_tokens():
    combos = [
        {"techniques": ["role", "few-shot"], "score": 0.6, "mean_prompt_tokens": 140.0, "n": 20},
        {"techniques": [], "score": 0.1, "mean_prompt_tokens": 30.0, "n": 20},
        {"techniques": ["cot"], "score": 0.3, "mean_prompt_tokens": 60.0, "n": 20},
        {"techniques": ["context"], "score": None, "mean_prompt_tokens": 50.0, "n": 0},
    ]
    fig = figures.ablation_chart(combos)
    (bar,) = fig.data
    assert bar.orientation == "h"
    assert list(bar.y) == ["plain", "cot", "role + few-shot"]  # plotly draws the first bar at the bottom
    assert list(bar.x) == [0.1, 0.3, 0.6] and list(bar.text) == ["10%", "30%", "60%"]
    assert list(bar.marker.color) == [30.0, 60.0, 140.0] and bar.marker.showscale
    assert figures.combination_label(["role", "few-shot", "cot"]) == "role + few-shot + cot"
    assert _is_titled_empty(figures.ablation_chart([]), "Ablation")
    assert _is_titled_empty(figures.ablation_chart(None), "Ablation")


def test_technique_gains_are_green_when_they_help_and_red_when_they_hurt():
    fig = figures.technique_gains_chart({"role": 0.05, "few-shot": 0.2, "cot": -0.1, "context": 0.0, "x": None})
    (bar,) = fig.data
    assert bar.orientation == "h"
    assert list(bar.y) == ["Chain-of-thought", "Context addition", "Role assignment", "Few-shot examples"]
    assert list(bar.x) == pytest.approx([-10, 0, 5, 20])
    assert list(bar.marker.color) == ["#dc2626", "#94a3b8", "#16a34a", "#16a34a"]
    assert list(bar.text) == ["-10.0 pp", "+0.0 pp", "+5.0 pp", "+20.0 pp"]
    assert _is_titled_empty(figures.technique_gains_chart({}), "What each technique adds")
    assert _is_titled_empty(figures.technique_gains_chart(None), "What each technique adds")


def test_compare_figures_serialise_to_json():
    for fig in (
        figures.arm_scores(ARMS, "token_f1"),
        figures.break_even(ARMS),
        figures.data_efficiency(EFFICIENCY, "constraints"),
        figures.ablation_chart([{"techniques": ["role"], "score": 0.5, "mean_prompt_tokens": 50, "n": 20}]),
        figures.technique_gains_chart({"role": 0.1}),
    ):
        assert fig.to_json()
