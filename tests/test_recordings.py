"""The recorded quick-demo runs kept in assets/recordings/: one per built-in dataset, made with our CLI."""

import json
from pathlib import Path

import pytest

from ftvpe_core.model import adapters
from ftvpe_core.tasks import datasets
from ftvpe_core.training import finetune

RECORDINGS = Path(__file__).resolve().parent.parent / "assets" / "recordings"


@pytest.mark.parametrize("name", datasets.BUILTINS)
def test_each_builtin_dataset_has_a_complete_quick_recording_whose_loss_falls(name):
    run = json.loads((RECORDINGS / f"{name}.json").read_text())
    assert run["dataset"] == name and run["status"] == "complete" and run["settings"]["preset"] == "quick"
    assert "ftvpe_core finetune" in run["recorded_with"]
    steps = finetune.PRESETS["quick"].values["max_steps"]
    train = run["metrics"]["train_loss"]
    assert [s for s, _ in train] == list(range(1, steps + 1))
    assert train[-1][1] < 0.8 * train[0][1]
    val_steps = [s for s, _ in run["metrics"]["val_loss"]]
    assert val_steps == list(range(10, steps + 1, 10))
    assert {s["step"] for s in run["samples"]} == set(val_steps) and len(run["samples"]) == 3 * len(val_steps)
    assert run["summary"]["steps"] == steps and run["summary"]["train_seconds"] > 0


@pytest.mark.parametrize("name", datasets.BUILTINS)
def test_each_recording_ships_its_float16_adapter_with_the_settings_rank_and_target_modules(name):
    import re

    from safetensors import safe_open

    from ftvpe_core.model import weights
    from ftvpe_core.store import recordings

    run = recordings.load(name)
    folder = adapters.recorded(name)
    assert folder is not None and folder == RECORDINGS / "adapters" / name
    settings = run["settings"]
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == settings["rank"] and config["lora_alpha"] == settings["alpha"]
    assert sorted(config["target_modules"]) == sorted(settings["target_modules"])
    found: dict[tuple[int, str], dict[str, tuple]] = {}
    with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as f:
        for key in f.keys():
            t = f.get_tensor(key)
            assert t.dtype.is_floating_point and str(t.dtype) == "torch.float16", key
            m = re.fullmatch(r"base_model\.model\.model\.layers\.(\d+)\.\w+\.(\w+)\.lora_([AB])\.weight", key)
            assert m, key
            found.setdefault((int(m[1]), m[2]), {})[m[3]] = tuple(t.shape)
    layers = {layer for layer, _ in found}
    assert layers == set(range(len(layers)))
    for layer in layers:
        for module in settings["target_modules"]:
            ab = found[(layer, module)]
            assert ab["A"][0] == settings["rank"] and ab["B"][1] == settings["rank"]
    assert {module for _, module in found} == set(settings["target_modules"])
    # The same run: the adapter holds as many numbers as the recorded run trained.
    assert weights.adapter_changes(folder)["lora_parameters"] == run["summary"]["trainable_parameters"]
