"""The language model: tied embedding -> blocks (in the order the loop schedule gives) -> softcapped head."""

import torch
import torch.nn.functional as F
from torch import nn

from golf.config import pick
from golf.data import BOS_ID, document_ids
from golf.kernels.softcap_ce import softcap_cross_entropy
from golf.model.attention import sdpa_attention
from golf.model.blocks import BLOCKS, rms_norm
from golf.model.loops import LOOP_SCHEDULES


def token_nll(logits: torch.Tensor, targets: torch.Tensor, cap: float) -> torch.Tensor:
    """Per-token NLL in fp32 of softcapped logits. logits: (..., V) pre-softcap, targets: (...) -> (...)."""
    nll = softcap_cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), cap)
    return nll.view(targets.shape)


class SmearGate(nn.Module):
    """x_t += lam * sigmoid(w . x_t[:window]) * x_{t-1} on the token embeddings (record R:1331-1337), except
    where token t is BOS: a document's first position never reads the previous document (the BOS fix,
    R:1431-1436). lam and w start at zero, so a fresh gate is the identity."""

    def __init__(self, window: int):
        super().__init__()
        self.window = window
        self.weight = nn.Parameter(torch.zeros(1, window))
        self.lam = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) embeddings of idx (B, T) -> (B, T, D)."""
        g = self.lam.to(x.dtype) * torch.sigmoid(F.linear(x[:, 1:, : self.window], self.weight.to(x.dtype)))
        not_bos = (idx[:, 1:] != BOS_ID).to(x.dtype).unsqueeze(-1)
        return torch.cat((x[:, :1], x[:, 1:] + g * x[:, :-1] * not_bos), dim=1)


def orthogonal_init_(model: nn.Module) -> None:
    """The record's init (R:1254-1279): orthogonal q/k/v and MLP-up; attention-out and MLP-down stay zero."""
    for block in model.blocks:
        for linear in (block.attn.q, block.attn.k, block.attn.v, block.mlp.fc):
            nn.init.orthogonal_(linear.weight)


class GPT(nn.Module):
    def __init__(self, cfg, attention_fn=sdpa_attention):
        super().__init__()
        self.logit_softcap = cfg.logit_softcap
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        nn.init.normal_(self.tok_emb.weight, std=0.005)
        block_cls = pick(BLOCKS, cfg.block, "BLOCK")
        self.blocks = nn.ModuleList(block_cls(cfg, attention_fn, layer) for layer in range(cfg.num_layers))
        self.schedule = pick(LOOP_SCHEDULES, cfg.loop_schedule, "LOOP_SCHEDULE")(cfg)
        self.smear = SmearGate(cfg.gate_window) if cfg.smear_gate else None
        self.doc_attention = cfg.doc_attention
        if cfg.orthogonal_init:
            orthogonal_init_(self)

    def set_progress(self, step: int, frac: float) -> None:
        """The train loop calls this before each optimiser step; the loop schedule may change depth with it."""
        self.schedule.set_progress(step, frac)

    def hidden(self, idx: torch.Tensor, doc_ids=None) -> torch.Tensor:
        """idx: (B, T) token ids -> final normed hidden states (B, T, D). With doc_attention every position
        attends only within its own segment: `doc_ids` (B, T) from the document-packing loader (documents cut
        every train_seq_len tokens, the record's cu_seqlens), else each document as BOS starts it."""
        x = self.tok_emb(idx)
        if self.smear is not None:
            x = self.smear(x, idx)
        x = x0 = rms_norm(x)
        if not self.doc_attention:
            doc_ids = None
        elif doc_ids is None:
            doc_ids = document_ids(idx)
        return rms_norm(self.schedule(self.blocks, x, x0, doc_ids))

    def logits(self, idx: torch.Tensor, doc_ids=None) -> torch.Tensor:
        """(B, T) -> pre-softcap logits (B, T, V) from the tied head."""
        return F.linear(self.hidden(idx, doc_ids), self.tok_emb.weight)

    def token_losses(self, idx: torch.Tensor, targets: torch.Tensor, doc_ids=None) -> torch.Tensor:
        """(B, T), (B, T) -> per-token NLL (B, T) fp32; evaluation sums these."""
        return token_nll(self.logits(idx, doc_ids), targets, self.logit_softcap)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor, doc_ids=None) -> torch.Tensor:
        return self.token_losses(idx, targets, doc_ids).mean()


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
