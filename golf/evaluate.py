"""Bits per byte on the val tokens: sliding windows, every target scored exactly once, exact byte counts."""

import math
import os
from dataclasses import dataclass

import torch

from golf.data import SHARD_READS
from golf.dist import all_reduce_


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


def split_plan(plan: list[tuple[int, int, int]], bounds: list[int]) -> list[list[tuple[int, int, int]]]:
    """The plan's windows cut at target boundaries: chunk i gets windows scoring only targets [bounds[i], bounds[i+1]).

    A window whose scored span crosses a boundary becomes two windows with the same start: the part
    before the boundary is shortened (attention is causal, so its scores do not change), the part
    after it scores from the boundary on. Every target keeps the context the plan gave it.
    """
    chunks: list[list[tuple[int, int, int]]] = [[] for _ in range(len(bounds) - 1)]
    c = 0
    for start, length, first in plan:
        lo, hi = start + first, start + length  # scored targets
        while lo < hi:
            while bounds[c + 1] <= lo:
                c += 1
            cut = min(hi, bounds[c + 1])
            chunks[c].append((start, cut - start, lo - start))
            lo = cut
    return chunks


@torch.no_grad()
def score_windows(model, val_tokens: torch.Tensor, windows: list[tuple[int, int, int]], seq_len: int,
                  batch_tokens: int, target_bytes: torch.Tensor, device, autocast_dtype=None,
                  target_losses=None) -> torch.Tensor:
    """This rank's sums float64[3] (nll, targets, bytes) over `windows`, batch_tokens // seq_len rows at a time.

    target_bytes: int64[num_targets] on CPU, the bytes each target counts (golf.tokenizer.val_target_bytes).

    target_losses: optional float32[num_targets]; each scored target's NLL is written at its index.
    """
    per_batch = max(1, batch_tokens // seq_len)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    model.eval()
    for i in range(0, len(windows), per_batch):
        batch = windows[i : i + per_batch]
        x = torch.zeros(len(batch), seq_len, dtype=torch.int64)
        y = torch.zeros_like(x)
        pos = torch.zeros_like(x)
        scored = torch.zeros_like(x, dtype=torch.bool)
        for row, (start, length, first) in enumerate(batch):
            x[row, :length] = val_tokens[start : start + length]
            y[row, :length] = val_tokens[start + 1 : start + length + 1]
            pos[row, :length] = torch.arange(start, start + length)
            scored[row, first:length] = True  # padding past `length` is never scored; attention is causal
        sums[2] += float(target_bytes[pos[scored]].sum())  # on CPU, before `scored` moves to the device
        x, y, scored = x.to(device), y.to(device), scored.to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            nll = model.token_losses(x, y)
        nll = nll[scored].float()
        sums[0] += nll.double().sum()
        sums[1] += scored.sum()
        if target_losses is not None:
            target_losses[pos.to(device)[scored]] = nll
    model.train()
    return sums


def eval_result(sums: torch.Tensor) -> EvalResult:
    """All ranks' sums (nll, targets, bytes), already reduced -> loss per token and bits per byte."""
    nll, tokens, nbytes = sums.tolist()
    return EvalResult(nll / tokens, nll / math.log(2) / nbytes, int(tokens), int(nbytes))


def eval_bpb(model, val_tokens: torch.Tensor, target_bytes: torch.Tensor, seq_len: int, stride: int,
             batch_tokens: int,
             rank: int = 0, world_size: int = 1, device=torch.device("cpu"), autocast_dtype=None,
             target_losses=None) -> EvalResult:
    """Score every val target once; windows are split over ranks and the sums reduced in float64.

    target_losses: optional zeroed float32[len(val_tokens) - 1], filled with every target's NLL on all ranks.
    """
    plan = window_plan(val_tokens.numel() - 1, seq_len, stride)
    sums = score_windows(model, val_tokens, plan[rank::world_size], seq_len, batch_tokens, target_bytes, device,
                         autocast_dtype, target_losses)
    all_reduce_(sums)
    if target_losses is not None:
        all_reduce_(target_losses)  # each target is written by one rank, zero elsewhere: the sum is exact
    return eval_result(sums)


def eval_phase_started() -> str:
    """Log line to write once training and calibration are done, before the val split is read.

    Lists the shards read so far (golf.data.SHARD_READS): tools/audit.py fails a run whose line
    names a val shard, i.e. a run whose training side touched val data.
    """
    names = [os.path.basename(p) for p in SHARD_READS]
    val = [n for n in names if "_val_" in n]
    return (f"eval_phase_started shard_reads:{len(names)} val_reads:{len(val)} "
            f"read:{','.join(sorted(set(names)))}")

