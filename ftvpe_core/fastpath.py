"""A lean one-token decoding step for Llama-family models (Llama, SmolLM2).

Decoding one token on a CPU spends more time in the Python of the transformers forward pass (masks,
keyword plumbing, output objects, hooks) than in the matrix products once the weights are 4-bit. This
step does the same arithmetic as ``LlamaForCausalLM.forward`` for a single new token with a KV cache,
calling the model's own modules and cache, so it stays exact (tests compare its logits with the full
forward). Prompts (several tokens) still go through the regular forward pass. Other architectures, and
models with adapters or unusual settings, are simply not eligible (``supports`` says so).
"""

from __future__ import annotations

from typing import Any


def supports(model: Any) -> bool:
    """Whether ``step`` computes exactly what the model's own forward pass would."""
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


def step(model: Any, token: int, cache: Any) -> Any:
    """Logits (vocab,) for the next position after ``token``; appends its keys and values to ``cache``.

    Must run under ``torch.inference_mode()``, with the cache already holding the prompt.
    """
    import torch
    from torch.nn.functional import scaled_dot_product_attention, silu

    inner = model.model
    position = cache.get_seq_length()
    device = inner.embed_tokens.weight.device
    hidden = inner.embed_tokens(torch.tensor([[token]], device=device))  # (1, 1, H)
    cos, sin = inner.rotary_emb(hidden, torch.tensor([[position]], device=device))  # (1, 1, D) each
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (1, 1, 1, D): broadcast over heads
    for index, layer in enumerate(inner.layers):
        attn = layer.self_attn
        x = layer.input_layernorm(hidden)
        head_dim = attn.head_dim
        q = attn.q_proj(x).view(1, 1, -1, head_dim).transpose(1, 2)  # (1, heads, 1, D)
        k = attn.k_proj(x).view(1, 1, -1, head_dim).transpose(1, 2)  # (1, kv_heads, 1, D)
        v = attn.v_proj(x).view(1, 1, -1, head_dim).transpose(1, 2)
        half = head_dim // 2
        q = q * cos + torch.cat((-q[..., half:], q[..., :half]), dim=-1) * sin
        k = k * cos + torch.cat((-k[..., half:], k[..., :half]), dim=-1) * sin
        keys, values = cache.update(k, v, index)  # (1, kv_heads, T, D)
        # One query at the end of the sequence sees every cached position: no mask needed.
        out = scaled_dot_product_attention(q, keys, values, scale=attn.scaling, enable_gqa=True)
        hidden = hidden + attn.o_proj(out.transpose(1, 2).reshape(1, 1, -1))
        mlp = layer.mlp
        x = layer.post_attention_layernorm(hidden)
        hidden = hidden + mlp.down_proj(silu(mlp.gate_proj(x)) * mlp.up_proj(x))
    hidden = inner.norm(hidden)
    return model.lm_head(hidden)[0, -1]
