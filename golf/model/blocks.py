"""Transformer blocks. Every block first mixes the running residual with the embedding x0."""

import torch
import torch.nn.functional as F
from torch import nn

from golf.model.attention import CausalSelfAttention
from golf.model.mlp import MLP


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


class BlockBase(nn.Module):
    """Shared parts: attention, MLP, learned per-channel x0 mix (init: keep x, add 0*x0) and branch scales."""

    def __init__(self, cfg, attention_fn):
        super().__init__()
        d = cfg.model_dim
        self.attn = CausalSelfAttention(d, cfg.num_heads, cfg.num_kv_heads, cfg.rope_dims, cfg.rope_base,
                                        cfg.qk_gain_init, max(cfg.train_seq_len, cfg.sw_seq_len), attention_fn)
        self.mlp = MLP(d, cfg.mlp_mult, cfg.mlp_activation)
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(d), torch.zeros(d))))  # (2, d): m0, m1
        self.attn_scale = nn.Parameter(torch.ones(d))
        self.mlp_scale = nn.Parameter(torch.ones(d))

    def mix_x0(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        m = self.resid_mix.to(x.dtype)
        return m[0] * x + m[1] * x0


class SequentialBlock(BlockBase):
    """x = mix(x, x0); x += a*attn(norm x); x += b*mlp(norm x)."""

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        x = self.mix_x0(x, x0)
        x = x + self.attn_scale.to(x.dtype) * self.attn(rms_norm(x))
        return x + self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x))


class ParallelBlock(BlockBase):
    """x = mix(x, x0); h = norm x; x += a*attn(h) + b*mlp(h): one norm, both branches read the same h."""

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        x = self.mix_x0(x, x0)
        h = rms_norm(x)
        return x + self.attn_scale.to(x.dtype) * self.attn(h) + self.mlp_scale.to(x.dtype) * self.mlp(h)


BLOCKS = {"parallel": ParallelBlock, "sequential": SequentialBlock}
