"""The lean decoding step computes exactly what the model's own forward pass computes."""

import copy

import torch
from transformers import DynamicCache

from ftvpe_core import fastpath, generation, models
from ftvpe_core.settings import GenerationSettings

PROMPT = [{"role": "user", "content": "write a short story about a cat"}]


def _steps_agree(model, prompt_ids, tokens):
    with torch.inference_mode():
        ref_cache, fast_cache = DynamicCache(config=model.config), DynamicCache(config=model.config)
        model(input_ids=torch.tensor([prompt_ids]), past_key_values=ref_cache, use_cache=True)
        model(input_ids=torch.tensor([prompt_ids]), past_key_values=fast_cache, use_cache=True)
        for token in tokens:
            want = model(input_ids=torch.tensor([[token]]), past_key_values=ref_cache, use_cache=True).logits[0, -1]
            got = fastpath.step(model, token, fast_cache)
            assert got.shape == want.shape
            assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
        assert fast_cache.get_seq_length() == ref_cache.get_seq_length() == len(prompt_ids) + len(tokens)


def test_fast_step_matches_the_full_forward_on_a_tiny_llama(tiny_loaded):
    assert fastpath.supports(tiny_loaded.model)
    ids = generation.encode_chat(tiny_loaded, PROMPT)
    models.compute(_steps_agree, tiny_loaded.model, ids, [5, 9, 13, 21, 8])


def test_generation_with_and_without_the_fast_step_gives_the_same_answer(tiny_loaded, monkeypatch):
    settings = GenerationSettings(max_new_tokens=12)
    fast = generation.generate(tiny_loaded, PROMPT, settings)
    monkeypatch.setattr(fastpath, "supports", lambda model: False)
    slow = generation.generate(tiny_loaded, PROMPT, settings)
    assert fast.text == slow.text and fast.new_tokens == slow.new_tokens


def test_models_the_step_does_not_model_are_not_eligible(tiny_loaded):
    other = copy.deepcopy(tiny_loaded.model)
    other.config.attention_bias = True
    assert not fastpath.supports(other)
    other.config.attention_bias = False
    other.config.rope_parameters = {**other.config.rope_parameters, "rope_type": "llama3"}
    assert not fastpath.supports(other)
    assert not fastpath.supports(torch.nn.Linear(2, 2))
