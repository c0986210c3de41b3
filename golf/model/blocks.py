"""Transformer blocks. Every block first mixes the running residual with the embedding x0."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from golf.model.attention import CausalSelfAttention
from golf.model.mlp import MLP


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


class LaneMix(nn.Module):
    """Weights of one two-lane virtual layer. keep_init 1 (gpt_j_x0): with equal lanes the layer is exactly the
    one-lane parallel block; the record starts `keep` at 1.1 (R:1240)."""

    def __init__(self, keep_init: float = 1.0):
        super().__init__()
        self.keep = nn.Parameter(torch.full((2,), keep_init))  # (lane,): scale on the lane's own residual; 0 attn, 1 MLP
        self.take = nn.Parameter(torch.ones(2, 2))  # (lane, branch): branch 0 attention output, 1 MLP output


class BlockBase(nn.Module):
    """Shared parts: attention, MLP, learned per-channel x0 mix (init: keep x, add 0*x0) and branch scales."""

    def __init__(self, cfg, attention_fn, layer: int = 0):
        super().__init__()
        d = cfg.model_dim
        self.attn = CausalSelfAttention(d, cfg.num_heads, cfg.num_kv_heads, cfg.rope_dims, cfg.rope_base,
                                        cfg.qk_gain_init, max(cfg.train_seq_len, cfg.sw_seq_len), attention_fn,
                                        xsa=layer >= cfg.num_layers - cfg.xsa_last_n,
                                        gate_window=cfg.gate_window if cfg.sparse_attn_gate else 0,
                                        gate_scale=cfg.sparse_attn_gate_scale)
        self.mlp = MLP(d, cfg.mlp_mult, cfg.mlp_activation)
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(d), torch.zeros(d))))  # (2, d): m0, m1
        self.attn_scale = nn.Parameter(torch.ones(d))
        self.mlp_scale = nn.Parameter(torch.ones(d))
        # LN scale (record R:1124): unique block i scales both norm outputs by 1/sqrt(i+1), damping deep layers.
        self.norm_scale = 1.0 / math.sqrt(layer + 1) if cfg.ln_scale else 1.0
        self.x0_residual = cfg.lane_x0_residual

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x) * self.norm_scale if self.norm_scale != 1.0 else rms_norm(x)

    def mix_x0(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        m = self.resid_mix.to(x.dtype)
        return m[0] * x + m[1] * x0

    def forward_lanes(self, lanes: tuple[torch.Tensor, torch.Tensor], x0: torch.Tensor,
                      mix: LaneMix, doc_ids=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Two-lane variant (2026-04 records, late layers): attention reads the x0-mixed attention lane, the MLP
        reads the MLP lane; each lane keeps itself (the mixed lane with lane_x0_residual, else the raw lane as
        the record, R:1291-1315) and adds both branch outputs with its own learned weights."""
        attn_lane, mlp_lane = lanes
        attn_read = self.mix_x0(attn_lane, x0)
        if self.x0_residual:
            attn_lane = attn_read
        a = self.attn_scale.to(attn_lane.dtype) * self.attn(self.norm(attn_read), doc_ids)
        m = self.mlp_scale.to(mlp_lane.dtype) * self.mlp(self.norm(mlp_lane))
        keep, take = mix.keep.to(a.dtype), mix.take.to(a.dtype)
        return (keep[0] * attn_lane + take[0, 0] * a + take[0, 1] * m,
                keep[1] * mlp_lane + take[1, 0] * a + take[1, 1] * m)


class SequentialBlock(BlockBase):
    """x = mix(x, x0); x += a*attn(norm x); x += b*mlp(norm x)."""

    def forward(self, x: torch.Tensor, x0: torch.Tensor, doc_ids=None) -> torch.Tensor:
        x = self.mix_x0(x, x0)
        x = x + self.attn_scale.to(x.dtype) * self.attn(self.norm(x), doc_ids)
        return x + self.mlp_scale.to(x.dtype) * self.mlp(self.norm(x))


class ParallelBlock(BlockBase):
    """x = mix(x, x0); h = norm x; x += a*attn(h) + b*mlp(h): one norm, both branches read the same h."""

    def forward(self, x: torch.Tensor, x0: torch.Tensor, doc_ids=None) -> torch.Tensor:
        x = self.mix_x0(x, x0)
        h = self.norm(x)
        return x + self.attn_scale.to(x.dtype) * self.attn(h, doc_ids) + self.mlp_scale.to(x.dtype) * self.mlp(h)


BLOCKS = {"parallel": ParallelBlock, "sequential": SequentialBlock}
