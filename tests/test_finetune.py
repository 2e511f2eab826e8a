"""LoRA fine-tuning on the tiny random Llama: settings, encoding, the training loop, adapters on disk."""

from __future__ import annotations

import copy

import pytest
import torch

from ftvpe_core import FtvpeError
from ftvpe_core.model import adapters
from ftvpe_core.tasks.datasets import Example
from ftvpe_core.training import finetune

WORDS = "hello world good day night train trip time travel answer".split()


def toy_examples(n: int, offset: int = 0) -> list[Example]:
    """Short prompt/response pairs in the tiny tokenizer's vocabulary; the response follows from the prompt."""
    out = []
    for i in range(n):
        a, b = WORDS[(i + offset) % len(WORDS)], WORDS[(i + offset + 3) % len(WORDS)]
        out.append(Example(prompt=f"{a} {b} ?", response=f"{b} {a} {b} ."))
    return out


def fast(**overrides) -> finetune.TrainSettings:
    base = dict(rank=4, alpha=8.0, dropout=0.0, learning_rate=1e-2, max_steps=10, batch_size=4, max_length=64)
    base["eval_every"] = 5
    base["bf16"] = False  # exact float32 on the tiny model
    return finetune.TrainSettings(**{**base, **overrides})


@pytest.fixture
def fresh(tiny_loaded):
    """A private copy of the shared tiny model, free to be wrapped by peft."""
    return copy.deepcopy(tiny_loaded.model)


