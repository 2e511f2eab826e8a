"""A lean decoding step for Llama-family models (Llama, SmolLM2): one new token for each row of a batch.

Decoding on a CPU spends more time in the Python of the transformers forward pass (masks, keyword plumbing,
output objects, hooks) than in the matrix products once the weights are 4-bit. This step does the same
arithmetic as ``LlamaForCausalLM.forward`` for one new token per row with a KV cache, calling the model's own
modules, over the engine's slot cache (a preallocated tensor per layer written in place, where DynamicCache
copies the whole cache to append a token), so it stays exact (tests compare its logits with the full
forward). Prompts (several tokens) still go through the regular forward pass. Other architectures, and
models with adapters or unusual settings, are simply not eligible (``supports`` says so).
"""

from __future__ import annotations

from typing import Any


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


def decode_step(model: Any, tokens: list[int], lens: list[int], keys: list, values: list) -> Any:
    """Logits (B, V) of the next position after one new token per row; writes the tokens' keys and values.

    Args:
        tokens: the B new tokens, one per row.
        lens: how many positions each row's cache holds already (the new token goes at that position).
        keys, values: per layer a (rows, kv_heads, length, head_dim) tensor; rows [0, B) are the batch's, row i
            holding its tokens at positions [0, lens[i]).

    Must run under ``torch.inference_mode()``. Each run of neighbouring rows of the same length attends in one
    unmasked call over exactly its positions: a masked call over the longest row's span would give the same
    answers only up to the last bits (a near tie could then go the other way than for the request alone).
    """
    import torch
    from torch.nn.functional import scaled_dot_product_attention, silu

    inner = model.model
    b = len(tokens)
    device = inner.embed_tokens.weight.device
    hidden = inner.embed_tokens(torch.tensor(tokens, device=device)[:, None])  # (B, 1, H)
    where = torch.tensor(lens, device=device)  # (B,)
    cos, sin = inner.rotary_emb(hidden, where[:, None])  # (B, 1, D) each
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, 1, D): broadcast over heads
    runs = []  # (first row, end row, positions seen): neighbouring rows of one length
    for i, n in enumerate(lens):
        if runs and runs[-1][2] == n + 1:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1, n + 1])
    rows = torch.arange(b, device=device)
    for index, layer in enumerate(inner.layers):
        attn = layer.self_attn
        x = layer.input_layernorm(hidden)
        head_dim = attn.head_dim
        q = attn.q_proj(x).view(b, 1, -1, head_dim).transpose(1, 2)  # (B, heads, 1, D)
        k = attn.k_proj(x).view(b, 1, -1, head_dim).transpose(1, 2)  # (B, kv_heads, 1, D)
        v = attn.v_proj(x).view(b, 1, -1, head_dim).transpose(1, 2)
        half = head_dim // 2
        q = q * cos + torch.cat((-q[..., half:], q[..., :half]), dim=-1) * sin
        k = k * cos + torch.cat((-k[..., half:], k[..., :half]), dim=-1) * sin
        layer_keys, layer_values = keys[index], values[index]
        layer_keys[rows, :, where] = k[:, :, 0]
        layer_values[rows, :, where] = v[:, :, 0]
        parts = [
            scaled_dot_product_attention(
                q[first:end],
                layer_keys[first:end, :, :seen],  # (rows, kv_heads, T, D)
                layer_values[first:end, :, :seen],
                scale=attn.scaling,
                enable_gqa=True,
            )
            for first, end, seen in runs
        ]
        out = parts[0] if len(parts) == 1 else torch.cat(parts)
        hidden = hidden + attn.o_proj(out.transpose(1, 2).reshape(b, 1, -1))
        mlp = layer.mlp
        x = layer.post_attention_layernorm(hidden)
        hidden = hidden + mlp.down_proj(silu(mlp.gate_proj(x)) * mlp.up_proj(x))
    return model.lm_head(inner.norm(hidden))[:, -1]
