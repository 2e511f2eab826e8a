"""Words vs weights: what a LoRA adapter on disk changes in the base weights, checked against peft's own merge."""

import copy
import json

import plotly.graph_objects as go
import pytest
import torch

from ftvpe_core import FtvpeError, figures
from ftvpe_core.model import adapters, weights
from ftvpe_core.training import finetune

TARGETS = ["q_proj", "v_proj", "down_proj"]
RANK, ALPHA = 4, 8.0


@pytest.fixture(scope="module")
def lora(tiny_model_dir, tmp_path_factory):
    """A tiny model with a LoRA adapter whose B is not zero (as after training), saved; and the base model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    torch.manual_seed(1)
    # init_lora_weights=False draws B at random too, so B @ A is not zero.
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, init_lora_weights=False)
    peft_model = get_peft_model(copy.deepcopy(base), config)
    folder = adapters.save(peft_model, tmp_path_factory.mktemp("adapter"))
    merged = copy.deepcopy(peft_model).merge_and_unload()
    return {"folder": folder, "base": base, "merged": merged, "peft": peft_model}


def _weight(model, layer, proj):
    block = model.model.layers[layer]
    return (block.mlp if proj in ("gate_proj", "up_proj", "down_proj") else block.self_attn).get_submodule(proj).weight


def test_changes_equal_the_norms_of_the_merged_minus_base_weights(lora, tiny_model_dir):
    changes = weights.adapter_changes(lora["folder"], tiny_model_dir)
    assert changes["layers"] == 2 and changes["has_base"] and changes["rank"] == RANK
    assert len(changes["matrices"]) == 2 * len(TARGETS)
    for m in changes["matrices"]:
        base = _weight(lora["base"], m["layer"], m["projection"]).detach()
        merged = _weight(lora["merged"], m["layer"], m["projection"]).detach()
        assert m["delta_norm"] == pytest.approx(float(torch.linalg.norm(merged - base)), rel=1e-4)
        assert m["delta_norm"] > 0
        assert m["base_norm"] == pytest.approx(float(torch.linalg.norm(base)), rel=1e-5)
        assert m["relative"] == pytest.approx(m["delta_norm"] / m["base_norm"])
        assert m["shape"] == list(base.shape) and m["entries"] == base.numel()
        # ΔW is dense: the merge changed every entry of W, from r·(out+in) trained numbers.
        assert int((merged != base).sum()) == base.numel()
        assert m["lora_parameters"] == RANK * sum(base.shape)


def test_untargeted_projections_are_left_out_and_unchanged_by_the_merge(lora, tiny_model_dir):
    changes = weights.adapter_changes(lora["folder"], tiny_model_dir)
    assert changes["target_modules"] == TARGETS
    assert {m["projection"] for m in changes["matrices"]} == set(TARGETS)
    for layer in range(2):
        for proj in set(finetune.TARGET_MODULES) - set(TARGETS):
            assert torch.equal(_weight(lora["merged"], layer, proj), _weight(lora["base"], layer, proj))


def test_counts_match_peft_and_the_base_model(lora, tiny_model_dir):
    changes = weights.adapter_changes(lora["folder"], tiny_model_dir)
    trainable, _ = finetune.trainable_parameters(lora["peft"])
    assert changes["lora_parameters"] == trainable
    assert changes["lora_parameters"] == finetune.lora_parameters(lora["base"].config, RANK, TARGETS)
    assert changes["total_parameters"] == sum(p.numel() for p in lora["base"].parameters())
    assert changes["weights_touched"] == sum(
        _weight(lora["base"], m["layer"], m["projection"]).numel() for m in changes["matrices"]
    )
    json.dumps(changes)  # JSON-safe


def test_base_weights_as_a_function_give_the_same_relative_change(lora, tiny_model_dir):
    state = lora["base"].state_dict()
    asked = []

    def read(name):
        asked.append(name)
        return state.get(name)

    by_function = weights.adapter_changes(lora["folder"], read)
    by_folder = weights.adapter_changes(lora["folder"], tiny_model_dir)
    assert "model.layers.0.self_attn.q_proj.weight" in asked and len(asked) == 2 * len(TARGETS)
    for a, b in zip(by_function["matrices"], by_folder["matrices"]):
        assert a["relative"] == pytest.approx(b["relative"])


def test_without_base_weights_only_the_change_is_measured(lora):
    changes = weights.adapter_changes(lora["folder"])
    assert not changes["has_base"] and changes["total_parameters"] is None
    assert all(m["base_norm"] is None and m["relative"] is None and m["delta_norm"] > 0 for m in changes["matrices"])
    assert weights.adapter_changes(lora["folder"], total_parameters=1234)["total_parameters"] == 1234


def test_a_float16_copy_of_the_adapter_measures_nearly_the_same(lora, tmp_path):
    from safetensors.torch import load_file, save_file

    src = lora["folder"]
    save_file(
        {k: v.half() for k, v in load_file(src / "adapter_model.safetensors").items()},
        tmp_path / "adapter_model.safetensors",
    )
    (tmp_path / "adapter_config.json").write_text((src / "adapter_config.json").read_text())
    half, full = weights.adapter_changes(tmp_path), weights.adapter_changes(src)
    for a, b in zip(half["matrices"], full["matrices"]):
        assert a["delta_norm"] == pytest.approx(b["delta_norm"], rel=1e-2)


def test_an_adapter_for_another_model_is_refused(lora, tmp_path):
    from tests.tiny import make_tiny_model_dir

    other = make_tiny_model_dir(tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    assert config["hidden_size"] == 32  # same shapes: accepted
    weights.adapter_changes(lora["folder"], other)
    with pytest.raises(FtvpeError, match="another model"):
        weights.adapter_changes(lora["folder"], lambda name: torch.zeros(3, 3))
    with pytest.raises(FtvpeError, match="another model"):
        weights.adapter_changes(lora["folder"], lambda name: None)


def test_missing_or_corrupt_adapters_raise_a_readable_error(lora, tmp_path):
    with pytest.raises(FtvpeError, match="not found"):
        weights.adapter_changes(tmp_path / "nowhere")
    (tmp_path / "adapter_config.json").write_text((lora["folder"] / "adapter_config.json").read_text())
    with pytest.raises(FtvpeError, match="adapter_model.safetensors"):
        weights.adapter_changes(tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(FtvpeError, match="cannot be read"):
        weights.adapter_changes(tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes((lora["folder"] / "adapter_model.safetensors").read_bytes())
    (tmp_path / "adapter_config.json").write_text("{broken")
    with pytest.raises(FtvpeError, match="config"):
        weights.adapter_changes(tmp_path)


def test_a_pickle_adapter_is_refused_without_being_loaded(lora, tmp_path, monkeypatch):
    torch.save(lora["peft"].state_dict(), tmp_path / "adapter_model.bin")
    (tmp_path / "adapter_config.json").write_text((lora["folder"] / "adapter_config.json").read_text())

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load must never be called")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(FtvpeError, match="pickle"):
        weights.adapter_changes(tmp_path)
    with pytest.raises(FtvpeError, match="pickle"):
        weights.adapter_changes(tmp_path / "adapter_model.bin")


def test_base_weights_are_found_on_disk_without_loading_or_downloading(tiny_model_dir, tmp_path):
    assert weights.base_weights_for(str(tiny_model_dir)) == tiny_model_dir
    # The embedded model's safetensors cache is not built in this test's empty data folder.
    assert weights.base_weights_for("embedded") is None
    assert weights.base_weights_for("someone/not-on-this-machine") is None
    assert weights.base_weights_for(str(tmp_path / "missing")) is None


def test_words_vs_weights_draws_prompting_as_all_zero_beside_the_lora_change(lora, tiny_model_dir):
    changes = weights.adapter_changes(lora["folder"], tiny_model_dir)
    fig = figures.words_vs_weights(changes, prompt_tokens_added=57)
    heatmaps = [t for t in fig.data if isinstance(t, go.Heatmap)]
    assert len(heatmaps) == 2
    left, right = heatmaps
    assert list(left.x) == list(right.x) == ["q", "k", "v", "o", "gate", "up", "down"]
    assert len(left.z) == len(right.z) == 2
    assert all(v == 0 for row in left.z for v in row)
    assert left.coloraxis == right.coloraxis == "coloraxis"
    by_cell = {(m["layer"], m["projection"]): m for m in changes["matrices"]}
    for layer in range(2):
        for col, proj in enumerate(finetune.TARGET_MODULES):
            expected = 100 * by_cell[(layer, proj)]["relative"] if (layer, proj) in by_cell else 0.0
            assert right.z[layer][col] == pytest.approx(expected)
    assert "‖ΔW‖" in right.text[0][0] and "‖W‖" in right.text[0][0] and "relative change" in right.text[0][0]
    assert "not adapted" in right.text[0][1]  # k_proj
    notes = " ".join(a.text for a in fig.layout.annotations)
    assert "Prompt engineering: weights changed" in notes and "Fine-tuning (LoRA)" in notes
    assert "0 of" in notes and "57 tokens" in notes


def test_words_vs_weights_without_base_colours_by_the_absolute_change(lora):
    fig = figures.words_vs_weights(weights.adapter_changes(lora["folder"]))
    right = [t for t in fig.data if isinstance(t, go.Heatmap)][1]
    assert right.z[0][0] > 0 and "unknown" in right.text[0][0]
    assert "absolute" in " ".join(a.text for a in fig.layout.annotations)


def test_words_vs_weights_without_data_is_an_empty_titled_figure():
    fig = figures.words_vs_weights(None)
    assert not fig.data and "Words vs weights" in fig.layout.title.text
