"""The language model: tied embedding -> blocks (in the order the loop schedule gives) -> softcapped head."""

import torch
import torch.nn.functional as F
from torch import nn

from golf.config import pick
from golf.kernels.softcap_ce import softcap_cross_entropy
from golf.model.attention import sdpa_attention
from golf.model.blocks import BLOCKS, rms_norm
from golf.model.loops import LOOP_SCHEDULES


def token_nll(logits: torch.Tensor, targets: torch.Tensor, cap: float) -> torch.Tensor:
    """Per-token NLL in fp32 of softcapped logits. logits: (..., V) pre-softcap, targets: (...) -> (...)."""
    nll = softcap_cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), cap)
    return nll.view(targets.shape)


class GPT(nn.Module):
    def __init__(self, cfg, attention_fn=sdpa_attention):
        super().__init__()
        self.logit_softcap = cfg.logit_softcap
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        nn.init.normal_(self.tok_emb.weight, std=0.005)
        block_cls = pick(BLOCKS, cfg.block, "BLOCK")
        self.blocks = nn.ModuleList(block_cls(cfg, attention_fn) for _ in range(cfg.num_layers))
        self.schedule = pick(LOOP_SCHEDULES, cfg.loop_schedule, "LOOP_SCHEDULE")(cfg)

    def set_progress(self, step: int, frac: float) -> None:
        """The train loop calls this before each optimiser step; the loop schedule may change depth with it."""
        self.schedule.set_progress(step, frac)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """idx: (B, T) token ids -> final normed hidden states (B, T, D)."""
        x = x0 = rms_norm(self.tok_emb(idx))
        return rms_norm(self.schedule(self.blocks, x, x0))

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) -> pre-softcap logits (B, T, V) from the tied head."""
        return F.linear(self.hidden(idx), self.tok_emb.weight)

    def token_losses(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B, T), (B, T) -> per-token NLL (B, T) fp32; evaluation sums these."""
        return token_nll(self.logits(idx), targets, self.logit_softcap)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.token_losses(idx, targets).mean()


def size_report(model: GPT) -> dict[str, int]:
    """Unique parameters (what the artifact stores) vs effective ones (counted once per virtual layer that uses
    them), and the virtual depth in training (at the current pass count) and at evaluation."""
    schedule = model.schedule
    was_training = schedule.training
    schedule.train()
    train_depth = len(schedule.plan())
    schedule.eval()
    eval_plan = schedule.plan()
    schedule.train(was_training)
    unique = sum(p.numel() for p in model.parameters())
    per_block = [sum(p.numel() for p in b.parameters()) for b in model.blocks]
    effective = unique + sum(per_block[layer.block] for layer in eval_plan) - sum(per_block)
    return dict(unique_params=unique, effective_params=effective, train_depth=train_depth, eval_depth=len(eval_plan))
