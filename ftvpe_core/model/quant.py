"""Compact weight formats for decoding on a CPU, where speed is bound by how many weight bytes each token
reads.

- ``q4``: the GGUF file's own 4-bit weights, kept exactly. The embedded model's linear layers are Q4_1
  (per 32 weights: a scale, a minimum and 4-bit codes), which torch's CPU int4 kernel stores as codes with
  a scale and zero point per group, so the same numbers are read at 4.5 bits instead of 32. Layers that
  are not exactly 4-bit (the Q8_0 output head) get int8 codes per output channel. Activations enter these
  kernels as bfloat16. Prompts of several tokens use a bfloat16 copy of each layer (faster for matrix
  products than unpacking 4-bit codes); decoding (one new token per sequence) uses the 4-bit kernel, for a
  batch of up to DECODE_ROWS sequences too. For the lean decoding step (``fastpath``), each attention's
  q/k/v and each MLP's gate/up also get one fused 4-bit matrix (``fused``): one kernel call where there were
  three or two, with the same numbers column for column.
- ``int8``: per-channel dynamic quantization of every linear layer (faster, but the answers drift).

This module converts loaded models; it does not load or generate.
"""

from __future__ import annotations

import warnings
from typing import Any

GROUP = 32
PREFILL_ROWS = 4
"""From this many tokens per sequence (a prompt) on, a q4 layer multiplies with its bfloat16 copy."""
DECODE_ROWS = 24
"""Up to this many rows of one token each (the engine's batched decoding), the 4-bit kernel; above, the bfloat16
copy. SmolLM2-135M on 2 CPU cores, one decoding step of the engine: 16 rows 60 ms, 20 rows 76 ms and 24 rows
78 ms with 4-bit codes, against 159 ms for 20 rows with the bfloat16 copy; the 4-bit kernel falls off at 32
rows (over 400 ms), which the engine's default batch of 24 stays below."""


FUSED = {"qkv": ("q_proj", "k_proj", "v_proj"), "gate_up": ("gate_proj", "up_proj")}
"""Fused 4-bit matrices a q4 model keeps beside its layers: name -> the layers whose rows it stacks."""


def q4_supported() -> bool:
    import torch

    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and hasattr(torch.ops.aten, "_weight_int8pack_mm")


def _q4_codes(weight) -> tuple[Any, Any, Any] | None:
    """(codes, scale, minimum) if every group of 32 weights is exactly minimum + scale * code with codes
    0..15, as a Q4_1 file stores them; None otherwise."""
    import torch

    out_features, in_features = weight.shape
    if in_features % GROUP or out_features % 8:
        return None
    blocks = weight.detach().float().reshape(out_features, in_features // GROUP, GROUP)
    low = blocks.amin(-1, keepdim=True)
    scale = (blocks.amax(-1, keepdim=True) - low) / 15
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = ((blocks - low) / safe).round().clamp(0, 15)
    if not torch.equal(codes * scale + low, blocks):
        return None
    return codes.reshape(out_features, in_features), scale.squeeze(-1), low.squeeze(-1)


def _q4_linear_class():
    """The replacement module classes, built on first use so importing this file does not import torch."""
    import torch

    class _Q4Linear(torch.nn.Module):
        """A linear layer holding exact 4-bit codes (decoding) and a bfloat16 copy (prompts)."""

        def __init__(self, linear: torch.nn.Linear, codes, scale, low):
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.bias = linear.bias
            packed, scale_zero = _pack(codes, scale, low)
            self.register_buffer("packed", packed)
            self.register_buffer("scale_zero", scale_zero)
            self.register_buffer("dense", linear.weight.detach().to(torch.bfloat16))

        def forward(self, x):
            shape = x.shape
            rows = x.reshape(-1, shape[-1]).to(torch.bfloat16)
            tokens = shape[-2] if x.dim() > 2 else rows.shape[0]  # per sequence: (batch, tokens, features)
            if tokens >= PREFILL_ROWS or rows.shape[0] > DECODE_ROWS:
                y = torch.nn.functional.linear(rows, self.dense)
            else:
                y = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.packed, GROUP, self.scale_zero)
            y = y.reshape(*shape[:-1], self.out_features).to(x.dtype)
            return y if self.bias is None else y + self.bias

    class _Int8Linear(torch.nn.Module):
        """Weight-only int8 per output channel (the output head)."""

        def __init__(self, linear: torch.nn.Linear):
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            w = linear.weight.detach().float()
            scales = w.abs().amax(1).clamp_min(1e-12) / 127
            self.register_buffer("codes", (w / scales[:, None]).round().clamp(-127, 127).to(torch.int8))
            self.register_buffer("scales", scales.to(torch.bfloat16))
            self.bias = linear.bias

        def forward(self, x):
            shape = x.shape
            rows = x.reshape(-1, shape[-1]).to(torch.bfloat16)
            y = torch.ops.aten._weight_int8pack_mm(rows, self.codes, self.scales)
            y = y.reshape(*shape[:-1], self.out_features).to(x.dtype)
            return y if self.bias is None else y + self.bias

    return _Q4Linear, _Int8Linear


