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

Attention over the cache is the one place where rows of a batch meet, and each row attends in a call of its
own, exactly the call the model's forward pass makes for that sequence alone (one sequence, its own span, no
mask). torch's CPU attention kernel gives a row numbers that depend, in the last bits, on the call: a span's
last ``length % 16`` positions go through a scalar tail (so a masked call over a longer span differs), and
it hands a call's heads to threads whose scratch buffers are aligned differently (so rows of one length in one
call differ from each alone on two threads). With 4-bit weights a near tie turns on such bits often enough
that eight learners running one preset together got another answer than alone on 2 of 7 presets when rows of
one length shared a call. One call per row makes a 20-row step slower than one masked call over all rows could
(44 against 34 ms; 5-13 % of a class's tokens/s, bench/README.md); in exchange, every row's numbers are those
of the model's own forward pass, whatever else is in the batch.

Matrix products are the other place: torch's float32 CPU product picks its kernel by the number of rows (one
row, two or three, four and more each give other last bits), so a plain float layer multiplies in fixed blocks of
``BLOCK_ROWS`` rows (the batch padded with zero rows): every row of every batch goes through the same call shape,
and its numbers are those of that row in any batch (the engine's rule: batch invariance). The 4-bit and int8
kernels already give a row the same numbers at every row count (tests/test_quant.py holds it), so q4 layers
multiply the batch in one call.
"""

from __future__ import annotations

import weakref
from typing import Any

from ftvpe_core.model import quant

_plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
BLOCK_ROWS = 8
"""Rows of every float matrix product of the decoding step (padded): one call shape whatever the batch's size."""


def _blocked(module: Any):
    """``module.forward`` on (B, ..., features) rows, in products of exactly BLOCK_ROWS rows when the module is a
    plain float ``Linear`` (whose kernel depends on the row count); other modules' own forward."""
    import torch

    forward = module.forward
    if type(module) is not torch.nn.Linear:
        return forward

    def blocked(x):
        shape = x.shape
        rows = x.reshape(-1, shape[-1])
        n = rows.shape[0]
        padded = -(-n // BLOCK_ROWS) * BLOCK_ROWS
        if padded != n:
            rows = torch.cat((rows, rows.new_zeros(padded - n, rows.shape[1])))
        parts = [forward(rows[i : i + BLOCK_ROWS]) for i in range(0, padded, BLOCK_ROWS)]
        out = parts[0] if len(parts) == 1 else torch.cat(parts)
        return out[:n].reshape(*shape[:-1], out.shape[-1])

    return blocked


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
    )


class _Layer:
    """One decoder layer's pieces, looked up once: bound ``forward`` methods and the fused 4-bit matrices."""

    __slots__ = ("norm1", "norm2", "q", "k", "v", "o", "gate", "up", "down", "qkv", "gate_up", "heads", "kv")

    def __init__(self, layer: Any):
        attn, mlp = layer.self_attn, layer.mlp
        self.norm1, self.norm2 = layer.input_layernorm.forward, layer.post_attention_layernorm.forward
        self.q, self.k, self.v, self.o = (_blocked(m) for m in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj))
        self.gate, self.up, self.down = (_blocked(m) for m in (mlp.gate_proj, mlp.up_proj, mlp.down_proj))
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
        self.embed, self.rotary, self.norm = inner.embed_tokens, inner.rotary_emb, inner.norm
        self.head = _blocked(model.lm_head)


def _plan(model: Any) -> _Plan:
    """The model's plan, made again if its first layer's modules were swapped since (a weight conversion)."""
    plan = _plans.get(model)
    first = model.model.layers[0]
    if plan is None or plan.first is not first or plan.first_q is not first.self_attn.q_proj:
        plan = _plans[model] = _Plan(model)
    return plan


def attend(query: Any, keys: Any, values: Any, lens: list[int], scaling: float) -> Any:
    """Attention of one new position per row: query (B, heads, 1, D) over row i's first lens[i] + 1 positions of
    keys and values (rows, kv_heads, length, D); (B, heads, 1, D). One call per row (see the module's notes)."""
    import torch
    from torch.nn.functional import scaled_dot_product_attention

    parts = [
        scaled_dot_product_attention(
            query[i : i + 1],
            keys[i : i + 1, :, : n + 1],
            values[i : i + 1, :, : n + 1],
            scale=scaling,
            enable_gqa=True,
        )
        for i, n in enumerate(lens)
    ]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def decode_step(model: Any, tokens: list[int], lens: list[int], keys: list, values: list) -> Any:
    """Logits (B, V) of the next position after one new token per row; writes the tokens' keys and values.

    Args:
        tokens: the B new tokens, one per row.
        lens: how many positions each row's cache holds already (the new token goes at that position).
        keys, values: per layer a (rows, kv_heads, length, head_dim) tensor; rows [0, B) are the batch's, row i
            holding its tokens at positions [0, lens[i]).

    Must run under ``torch.inference_mode()``. Each row attends in a call of its own (see the module's notes).
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
        out = attend(q, layer_keys, layer_values, lens, plan.scaling)
        hidden = hidden + layer.o(out.transpose(1, 2).reshape(b, 1, -1))
        x = layer.norm2(hidden)
        if fused and layer.gate_up is not None:
            gate, up = layer.gate_up(x.view(b, -1)).split(layer.gate_up.sizes, dim=-1)
            hidden = hidden + layer.down((silu(gate) * up).view(b, 1, -1))
        else:
            hidden = hidden + layer.down(silu(layer.gate(x)) * layer.up(x))
    return plan.head(plan.norm(hidden))[:, -1]
