"""Fine-Tune Lab figures and the numbers behind them: LoRA size from a config, where overfitting starts."""

import copy

import plotly.graph_objects as go
import pytest

from ftvpe_core import figures
from ftvpe_core.training import finetune


@pytest.mark.parametrize("targets", [("q_proj", "v_proj"), finetune.TARGET_MODULES])
def test_lora_parameters_from_the_config_match_what_peft_adds(tiny_loaded, targets):
    from peft import LoraConfig, get_peft_model

    model = copy.deepcopy(tiny_loaded.model)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=list(targets), task_type="CAUSAL_LM"))
    trainable, _ = finetune.trainable_parameters(peft_model)
    assert finetune.lora_parameters(tiny_loaded.model.config, 4, targets) == trainable


@pytest.mark.parametrize(
    "points, expected",
    [
        ([], None),
        ([(10, 1.0)], None),
        ([(10, 1.0), (20, 0.8), (30, 0.7)], None),  # still falling
        ([(10, 1.0), (20, 0.5), (30, 0.505)], None),  # flat within 2 %
        ([(10, 1.0), (20, 0.5), (30, 0.6), (40, 0.9)], 20),
        ([(10, 0.9), (20, 0.4), (30, 0.45), (40, 0.3)], None),  # a new best after a bump: not overfitting yet
    ],
)
def test_overfit_step_marks_the_lowest_validation_loss_once_a_later_one_rises(points, expected):
    assert finetune.overfit_step(points) == expected


def test_loss_curves_draw_train_and_validation_and_the_overfitting_marker():
    metrics = {"train_loss": [(1, 2.0), (2, 1.5), (3, 1.0), (4, 0.5)], "val_loss": [(2, 1.6), (4, 1.9)]}
    fig = figures.loss_curves(metrics, total_steps=10, overfit_step=2)
    assert isinstance(fig, go.Figure)
    assert [t.name for t in fig.data] == ["train loss", "validation loss"]
    assert list(fig.data[1].x) == [2, 4] and list(fig.data[1].y) == [1.6, 1.9]
    assert fig.layout.shapes[0].x0 == 2 and "overfitting" in fig.layout.annotations[0].text
    assert fig.layout.xaxis.range[1] >= 10
    first_steps = figures.loss_curves({"train_loss": [(1, 2.0)]}, total_steps=10)
    assert [t.name for t in first_steps.data] == ["train loss"] and first_steps.layout.showlegend  # named at once
    empty = figures.loss_curves({})
    assert not empty.data and "first training step" in empty.layout.annotations[0].text


def test_loss_overlay_gives_each_run_one_colour_and_skips_runs_without_losses():
    fig = figures.loss_overlay(
        {
            "run a": {"train_loss": [(1, 1.0)], "val_loss": [(1, 0.9)]},
            "run b": {"train_loss": [(1, 2.0)]},
            "run c": {},
        }
    )
    assert [t.name for t in fig.data] == ["run a · validation", "run a · train", "run b · train"]
    assert fig.data[0].line.color == fig.data[1].line.color != fig.data[2].line.color
    assert not figures.loss_overlay({"run c": {}}).data


def test_token_length_histogram_counts_the_examples_training_cuts():
    fig = figures.token_length_histogram({"train": [10, 50, 130, 200], "validation": [20], "test": []}, 128)
    assert [t.name for t in fig.data] == ["train (4)", "validation (1)"]
    assert "2 examples cut" in fig.layout.annotations[0].text
    assert not figures.token_length_histogram({}).data


def test_parameter_share_shows_the_small_trainable_share_on_a_log_scale():
    fig = figures.parameter_share(1_000, 100_000)
    assert list(fig.data[0].x) == [1_000, 99_000] and fig.layout.xaxis.type == "log"
    assert "1.00% trains" in fig.layout.title.text
    assert not figures.parameter_share(0, 0).data
