"""Bits per byte on the val tokens: sliding windows, every target scored exactly once, exact byte counts."""

import math
from dataclasses import dataclass

import torch

from golf.dist import all_reduce_
from golf.tokenizer import token_bytes


@dataclass(frozen=True)
class EvalResult:
    val_loss: float  # mean NLL per token, nats
    val_bpb: float
    tokens: int  # targets scored
    bytes: int  # bytes those targets decode to


def window_plan(num_targets: int, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows (start, length, first_scored) covering targets 0..num_targets-1 exactly once.

    Target j is val token j+1 predicted from tokens <= j. Window w feeds tokens [start, start+length)
    and scores its positions [first_scored, length): the first window scores all of its positions, each
    later one only its last `stride`, so each target is scored with the most context the window allows.
    """
    if not 0 < stride <= seq_len:
        raise ValueError(f"stride {stride} must be in 1..seq_len ({seq_len})")
    plan, start = [], 0
    while True:
        length = min(seq_len, num_targets - start)
        plan.append((start, length, 0 if start == 0 else seq_len - stride))
        if start + seq_len >= num_targets:
            return plan
        start += stride


@torch.no_grad()
def eval_bpb(model, val_tokens: torch.Tensor, luts, seq_len: int, stride: int, batch_tokens: int,
             rank: int = 0, world_size: int = 1, device=torch.device("cpu"), autocast_dtype=None) -> EvalResult:
    """Score every val target once; windows are split over ranks and the sums reduced in float64."""
    plan = window_plan(val_tokens.numel() - 1, seq_len, stride)
    mine = plan[rank::world_size]
    per_batch = max(1, batch_tokens // seq_len)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # nll, tokens, bytes
    model.eval()
    for i in range(0, len(mine), per_batch):
        batch = mine[i : i + per_batch]
        x = torch.zeros(len(batch), seq_len, dtype=torch.int64)
        y = torch.zeros_like(x)
        scored = torch.zeros_like(x, dtype=torch.bool)
        for row, (start, length, first) in enumerate(batch):
            x[row, :length] = val_tokens[start : start + length]
            y[row, :length] = val_tokens[start + 1 : start + length + 1]
            scored[row, first:length] = True  # padding past `length` is never scored; attention is causal
        x, y, scored = x.to(device), y.to(device), scored.to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            nll = model.token_losses(x, y)
        sums[0] += nll[scored].double().sum()
        sums[1] += scored.sum()
        sums[2] += token_bytes(x[scored], y[scored], luts).double().sum()
    model.train()
    all_reduce_(sums)
    nll, tokens, nbytes = sums.tolist()
    return EvalResult(nll / tokens, nll / math.log(2) / nbytes, int(tokens), int(nbytes))