# Settings


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("rank", 0, "rank must be between 1 and 256"),
        ("rank", 300, "rank must be between 1 and 256"),
        ("rank", 2.5, "rank must be a whole number"),
        ("alpha", 0, "alpha must be above 0"),
        ("dropout", 0.95, "dropout must be between 0 and 0.9"),
        ("learning_rate", 1.0, "learning rate must be between"),
        ("learning_rate", 1e-9, "learning rate must be between"),
        ("max_steps", 0, "Steps must be between 1 and 20,000"),
        ("max_steps", 20_001, "Steps must be between 1 and 20,000"),
        ("batch_size", 0, "batch size must be between 1 and 256"),
        ("max_length", 8, "maximum length must be between 16 and 4096"),
        ("eval_every", 0, "Evaluate every must be at least 1"),
        ("early_stopping_patience", -1, "patience must be 0 (off) or more"),
        ("target_modules", (), "Pick at least one layer"),
        ("target_modules", ("q_proj", "lm_head"), "Unknown layer 'lm_head'"),
        ("seed", -1, "seed must be 0 or more"),
        ("epochs", 101, "Epochs must be between 0"),
    ],
)
def test_settings_refuse_absurd_values_with_readable_messages(field, value, message):
    with pytest.raises(FtvpeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        finetune.TrainSettings(**{field: value})


def test_settings_accept_epochs_instead_of_steps_and_a_comma_list_of_layers():
    s = finetune.TrainSettings(max_steps=0, epochs=2, batch_size=4, target_modules="q_proj, v_proj")
    assert s.target_modules == ("q_proj", "v_proj")
    assert s.total_steps(10) == 6  # 3 batches per epoch


def test_a_preset_is_recorded_only_while_its_settings_are_unchanged():
    quick = finetune.from_preset("quick")
    assert finetune.preset_of(quick, "quick") == "quick"
    assert finetune.preset_of(finetune.from_preset("quick", max_steps=3), "quick") == "custom"
    assert finetune.preset_of(quick, "thorough") == "custom" and finetune.preset_of(quick, None) == "custom"
    assert finetune.preset_label({"preset": "overfit"}) == "overfit" and finetune.preset_label({}) == "custom"
    for preset in finetune.PRESETS.values():  # one table: each preset has its words and its values
        assert preset.label and len(preset.about) > 40 and preset.values


def test_every_preset_is_valid():
    for name in finetune.PRESETS:
        assert isinstance(finetune.from_preset(name), finetune.TrainSettings)
    assert finetune.from_preset("overfit").early_stopping_patience == 0
    with pytest.raises(FtvpeError, match="Unknown preset"):
        finetune.from_preset("nope")


# Data


def test_encode_example_labels_only_the_response_and_its_end_token(tiny_loaded):
    tok = tiny_loaded.tokenizer
    ex = Example(prompt="hello world ?", response="good day .", system="answer")
    row = finetune.encode_example(tok, ex, 64)
    prompt_text = tok.apply_chat_template(
        [{"role": "system", "content": "answer"}, {"role": "user", "content": "hello world ?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    prompt_ids = tok.encode(prompt_text, add_special_tokens=False)
    n = len(prompt_ids)
    assert row["input_ids"][:n] == prompt_ids
    assert row["labels"][:n] == [finetune.IGNORE] * n
    response_ids = tok.encode("good day .", add_special_tokens=False) + [tok.eos_token_id]
    assert row["input_ids"][n:] == response_ids
    assert row["labels"][n:] == response_ids


def test_encode_example_truncates_the_prompt_and_keeps_the_response(tiny_loaded):
    tok = tiny_loaded.tokenizer
    ex = Example(prompt=" ".join(["hello"] * 100), response="good day .")
    row = finetune.encode_example(tok, ex, 20)
    assert len(row["input_ids"]) == 20
    labelled = [t for t in row["labels"] if t != finetune.IGNORE]
    assert labelled == tok.encode("good day .", add_special_tokens=False) + [tok.eos_token_id]


def test_batches_are_padded_to_their_longest_row_and_grouped_by_length():
    import random

    rows = [{"input_ids": [5] * n, "labels": [5] * n} for n in (3, 9, 4, 8)]
    batch = finetune.collate(rows[:2], pad_id=2)
    assert batch["input_ids"].shape == (2, 9)
    assert batch["attention_mask"][0].tolist() == [1] * 3 + [0] * 6
    assert batch["labels"][0, 3:].tolist() == [finetune.IGNORE] * 6
    batches = finetune.length_grouped_batches([3, 9, 4, 8], 2, random.Random(0))
    assert sorted(sorted(b) for b in batches) == [[0, 2], [1, 3]]


# Training


@pytest.mark.parametrize("bf16", [False, True])
def test_lora_leaves_base_weights_unchanged_and_changes_the_adapter(fresh, tiny_loaded, bf16):
    base = {k: v.clone() for k, v in fresh.state_dict().items()}
    settings = fast(max_steps=5, bf16=bf16)
    result = finetune.train(fresh, tiny_loaded.tokenizer, toy_examples(8), toy_examples(4, 5), settings)
    model = result.peft_model
    lora = {k: v for k, v in model.named_parameters() if "lora_" in k}
    assert lora and all(v.requires_grad for v in lora.values())
    # lora_B starts at zero; training must have moved it
    assert any(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)
    after = model.get_base_model().state_dict()
    for name, value in base.items():
        key = name.replace(".weight", ".base_layer.weight") if name not in after else name
        assert after[key].dtype == value.dtype and torch.equal(after[key], value), name
    trainable, total = finetune.trainable_parameters(model)
    assert 0 < trainable < total


def test_bf16_training_stores_frozen_weights_in_bf16_only_while_it_trains(fresh, tiny_loaded):
    if not finetune.bf16_works("cpu", True):
        pytest.skip("this CPU has no bf16 support")
    dtypes = []
    probe = lambda: dtypes.append(fresh.model.embed_tokens.weight.dtype) or False  # noqa: E731
    settings = fast(max_steps=2, bf16=True)
    result = finetune.train(fresh, tiny_loaded.tokenizer, toy_examples(8), [], settings, should_stop=probe)
    assert dtypes == [torch.bfloat16, torch.bfloat16]
    model = result.peft_model.get_base_model()
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32


def test_response_only_loss_equals_the_models_own_loss(fresh, tiny_loaded):
    from peft import LoraConfig, get_peft_model

    tok = tiny_loaded.tokenizer
    rows = [finetune.encode_example(tok, e, 64) for e in toy_examples(4)]
    batch = finetune.collate(rows, tok.pad_token_id)
    peft_model = get_peft_model(fresh, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        expected = peft_model(**batch).loss
        got = finetune._loss(peft_model, batch)
    assert torch.allclose(got, expected, atol=1e-6), (got, expected)


def test_loss_falls_on_a_memorizable_toy_set(fresh, tiny_loaded):
    # The random init (std 0.02) with tied embeddings keeps every logit near 0, so no adapter could
    # move the loss far from uniform; larger embeddings give the frozen output layer room to express it.
    with torch.no_grad():
        fresh.model.embed_tokens.weight.mul_(30)
    examples = toy_examples(8)
    settings = fast(max_steps=60, batch_size=8, eval_every=20, learning_rate=3e-2, rank=8, alpha=16.0)
    result = finetune.train(fresh, tiny_loaded.tokenizer, examples, examples[:4], settings)
    first = result.history[0]["train_loss"]
    assert result.status == "completed"
    assert result.final_train_loss < 0.5 * first


def test_history_has_one_event_per_step_and_evaluations_every_eval_every(fresh, tiny_loaded):
    events = []
    result = finetune.train(
        fresh,
        tiny_loaded.tokenizer,
        toy_examples(8),
        toy_examples(4, 5),
        fast(max_steps=12, eval_every=5, warmup_fraction=0.25),
        on_progress=events.append,
        probes=["hello world ?", Example("good day ?", "x"), "one", "more than three"],
    )
    assert result.steps == 12 and len(result.history) == 12 and events == result.history
    assert [e["step"] for e in events] == list(range(1, 13))
    assert [e["step"] for e in events if "val_loss" in e] == [5, 10, 12]  # and after the last step
    samples = events[4]["samples"]
    assert [p for p, _ in samples] == ["hello world ?", "good day ?", "one"]
    assert all(isinstance(a, str) for _, a in samples)
    assert events[0]["lr"] < events[1]["lr"]  # warmup
    assert events[-1]["eta_s"] == 0
    assert result.tokens_seen == events[-1]["tokens_seen"] > 0
    assert result.final_val_loss == events[-1]["val_loss"]
    assert result.best_val_loss == min(e["val_loss"] for e in events if "val_loss" in e)


def test_early_stopping_stops_when_the_validation_loss_keeps_rising(fresh, tiny_loaded, monkeypatch):
    rising = iter([3.0, 2.0, 2.5, 2.6, 2.7, 2.8])
    monkeypatch.setattr(finetune, "_val_loss", lambda *a, **k: next(rising))
    result = finetune.train(
        fresh,
        tiny_loaded.tokenizer,
        toy_examples(8),
        toy_examples(4, 5),
        fast(max_steps=100, eval_every=2, early_stopping_patience=2),
    )
    assert result.status == "early_stopped"
    assert result.steps == 8  # evaluations at 2, 4 (best), 6, 8: two without improvement
    assert result.best_step == 4 and result.best_val_loss == 2.0
    assert result.final_val_loss == 2.6


def test_restore_best_puts_back_the_best_adapter(tiny_loaded, monkeypatch):
    losses = iter([1.0, 5.0])
    monkeypatch.setattr(finetune, "_val_loss", lambda *a, **k: next(losses))
    snapshots = []

    def remember(event):
        if "val_loss" in event:
            model = remember.model
            snapshots.append({k: v.clone() for k, v in model.named_parameters() if "lora_" in k})

    import peft

    real = peft.get_peft_model

    def spy(model, config):
        remember.model = real(model, config)
        return remember.model

    monkeypatch.setattr(peft, "get_peft_model", spy)
    result = finetune.train(
        copy.deepcopy(tiny_loaded.model),
        tiny_loaded.tokenizer,
        toy_examples(8),
        toy_examples(4, 5),
        fast(max_steps=6, eval_every=3),
        on_progress=remember,
    )
    final = {k: v for k, v in result.peft_model.named_parameters() if "lora_" in k}
    assert result.best_step == 3
    assert all(torch.equal(final[k], snapshots[0][k]) for k in final)


def test_should_stop_cancels_at_the_step_it_is_asked(fresh, tiny_loaded):
    events = []
    result = finetune.train(
        fresh,
        tiny_loaded.tokenizer,
        toy_examples(8),
        [],
        fast(max_steps=50),
        on_progress=events.append,
        should_stop=lambda: len(events) >= 3,
    )
    assert result.status == "cancelled"
    assert result.steps == 3 and len(result.history) == 3
    assert result.final_val_loss is None


def test_quantized_layers_are_refused_with_a_hint(tiny_loaded):
    model = copy.deepcopy(tiny_loaded.model)
    model.model.layers[0].self_attn.q_proj = torch.nn.Identity()
    with pytest.raises(FtvpeError, match="float32"):
        finetune.train(model, tiny_loaded.tokenizer, toy_examples(4), [], fast(max_steps=1))


def test_no_training_examples_is_refused(fresh, tiny_loaded):
    with pytest.raises(FtvpeError, match="no training examples"):
        finetune.train(fresh, tiny_loaded.tokenizer, [], [], fast())


# Adapters on disk


def test_saved_adapter_loads_back_with_identical_logits(fresh, tiny_loaded, tmp_path):
    result = finetune.train(fresh, tiny_loaded.tokenizer, toy_examples(8), [], fast(max_steps=5))
    folder = adapters.save(result.peft_model, tmp_path / "adapter")
    assert (folder / "adapter_model.safetensors").is_file() and (folder / "adapter_config.json").is_file()
    loaded = adapters.load(copy.deepcopy(tiny_loaded.model), folder)
    ids = torch.tensor([[1, 5, 6, 7, 2, 1, 8]])
    with torch.no_grad():
        expected = result.peft_model(input_ids=ids).logits
        got = loaded(input_ids=ids).logits
        base = tiny_loaded.model(input_ids=ids).logits
    assert torch.allclose(expected, got, atol=1e-6)
    assert not torch.allclose(expected, base, atol=1e-6)  # the adapter does something


def test_load_adapter_refuses_a_folder_without_safetensors(tiny_loaded, tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.bin").write_bytes(b"not loaded")
    with pytest.raises(FtvpeError, match="adapter_model.safetensors"):
        adapters.load(copy.deepcopy(tiny_loaded.model), tmp_path)


# Checkpoints and resume


def _lora(result) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in result.peft_model.named_parameters() if "lora_" in k}


@pytest.mark.parametrize("how", ["stopped", "crashed"])
@pytest.mark.parametrize("bf16", [False, True])
def test_a_resumed_run_ends_with_the_adapter_of_a_run_that_never_stopped(tiny_loaded, tmp_path, how, bf16):
    # dropout on, several epochs (the batch order's random state matters); the best weights so far travel in
    # the checkpoint of a stopped run (step 12 is no evaluation, so they differ from the checkpoint's own)
    settings = fast(max_steps=23, eval_every=5, dropout=0.1, batch_size=3, restore_best=how == "stopped", bf16=bf16)
    train, val = toy_examples(8), toy_examples(4, 5)
    tok = tiny_loaded.tokenizer
    whole = finetune.train(copy.deepcopy(tiny_loaded.model), tok, train, val, settings)

    checkpoint = tmp_path / finetune.CHECKPOINT_FILE
    events = []
    if how == "stopped":  # a cancel or the app stopping: the checkpoint is written at the step it stops
        first = finetune.train(
            copy.deepcopy(tiny_loaded.model),
            tok,
            train,
            val,
            settings,
            events.append,
            should_stop=lambda: len(events) >= 12,
            checkpoint=checkpoint,
        )
        assert first.status == "cancelled" and finetune.checkpoint_step(checkpoint) == 12
    else:  # killed at step 13: the last evaluation's checkpoint (step 10) is what is left

        def crash(event):
            if event["step"] == 13:
                raise MemoryError("killed")

        with pytest.raises(MemoryError):
            finetune.train(copy.deepcopy(tiny_loaded.model), tok, train, val, settings, crash, checkpoint=checkpoint)
        assert finetune.checkpoint_step(checkpoint) == 10
    start = finetune.checkpoint_step(checkpoint)
    resumed = finetune.train(copy.deepcopy(tiny_loaded.model), tok, train, val, settings, resume_from=checkpoint)

    assert resumed.status == whole.status == "completed" and resumed.steps == whole.steps == 23
    assert [e["step"] for e in resumed.history] == list(range(start + 1, 24))  # the curves go on from there
    assert [e["train_loss"] for e in resumed.history] == pytest.approx(
        [e["train_loss"] for e in whole.history[start:]], rel=1e-4
    )
    assert resumed.best_step == whole.best_step and resumed.best_val_loss == pytest.approx(whole.best_val_loss)
    assert resumed.tokens_seen == whole.tokens_seen
    assert resumed.train_seconds >= whole.train_seconds * 0.2  # the time before the stop counts too
    expected, got = _lora(whole), _lora(resumed)
    assert expected.keys() == got.keys()
    for k in expected:
        assert torch.allclose(got[k], expected[k], atol=1e-5), k
    # and resuming is not a no-op: the checkpoint's adapter is not the final one
    tensors, _ = finetune.read_checkpoint(checkpoint)
    assert any(not torch.allclose(tensors[f"adapter.{k}"], expected[k]) for k in expected)


def test_a_checkpoint_holds_no_pickle_and_loads_with_safetensors_alone(fresh, tiny_loaded, tmp_path):
    from safetensors.torch import load_file

    checkpoint = tmp_path / "c.safetensors"
    finetune.train(fresh, tiny_loaded.tokenizer, toy_examples(8), [], fast(max_steps=5), checkpoint=checkpoint)
    tensors = load_file(str(checkpoint))
    assert {k.split(".")[0] for k in tensors} == {"adapter", "optim", "rng"}
    assert any(k.endswith(".exp_avg_sq") for k in tensors)
    assert b"pickle" not in checkpoint.read_bytes()[:8] and not list(tmp_path.glob("*.tmp"))


def test_resume_refuses_a_checkpoint_of_other_settings_and_a_file_that_is_not_one(tiny_loaded, tmp_path):
    checkpoint = tmp_path / "c.safetensors"
    tok = tiny_loaded.tokenizer
    finetune.train(copy.deepcopy(tiny_loaded.model), tok, toy_examples(8), [], fast(max_steps=5), checkpoint=checkpoint)
    with pytest.raises(FtvpeError, match="other settings or data"):
        finetune.train(
            copy.deepcopy(tiny_loaded.model),
            tok,
            toy_examples(8),
            [],
            fast(max_steps=5, rank=2),
            resume_from=checkpoint,
        )
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(FtvpeError, match="not a readable training checkpoint"):
        finetune.train(copy.deepcopy(tiny_loaded.model), tok, toy_examples(8), [], fast(max_steps=5), resume_from=bad)
    assert finetune.checkpoint_step(bad) is None and finetune.checkpoint_step(tmp_path / "none") is None


def test_probe_answers_come_from_the_engine_and_equal_greedy_generate(fresh, tiny_loaded):
    tok = tiny_loaded.tokenizer
    events = []
    probes = ["hello world ?", "good day ?"]
    result = finetune.train(
        fresh,
        tok,
        toy_examples(8),
        toy_examples(4, 5),
        fast(max_steps=5, restore_best=False),
        events.append,
        probes=probes,
    )
    model = result.peft_model  # the weights the last evaluation answered with
    expected = []
    for probe in probes:
        text = tok.apply_chat_template([{"role": "user", "content": probe}], add_generation_prompt=True, tokenize=False)
        ids = torch.tensor([tok.encode(text, add_special_tokens=False)])
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=finetune.PROBE_NEW_TOKENS,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        expected.append((probe, tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()))
    assert events[-1]["samples"] == expected
    assert any(answer for _, answer in expected)  # something was generated, so the comparison says something
