"""A lean decoding step for Llama-family models (Llama, SmolLM2): one new token for each row of a batch.

Decoding on a CPU spends more time in the Python of the transformers forward pass (masks, keyword plumbing,
output objects, hooks) than in the matrix products once the weights are 4-bit. This step does the same
arithmetic as ``LlamaForCausalLM.forward`` for one new token per row with a KV cache, calling the model's own
modules, over the engine's slot cache (a preallocated tensor per layer written in place, where DynamicCache
copies the whole cache to append a token), so it stays exact (tests compare its logits with the full
forward). Prompts (several tokens) still go through the regular forward pass. Other architectures, and
models with adapters or unusual settings, are simply not eligible (``supports`` says so).

Per token it calls each module's ``forward`` directly (the hooks machinery of ``Module.__call__`` costs more
than a 4-bit matrix product of this size), takes the layers' modules from a plan made once per model, and on
q4 models multiplies q/k/v and gate/up with one fused 4-bit matrix each (``quant.fused``; the same numbers
column for column as three and two calls).

Attention over the cache is the one place where rows of a batch meet, and torch's CPU attention kernel gives
a row's numbers that depend, in the last bits, on the span it is called over (a span's last ``length % 16``
positions go through a scalar tail) and on which thread's scratch buffer it lands in (the buffers' alignment
follows the span). A greedy answer can turn on those bits, so a row must get the same numbers whatever else is
in the batch. ``decode_attention`` fixes the call: a row attending to n positions is computed over a span of
``attention_span(n)`` positions (a multiple of 16, plus 14), the positions past n masked out. Over such spans
the masked positions add exact zeros and every thread's buffer has the same alignment, so the numbers are the
same alone or in any batch (tests/test_fastpath.py checks it row by row). Rows of up to SHORT positions share
one call; a longer row (the kernel then splits the span into blocks of 512) gets a call of its own. The same
function is the model's own attention for one-token steps (``use_decode_attention``, set when a model is loaded),
so the model's forward pass, the engine alone and the engine batched all give the same tokens. Prompts (several
tokens) keep transformers' ``sdpa`` attention.
"""

from __future__ import annotations

import weakref
from typing import Any

from ftvpe_core import quant

_plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
ATTENTION = "ftvpe_decode"
"""The name ``decode_attention`` is registered under in transformers' attention functions."""
SHORT = 496
"""Rows attending to at most this many positions share one attention call (their spans stay within 512)."""
SPARE = 32
"""Positions a slot cache needs past its longest row (``attention_span`` rounds up by at most 29)."""