def _pack(codes, scale, low) -> tuple[Any, Any]:
    """(packed codes, scale and zero) as torch's CPU int4 kernel takes them, for (out, in) codes 0..15."""
    import torch

    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 1)
    # The kernel computes (code - 8) * scale + zero, so zero = minimum + 8 * scale. Shape (groups, out, 2).
    scale_zero = torch.stack([scale.t(), (low + 8 * scale).t()], -1).contiguous().to(torch.bfloat16)
    return packed, scale_zero


class FusedQ4:
    """Several q4 layers of one input stacked into one 4-bit matrix, for one-token rows (the decoding step).

    ``__call__`` takes (rows, in_features) in float32 and returns (rows, sum of out_features) in float32: per
    column the same numbers as each layer's own 4-bit kernel call (the kernel sums every output column on its
    own), in one call instead of several."""

    def __init__(self, parts: list[tuple[Any, Any, Any]]):
        import torch

        self.packed, self.scale_zero = _pack(*(torch.cat(p) for p in zip(*parts, strict=True)))
        self.sizes = [codes.shape[0] for codes, _, _ in parts]

    def __call__(self, x):
        import torch

        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(torch.bfloat16), self.packed, GROUP, self.scale_zero)
        return y.to(x.dtype)


def fused(module: Any, name: str) -> FusedQ4 | None:
    """The module's fused 4-bit matrix ``name`` (a key of FUSED), or None when it has none."""
    return module.__dict__.get(f"fused_{name}")


def to_q4(model: Any) -> tuple[Any, int]:
    """Swap exact 4-bit linear layers for q4 ones and the output head for int8; returns (model, count of
    q4 layers). The output head is untied from the input embedding first, so the embedding stays float.
    A module whose layers of one FUSED group are all 4-bit also keeps their fused matrix (``fused``)."""
    import torch

    q4_cls, int8_cls = _q4_linear_class()
    head = model.get_output_embeddings()
    converted = 0
    for parent in list(model.modules()):
        codes = {}
        for name, child in list(parent.named_children()):
            if not isinstance(child, torch.nn.Linear):
                continue
            if child is head:
                setattr(parent, name, int8_cls(child))
                continue
            found = _q4_codes(child.weight)
            if found is not None:
                setattr(parent, name, q4_cls(child, *found))
                converted += 1
                if child.bias is None:
                    codes[name] = found
        for group, names in FUSED.items():
            if all(n in codes for n in names):
                # A plain attribute, not a submodule: no state-dict entry, and q4 never leaves the CPU.
                parent.__dict__[f"fused_{group}"] = FusedQ4([codes[n] for n in names])
    return model, converted


def to_int8_dynamic(model: Any) -> Any:
    """Int8 weights for every linear layer (per output channel), activations quantized on the fly."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    head = model.get_output_embeddings()
    if head is not None and head.weight is model.get_input_embeddings().weight:
        head.weight = torch.nn.Parameter(head.weight.detach().clone(), requires_grad=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notice
        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
