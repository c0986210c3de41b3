"""Causal GQA self-attention with QK RMS-norm, learned per-head QK gain and partial RoPE."""

import torch
import torch.nn.functional as F
from torch import nn


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q: (B, H, T, D), k/v: (B, Hkv, T, D) -> (B, H, T, D), causal."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.size(1) != k.size(1))


def rope_tables(seq_len: int, rope_dims: int, base: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape (seq_len, rope_dims // 2) for rotating the first rope_dims of a head."""
    inv_freq = 1.0 / (base ** (torch.arange(0, rope_dims, 2, dtype=torch.float32, device=device) / rope_dims))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
    return angles.cos(), angles.sin()


def apply_partial_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, D); rotate dims [0, 2*cos.size(-1)) in half-split pairs, pass the rest through."""
    r = 2 * cos.size(-1)
    rot, rest = x[..., :r], x[..., r:]
    a, b = rot.chunk(2, dim=-1)
    cos, sin = cos[: x.size(-2)].to(x.dtype), sin[: x.size(-2)].to(x.dtype)
    rotated = torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)
    return torch.cat((rotated, rest), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, rope_dims: int, rope_base: float,
                 qk_gain_init: float, max_seq_len: int, attention_fn=sdpa_attention):
        super().__init__()
        if dim % num_heads or num_heads % num_kv_heads:
            raise ValueError(f"model_dim {dim} / heads {num_heads} / kv heads {num_kv_heads} do not divide")
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, num_kv_heads * self.head_dim, bias=False)
        self.v = nn.Linear(dim, num_kv_heads * self.head_dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        nn.init.zeros_(self.proj.weight)
        # QK RMS-norm fixes the logit scale; the learned gain (init 5.25, seed file) sets sharpness.
        self.q_gain = nn.Parameter(torch.full((num_heads,), qk_gain_init))
        cos, sin = rope_tables(max_seq_len, min(rope_dims, self.head_dim), rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.attention_fn = attention_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = F.rms_norm(q, (self.head_dim,))
        k = F.rms_norm(k, (self.head_dim,))
        q = apply_partial_rope(q, self.rope_cos, self.rope_sin)
        k = apply_partial_rope(k, self.rope_cos, self.rope_sin)
        # With unit-RMS q and k and SDPA's 1/sqrt(D): logit = gain * sqrt(D) * cos(q, k).
        q = q * self.q_gain.to(q.dtype)[None, :, None, None]
        y = self.attention_fn(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))
