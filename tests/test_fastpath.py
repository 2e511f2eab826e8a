"""The lean decoding step computes exactly what the model's own forward pass computes."""

import copy
import types

import torch
from transformers import DynamicCache

from ftvpe_core.model import fastpath, generation, models
from ftvpe_core.settings import GenerationSettings

PROMPT = [{"role": "user", "content": "write a short story about a cat"}]


def _batched_steps_agree(model, prompts, tokens, exact=False):
    """Rows of different lengths decode together in one slot cache; each row's logits must equal its own
    full forward pass with a DynamicCache: bit for bit if ``exact`` (4-bit weights, whose kernel gives a row the
    same numbers in any batch), else to 1e-5 (float32 matrix products are blocked by the batch's size)."""
    with torch.inference_mode():
        refs, lens = [], []
        heads, dim = model.config.num_key_value_heads, model.config.hidden_size // model.config.num_attention_heads
        layers = model.config.num_hidden_layers
        keys = [torch.zeros((len(prompts) + 1, heads, 64, dim)) for _ in range(layers)]  # one spare row
        values = [torch.zeros_like(k) for k in keys]
        for row, ids in enumerate(prompts):
            cache = DynamicCache(config=model.config)
            model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True)
            for index, layer in enumerate(cache.layers):
                keys[index][row, :, : len(ids)] = layer.keys[0]
                values[index][row, :, : len(ids)] = layer.values[0]
            refs.append(cache)
            lens.append(len(ids))
        for step in tokens:
            row_tokens = [step + row for row in range(len(prompts))]
            got = fastpath.decode_step(model, row_tokens, list(lens), keys, values)
            assert got.shape == (len(prompts), model.config.vocab_size)
            for row, cache in enumerate(refs):
                out = model(input_ids=torch.tensor([[row_tokens[row]]]), past_key_values=cache, use_cache=True)
                if exact:
                    assert torch.equal(got[row], out.logits[0, -1])
                else:
                    assert torch.allclose(got[row], out.logits[0, -1], atol=1e-5, rtol=1e-5)
            lens = [n + 1 for n in lens]
        for index, layer in enumerate(refs[0].layers):  # the written keys are the model's own
            assert torch.allclose(keys[index][0, :, : lens[0]], layer.keys[0], atol=1e-6)


def test_batched_step_matches_the_full_forward_for_rows_of_different_lengths(tiny_loaded):
    assert fastpath.supports(tiny_loaded.model)
    short = generation.encode_chat(tiny_loaded, PROMPT)
    long = generation.encode_chat(tiny_loaded, [{"role": "user", "content": "write a long story about a cat " * 3}])
    models.compute(_batched_steps_agree, tiny_loaded.model, [short, long, short[:-2]], [5, 9, 13, 21, 8])


def test_one_row_alone_matches_the_full_forward(tiny_loaded):
    ids = generation.encode_chat(tiny_loaded, PROMPT)
    models.compute(_batched_steps_agree, tiny_loaded.model, [ids], [5, 9, 13])


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


def _q4_tiny(tiny_model_dir):
    """The tiny model with every layer's weights on the Q4_1 grid, converted to q4 (fused matrices too)."""
    from ftvpe_core.model import quant
    from tests.test_quant import _snap_to_q4_grid

    model = models.load(str(tiny_model_dir), device="cpu", weight_format="float32").model
    for layer in model.model.layers:
        for linear in (*(getattr(layer.self_attn, n) for n in quant.FUSED["qkv"]), layer.self_attn.o_proj):
            _snap_to_q4_grid(linear)
        for name in (*quant.FUSED["gate_up"], "down_proj"):
            _snap_to_q4_grid(getattr(layer.mlp, name))
    model, converted = quant.to_q4(model)
    assert converted == 7 * model.config.num_hidden_layers
    return model


def test_q4_step_with_fused_matrices_matches_the_full_forward(tiny_model_dir, tiny_loaded):
    from ftvpe_core.model import quant

    model = _q4_tiny(tiny_model_dir)
    for layer in model.model.layers:
        assert quant.fused(layer.self_attn, "qkv").sizes == [32, 16, 16]  # q: 4 heads, k and v: 2 heads of 8
        assert quant.fused(layer.mlp, "gate_up").sizes == [64, 64]
    short = generation.encode_chat(tiny_loaded, PROMPT)
    long = generation.encode_chat(tiny_loaded, [{"role": "user", "content": "write a long story about a cat " * 3}])
    models.compute(_batched_steps_agree, model, [short, long, short[:-2], short], [5, 9, 13, 21], True)


def test_fused_matrices_give_the_same_logits_bit_for_bit_as_separate_layers(tiny_model_dir):
    model = _q4_tiny(tiny_model_dir)
    heads, dim = model.config.num_key_value_heads, model.config.head_dim

    def run(step_model):
        with torch.inference_mode():
            keys = [torch.zeros((2, heads, 64, dim)) for _ in range(model.config.num_hidden_layers)]
            values = [torch.zeros_like(k) for k in keys]
            lens, out = [0, 0], []
            for token in (5, 9, 13):
                out.append(fastpath.decode_step(step_model, [token, token + 1], list(lens), keys, values))
                lens = [n + 1 for n in lens]
            return torch.stack(out)

    fused = models.compute(run, model)
    for layer in model.model.layers:  # the same model without its fused matrices
        del layer.self_attn.__dict__["fused_qkv"], layer.mlp.__dict__["fused_gate_up"]
    fastpath._plans.pop(model, None)
    assert torch.equal(fused, models.compute(run, model))


