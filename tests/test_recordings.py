"""The recorded quick-demo runs kept in assets/recordings/: one per built-in dataset, made with our CLI."""

import json
from pathlib import Path

import pytest

from ftvpe_core import datasets, finetune

RECORDINGS = Path(__file__).resolve().parent.parent / "assets" / "recordings"


@pytest.mark.parametrize("name", datasets.BUILTINS)
def test_each_builtin_dataset_has_a_complete_quick_recording_whose_loss_falls(name):
    run = json.loads((RECORDINGS / f"{name}.json").read_text())
    assert run["dataset"] == name and run["status"] == "complete" and run["settings"]["preset"] == "quick"
    assert "ftvpe_core finetune" in run["recorded_with"]
    steps = finetune.PRESETS["quick"]["max_steps"]
    train = run["metrics"]["train_loss"]
    assert [s for s, _ in train] == list(range(1, steps + 1))
    assert train[-1][1] < 0.8 * train[0][1]
    val_steps = [s for s, _ in run["metrics"]["val_loss"]]
    assert val_steps == list(range(10, steps + 1, 10))
    assert {s["step"] for s in run["samples"]} == set(val_steps) and len(run["samples"]) == 3 * len(val_steps)
    assert run["summary"]["steps"] == steps and run["summary"]["train_seconds"] > 0