def attention_span(positions: int) -> int:
    """The span a row attending to ``positions`` positions is computed over: a multiple of 16 plus 14, at least
    ``positions``. The real positions stay clear of the kernel's scalar tail, and each thread's scratch buffer
    (span + 2 + head_dim numbers) keeps the same 32-byte alignment."""
    return -(-positions // 16) * 16 + 14


def attention_calls(seen: list[int], length: int, device: Any, dtype: Any) -> list[tuple]:
    """How rows attending to ``seen[i]`` positions each are grouped into attention calls: (first row, end row,
    span, additive mask (rows, 1, 1, span)), neighbouring rows of up to SHORT positions in one call, a longer
    row alone. ``length``: the positions the cache holds (a ValueError if a span needs more)."""
    import torch

    groups: list[list[int]] = []
    for i, n in enumerate(seen):
        if groups and n <= SHORT and seen[groups[-1][0]] <= SHORT:
            groups[-1][1] = i + 1
        else:
            groups.append([i, i + 1])
    calls = []
    for first, end in groups:
        span = attention_span(max(seen[first:end]))
        if span > length:
            raise ValueError(f"The cache holds {length} positions; attending to {max(seen)} needs {span}.")
        past = torch.arange(span, device=device)[None, :] >= torch.tensor(seen[first:end], device=device)[:, None]
        mask = torch.zeros(past.shape, dtype=dtype, device=device).masked_fill_(past, float("-inf"))
        calls.append((first, end, span, mask[:, None, None, :]))
    return calls


def attend(query: Any, keys: Any, values: Any, calls: list[tuple], scaling: float) -> Any:
    """Attention of one new position per row: query (B, heads, 1, D) over keys and values (B, kv_heads, length,
    D), as ``attention_calls`` grouped the rows; (B, heads, 1, D)."""
    import torch
    from torch.nn.functional import scaled_dot_product_attention

    parts = [
        scaled_dot_product_attention(
            query[first:end],
            keys[first:end, :, :span],
            values[first:end, :, :span],
            attn_mask=mask,
            scale=scaling,
            enable_gqa=True,
        )
        for first, end, span, mask in calls
    ]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def decode_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs) -> tuple:
    """A transformers attention function: a one-token step of one sequence is computed as ``decode_step``
    computes each row (see the module's notes); anything else (prompts, padded batches) goes to ``sdpa``."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain = attention_mask is None or (attention_mask.dtype == torch.bool and bool(attention_mask.all()))
    if query.shape[0] != 1 or query.shape[2] != 1 or not plain or kwargs.get("dropout", 0.0):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    n = key.shape[2]
    span = attention_span(n)
    padded_key = key.new_zeros((*key.shape[:2], span, key.shape[3]))
    padded_value = value.new_zeros(padded_key.shape)
    padded_key[:, :, :n], padded_value[:, :, :n] = key, value
    calls = attention_calls([n], span, query.device, query.dtype)
    out = attend(query, padded_key, padded_value, calls, kwargs.get("scaling") or query.shape[-1] ** -0.5)
    return out.transpose(1, 2).contiguous(), None


def use_decode_attention(model: Any) -> bool:
    """Make ``decode_attention`` the model's attention, if ``decode_step`` serves it; returns whether it is."""
    if not supports(model):
        return False
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if ATTENTION not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(ATTENTION, decode_attention)
        AttentionMaskInterface.register(ATTENTION, sdpa_mask)
    if model.config._attn_implementation != ATTENTION:
        model.set_attn_implementation(ATTENTION)
    return True


def supports(model: Any) -> bool:
    """Whether ``decode_step`` computes exactly what the model's own forward pass would."""
    config = getattr(model, "config", None)
    if config is None or type(model).__name__ != "LlamaForCausalLM":
        return False
    rope = getattr(config, "rope_parameters", None) or {}
    return (
        config.hidden_act == "silu"
        and not config.attention_bias
        and not getattr(config, "mlp_bias", False)
        and rope.get("rope_type", "default") == "default"
        and getattr(config, "pretraining_tp", 1) == 1
        and _head_dim(config) % 8 == 0  # see attention_span
    )


def _head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


class _Layer:
    """One decoder layer's pieces, looked up once: bound ``forward`` methods and the fused 4-bit matrices."""

    __slots__ = ("norm1", "norm2", "q", "k", "v", "o", "gate", "up", "down", "qkv", "gate_up", "heads", "kv")

    def __init__(self, layer: Any):
        attn, mlp = layer.self_attn, layer.mlp
        self.norm1, self.norm2 = layer.input_layernorm.forward, layer.post_attention_layernorm.forward
        self.q, self.k, self.v, self.o = (m.forward for m in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj))
        self.gate, self.up, self.down = mlp.gate_proj.forward, mlp.up_proj.forward, mlp.down_proj.forward
        self.qkv, self.gate_up = quant.fused(attn, "qkv"), quant.fused(mlp, "gate_up")
        self.heads = attn.q_proj.out_features // attn.head_dim
        self.kv = attn.k_proj.out_features // attn.head_dim


class _Plan:
    def __init__(self, model: Any):
        inner = model.model
        self.first = inner.layers[0]
        self.first_q = self.first.self_attn.q_proj
        self.layers = [_Layer(layer) for layer in inner.layers]
        self.head_dim, self.scaling = self.first.self_attn.head_dim, self.first.self_attn.scaling
        self.embed, self.rotary, self.norm, self.lm_head = (
            inner.embed_tokens,
            inner.rotary_emb,
            inner.norm,
            model.lm_head,
        )