def test_each_row_of_a_batch_attends_bit_for_bit_as_the_models_forward_pass_does_alone():
    """The classroom case, with SmolLM2-135M's attention shapes (9 query heads of 64 over 3 key/value heads):
    rows of one length (one preset run by many) beside rows of other lengths in one step. Each row's attention
    output must equal, bit for bit, transformers' sdpa attention of that sequence alone (what the model's forward
    pass computes). Rows of one length in one call, or one masked call over the longest span, differ in the
    last bits (the kernel's threads and its scalar tail), and with 4-bit weights a near tie then goes another way."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    lens = [40, 40, 40, 40, 40, 40, 7, 130, 499, 301, 41, 600, 3, 40]
    generator = torch.Generator().manual_seed(0)
    query = torch.randn((len(lens), 9, 1, 64), generator=generator)
    keys = torch.randn((len(lens), 3, 640, 64), generator=generator)
    values = torch.randn(keys.shape, generator=generator)
    module = types.SimpleNamespace(num_key_value_groups=3, is_causal=True)

    def run():
        with torch.inference_mode():
            together = fastpath.attend(query, keys, values, lens, 0.125)
            alone = [
                sdpa_attention_forward(
                    module,
                    query[i : i + 1],
                    keys[i : i + 1, :, : n + 1],
                    values[i : i + 1, :, : n + 1],
                    None,
                    scaling=0.125,
                )[0].transpose(1, 2)
                for i, n in enumerate(lens)
            ]
        return together, alone

    together, alone = models.compute(run)
    for i, n in enumerate(lens):
        assert torch.equal(together[i : i + 1], alone[i]), f"row {i} ({n + 1} positions)"
    assert not torch.equal(together[0], together[1])  # rows hold different caches, so they really differ


def _steps(model, prompts: list[list[int]], tokens: list[int]) -> list:
    """Logits (B, V) of each decoding step of these rows together in one slot cache, after each row's prompt
    was prefilled alone (as the engine prefills)."""
    with torch.inference_mode():
        heads, dim = model.config.num_key_value_heads, model.config.hidden_size // model.config.num_attention_heads
        keys = [torch.zeros((len(prompts), heads, 96, dim)) for _ in range(model.config.num_hidden_layers)]
        values = [torch.zeros_like(k) for k in keys]
        for row, ids in enumerate(prompts):
            cache = DynamicCache(config=model.config)
            model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True)
            for index, layer in enumerate(cache.layers):
                keys[index][row, :, : len(ids)] = layer.keys[0]
                values[index][row, :, : len(ids)] = layer.values[0]
        lens, out = [len(ids) for ids in prompts], []
        for token in tokens:
            out.append(fastpath.decode_step(model, [token + row for row in range(len(prompts))], lens, keys, values))
            lens = [n + 1 for n in lens]
        return out


def _rows_alone_equal_rows_in_any_batch(model, loaded):
    """Batch invariance of the decoding step: a row's logits, bit for bit, alone and in batches of every size
    from 2 to 12 (so across the float kernels' one, two-three and four-plus row paths and across blocks), at
    other places in the batch, beside rows of other lengths."""
    texts = ["write a story about a cat", "hello world", "when does the last train arrive ? think step by step"]
    prompts = [
        generation.encode_chat(loaded, [{"role": "user", "content": texts[i % 3] + " ." * i}]) for i in range(12)
    ]
    tokens = [5, 9, 13]
    for size in range(2, 13):
        batch = list(range(size))[::-1] if size % 2 else list(range(size))  # row 0 last or first
        together = _steps(model, [prompts[i] for i in batch], tokens)
        for place, row in enumerate(batch):
            alone = _steps(model, [prompts[row]], [t + place for t in tokens])
            for step in range(len(tokens)):
                assert torch.equal(together[step][place], alone[step][0]), f"row {row} in a batch of {size}"


def test_a_rows_float_logits_are_the_same_bits_alone_and_in_a_batch_of_any_size(tiny_loaded):
    models.compute(_rows_alone_equal_rows_in_any_batch, tiny_loaded.model, tiny_loaded)


def test_a_rows_q4_logits_are_the_same_bits_alone_and_in_a_batch_of_any_size(tiny_model_dir, tiny_loaded):
    models.compute(_rows_alone_equal_rows_in_any_batch, _q4_tiny(tiny_model_dir), tiny_loaded)


def test_without_fixed_blocks_float_products_differ_by_batch_size():
    """Why the step multiplies float layers in fixed blocks: torch's float32 product gives a row other last
    bits at other row counts (this holds the reason; if a torch release makes it false, the blocks may go)."""
    generator = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(576, 1536, bias=False)
    x = torch.randn((12, 576), generator=generator)

    def run():
        with torch.inference_mode():
            plain = {n: linear(x[:n])[0] for n in range(1, 13)}
            blocked = {n: fastpath._blocked(linear)(x[:n])[0] for n in range(1, 13)}
        return plain, blocked

    plain, blocked = models.compute(run)
    assert any(not torch.equal(plain[1], plain[n]) for n in range(2, 13))
    assert all(torch.equal(blocked[1], blocked[n]) for n in range(2, 13))
