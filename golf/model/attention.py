"""Causal GQA self-attention with QK RMS-norm, learned per-head QK gain and partial RoPE; optional exclusive
self-attention (XSA), a sparse per-head output gate, and document-isolated attention (doc_ids)."""

import torch
import torch.nn.functional as F
from torch import nn

from golf.kernels.attention_triton import attention_torch


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, doc_ids=None) -> torch.Tensor:
    """q: (B, H, T, D), k/v: (B, Hkv, T, D) -> (B, H, T, D), causal; doc_ids (B, T): within documents only."""
    return attention_torch(q, k, v, doc_ids)


def rope_tables(seq_len: int, rope_dims: int, base: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape (seq_len, rope_dims // 2) for rotating the first rope_dims of a head."""
    inv_freq = 1.0 / (base ** (torch.arange(0, rope_dims, 2, dtype=torch.float32, device=device) / rope_dims))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
    return angles.cos(), angles.sin()


def apply_partial_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, D); rotate dims [0, 2*cos.size(-1)) in half-split pairs by -theta (the record's direction,
    R:929-938: (a, b) -> (a cos + b sin, b cos - a sin)), pass the rest through. The direction matters for loading
    the record's weights: with +theta its trained q/k give another model (issue 23)."""
    r = 2 * cos.size(-1)
    rot, rest = x[..., :r], x[..., r:]
    a, b = rot.chunk(2, dim=-1)
    cos, sin = cos[: x.size(-2)].to(x.dtype), sin[: x.size(-2)].to(x.dtype)
    rotated = torch.cat((a * cos + b * sin, b * cos - a * sin), dim=-1)
    return torch.cat((rotated, rest), dim=-1)


def exclude_self_value(y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """XSA: remove from each head's output its component along its own position's value direction.
    y (B, H, T, D), v (B, Hkv, T, D); query head h uses kv head h // (H // Hkv) (record R:1003-1010)."""
    vn = F.normalize(v, dim=-1).repeat_interleave(y.size(1) // v.size(1), dim=1)
    return y - (y * vn).sum(dim=-1, keepdim=True) * vn


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, rope_dims: int, rope_base: float,
                 qk_gain_init: float, max_seq_len: int, attention_fn=sdpa_attention, xsa: bool = False,
                 gate_window: int = 0, gate_scale: float = 0.5):
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
        # QK RMS-norm fixes the logit scale; the learned gain (init 5.0, record) sets sharpness.
        self.q_gain = nn.Parameter(torch.full((num_heads,), qk_gain_init))
        self.rope_base = rope_base
        cos, sin = rope_tables(max_seq_len, min(rope_dims, self.head_dim), rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.attention_fn = attention_fn
        self.xsa = xsa
        # SparseAttnGate (record R:1060): head h's output times sigmoid(scale * W_h . x[:gate_window]), W (H, window)
        # zero-init, so every head starts at a constant 0.5.
        self.gate_window, self.gate_scale = gate_window, gate_scale
        self.gate = nn.Parameter(torch.zeros(num_heads, gate_window)) if gate_window > 0 else None

    def forward(self, x: torch.Tensor, doc_ids=None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = F.rms_norm(q, (self.head_dim,))
        k = F.rms_norm(k, (self.head_dim,))
        if T > self.rope_cos.size(0):
            # A packed training row is longer than one sequence: like the record (R:889-927), positions count from
            # the row start; within a document segment only their differences reach the attention scores.
            self.rope_cos, self.rope_sin = rope_tables(T, 2 * self.rope_cos.size(-1), self.rope_base, x.device)
        q = apply_partial_rope(q, self.rope_cos, self.rope_sin)
        k = apply_partial_rope(k, self.rope_cos, self.rope_sin)
        # With unit-RMS q and k and SDPA's 1/sqrt(D): logit = gain * sqrt(D) * cos(q, k).
        q = q * self.q_gain.to(q.dtype)[None, :, None, None]
        y = self.attention_fn(q, k, v) if doc_ids is None else self.attention_fn(q, k, v, doc_ids)
        if self.xsa:
            y = exclude_self_value(y, v)
        if self.gate is not None:
            g = torch.sigmoid(self.gate_scale * F.linear(x[..., : self.gate_window], self.gate.to(x.dtype)))
            y = y * g.transpose(1, 2)[..., None]  # (B, T, H) -> (B, H, T, 1)
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))