def _plan(model: Any) -> _Plan:
    """The model's plan, made again if its first layer's modules were swapped since (a weight conversion)."""
    plan = _plans.get(model)
    first = model.model.layers[0]
    if plan is None or plan.first is not first or plan.first_q is not first.self_attn.q_proj:
        plan = _plans[model] = _Plan(model)
    return plan


def decode_step(model: Any, tokens: list[int], lens: list[int], keys: list, values: list) -> Any:
    """Logits (B, V) of the next position after one new token per row; writes the tokens' keys and values.

    Args:
        tokens: the B new tokens, one per row.
        lens: how many positions each row's cache holds already (the new token goes at that position).
        keys, values: per layer a (rows, kv_heads, length, head_dim) tensor; rows [0, B) are the batch's, row i
            holding its tokens at positions [0, lens[i]).

    Must run under ``torch.inference_mode()``. The cache must hold SPARE positions past the longest row.
    Neighbouring rows of up to SHORT positions attend in one masked call, a longer row alone, each over its
    ``attention_span`` (see the module's notes), so each row's numbers are those of ``decode_attention``.
    """
    import torch
    from torch.nn.functional import silu

    plan = _plan(model)
    b, d = len(tokens), plan.head_dim
    half = d // 2
    device = plan.embed.weight.device
    hidden = plan.embed(torch.tensor(tokens, device=device)[:, None])  # (B, 1, H)
    where = torch.tensor(lens, device=device)  # (B,)
    cos, sin = plan.rotary(hidden, where[:, None])  # (B, 1, D) each
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, 1, D): broadcast over heads
    same = all(n == lens[0] for n in lens)
    calls = attention_calls([n + 1 for n in lens], keys[0].shape[2], device, hidden.dtype)
    rows = torch.arange(b, device=device)
    fused = b <= quant.DECODE_ROWS  # above, a q4 layer multiplies with its bfloat16 copy instead
    for index, layer in enumerate(plan.layers):
        x = layer.norm1(hidden)
        if fused and layer.qkv is not None:
            # (B, heads + 2 kv_heads, 1, D); rotary on the q and k heads at once (the same numbers per element)
            qkv = layer.qkv(x.view(b, -1)).view(b, -1, 1, d)
            qk, v = qkv[:, : layer.heads + layer.kv], qkv[:, layer.heads + layer.kv :]
            qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin
            q, k = qk[:, : layer.heads], qk[:, layer.heads :]
        else:
            q = layer.q(x).view(b, 1, -1, d).transpose(1, 2)  # (B, heads, 1, D)
            k = layer.k(x).view(b, 1, -1, d).transpose(1, 2)  # (B, kv_heads, 1, D)
            v = layer.v(x).view(b, 1, -1, d).transpose(1, 2)
            q = q * cos + torch.cat((-q[..., half:], q[..., :half]), dim=-1) * sin
            k = k * cos + torch.cat((-k[..., half:], k[..., :half]), dim=-1) * sin
        layer_keys, layer_values = keys[index], values[index]
        if same:  # every row at one position (one stream, say): a plain copy, no index_put
            layer_keys[:b, :, lens[0]].copy_(k[:, :, 0])
            layer_values[:b, :, lens[0]].copy_(v[:, :, 0])
        else:
            layer_keys[rows, :, where] = k[:, :, 0]
            layer_values[rows, :, where] = v[:, :, 0]
        out = attend(q, layer_keys, layer_values, calls, plan.scaling)
        hidden = hidden + layer.o(out.transpose(1, 2).reshape(b, 1, -1))
        x = layer.norm2(hidden)
        if fused and layer.gate_up is not None:
            gate, up = layer.gate_up(x.view(b, -1)).split(layer.gate_up.sizes, dim=-1)
            hidden = hidden + layer.down((silu(gate) * up).view(b, 1, -1))
        else:
            hidden = hidden + layer.down(silu(layer.gate(x)) * layer.up(x))
    return plan.lm_head(plan.norm(hidden))[:, -1]
