"""q4 keeps exact 4-bit weights and computes what the float layers compute."""

import torch

from ftvpe_core.model import models, quant


def _snap_to_q4_grid(linear: torch.nn.Linear) -> None:
    """Make a layer's weights exactly Q4_1 values: per 32 weights, minimum + scale * code (codes 0..15)."""
    w = linear.weight.detach()
    blocks = w.reshape(w.shape[0], -1, quant.GROUP)
    low = blocks.amin(-1, keepdim=True)
    scale = (blocks.amax(-1, keepdim=True) - low) / 15
    codes = ((blocks - low) / scale).round().clamp(0, 15)
    linear.weight.data = (codes * scale + low).reshape_as(w)


def _tiny_float_model(tiny_model_dir):
    return models.load(str(tiny_model_dir), device="cpu", weight_format="float32").model


def test_q4_converts_exact_4_bit_layers_and_leaves_others_float(tiny_model_dir):
    model = _tiny_float_model(tiny_model_dir)
    layer = model.model.layers[0].mlp
    _snap_to_q4_grid(layer.gate_proj)
    model, converted = quant.to_q4(model)
    assert converted == 1
    assert type(layer.gate_proj).__name__ == "_Q4Linear"
    assert isinstance(layer.up_proj, torch.nn.Linear)  # random float weights are not 4-bit: kept as they are
    assert type(model.lm_head).__name__ == "_Int8Linear"
    assert model.get_input_embeddings().weight.dtype == torch.float32


def test_q4_layer_matches_the_float_layer_for_decoding_and_prompts(tiny_model_dir):
    model = _tiny_float_model(tiny_model_dir)
    linear = model.model.layers[0].mlp.down_proj  # (32, 64): one of the larger tiny layers
    _snap_to_q4_grid(linear)
    reference = torch.nn.Linear(linear.in_features, linear.out_features, bias=False)
    reference.weight.data = linear.weight.detach().clone()
    q4_cls, _ = quant._q4_linear_class()
    q4 = q4_cls(linear, *quant._q4_codes(linear.weight))
    torch.manual_seed(0)
    for rows in (1, 12):  # one token (4-bit kernel) and a prompt (bfloat16 copy)
        x = torch.randn(1, rows, linear.in_features)
        with torch.inference_mode():
            got, want = q4(x), reference(x)
        assert got.shape == want.shape
        # Activations enter the kernels as bfloat16: about 3 significant digits.
        assert torch.allclose(got, want, atol=0.05 * want.abs().max().item(), rtol=0.02)


def test_q4_codes_refuse_weights_off_the_grid():
    w = torch.randn(8, 32)
    assert quant._q4_codes(w) is None
    assert quant._q4_codes(torch.randn(8, 30)) is None  # not whole groups of 32


def test_the_4_bit_and_int8_kernels_give_a_row_the_same_numbers_at_every_row_count(tiny_model_dir):
    """The decoding step multiplies q4 layers in one call for the whole batch (no fixed blocks): batch
    invariance rests on these kernels summing each row alone, which this holds for a torch upgrade."""
    model = _tiny_float_model(tiny_model_dir)
    linear = model.model.layers[0].mlp.down_proj
    _snap_to_q4_grid(linear)
    q4_cls, int8_cls = quant._q4_linear_class()
    q4, int8 = q4_cls(linear, *quant._q4_codes(linear.weight)), int8_cls(linear)
    x = torch.randn((quant.DECODE_ROWS, 1, linear.in_features), generator=torch.Generator().manual_seed(0))
    for layer in (q4, int8):
        with torch.inference_mode():
            rows = {n: layer(x[:n]) for n in range(1, quant.DECODE_ROWS + 1)}
        for n in range(2, quant.DECODE_ROWS + 1):
            assert torch.equal(rows[n][:1], rows[1]), f"{type(layer).__name__}: row 0 in a batch of {n}"
            assert torch.equal(rows[n][n - 1], rows[quant.DECODE_ROWS][n - 1])
