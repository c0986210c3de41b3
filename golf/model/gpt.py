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


def asym_softcap_nll(logits: torch.Tensor, targets: torch.Tensor, cap_pos: torch.Tensor,
                     cap_neg: torch.Tensor) -> torch.Tensor:
    """token_nll with the cap cap_pos on positive logits and cap_neg on the rest (AsymLogit, PR #2101 train_gpt.py
    lines 1440-1447): z = c * tanh(l / c), c chosen per logit, in fp32 like softcap_logits; equal caps give
    token_nll's losses."""
    z = logits.float()
    cap = torch.where(z > 0, cap_pos.float(), cap_neg.float())
    nll = F.cross_entropy((cap * torch.tanh(z / cap)).reshape(-1, z.size(-1)), targets.reshape(-1), reduction="none")
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
        if cfg.embed_bf16:  # the record's bf16 embedding (R:3332; Config.embed_bf16): init in fp32, then cast
            self.tok_emb.to(torch.bfloat16)
        block_cls = pick(BLOCKS, cfg.block, "BLOCK")
        self.blocks = nn.ModuleList(block_cls(cfg, attention_fn, layer) for layer in range(cfg.num_layers))
        self.schedule = pick(LOOP_SCHEDULES, cfg.loop_schedule, "LOOP_SCHEDULE")(cfg)
        self.smear = SmearGate(cfg.gate_window) if cfg.smear_gate else None
        # AsymLogit: the eval/TTT head's caps (PR #2101 train_gpt.py lines 1281-1288: init logit_softcap, fp32). No
        # optimiser holds them (golf/params.py) and the training loss does not read them: in #2101 they stay at init
        # through training and TTT (its global TTT trains through the training forward), stored fp16 (its log:
        # "passthrough (float16): ... softcap_neg, softcap_pos"). Parameters, so the artifact carries them; frozen
        # (requires_grad False), since nothing ever updates them and no check should expect their gradient.
        if cfg.asym_softcap:
            self.softcap_pos = nn.Parameter(torch.tensor(float(cfg.logit_softcap)), requires_grad=False)
            self.softcap_neg = nn.Parameter(torch.tensor(float(cfg.logit_softcap)), requires_grad=False)
        self.asym_softcap = cfg.asym_softcap
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
        # Under autocast a bf16 embedding starts the residual stream in bf16 (as the record's); without (CPU) the
        # model computes in fp32. Meta tensors (tools/preflight.py counts memory on them) keep the GPU run's dtype.
        if x.device.type != "meta" and not torch.is_autocast_enabled(x.device.type):
            x = x.float()
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
        return self.project(self.hidden(idx, doc_ids))

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., D) hidden states -> pre-softcap logits (..., V) through the tied embedding."""
        return F.linear(hidden, self.tok_emb.weight.to(hidden.dtype))

    def head_nll(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-token NLL of pre-softcap logits under the evaluation head: AsymLogit's caps when on."""
        if self.asym_softcap:
            return asym_softcap_nll(logits, targets, self.softcap_pos, self.softcap_neg)
        return token_nll(logits, targets, self.logit_softcap)

    def token_losses(self, idx: torch.Tensor, targets: torch.Tensor, doc_ids=None) -> torch.Tensor:
        """(B, T), (B, T) -> per-token NLL (B, T) fp32 of the evaluation head; evaluation and TTT scoring sum these."""
        return self.head_nll(self.logits(idx, doc_ids), targets)

    def train_losses(self, idx: torch.Tensor, targets: torch.Tensor, doc_ids=None) -> torch.Tensor:
        """Per-token NLL (B, T) of the training head: one symmetric softcap (record: the fused CE in forward)."""
        return token_nll(self.logits(idx, doc_ids), targets, self.logit_softcap)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor, doc_ids=None) -> torch.Tensor:
        return self.train_losses(idx, targets, doc_ids).mean()


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
