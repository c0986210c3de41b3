"""Bits per byte on the val tokens: every target scored exactly once, exact byte counts.

Two contexts (EVAL_CONTEXT): "doc" scores each document from its own BOS, never seeing the document before it
(long documents in sliding windows inside the document); "sliding" runs the windows across document boundaries.
"""

import math
import os
from dataclasses import dataclass

import torch

from golf.config import GolfError, pick
from golf.data import SHARD_READS
from golf.dist import all_reduce_
from golf.tokenizer import SP_BOS_ID, token_bytes


@dataclass(frozen=True)
class EvalResult:
    val_loss: float  # mean NLL per token, nats
    val_bpb: float
    tokens: int  # targets scored
    bytes: int  # bytes those targets decode to


def target_byte_counts(val_tokens: torch.Tensor, luts, sidecar: torch.Tensor | None = None) -> torch.Tensor:
    """int64[len(val_tokens) - 1] on the LUTs' device: the bytes target j (val token j+1) adds to the text.

    The one place evaluation, TTT, the audit and bpb_check get byte counts from: every scorer sums this array over
    the targets it scores. sidecar: the data's val byte sidecar (int64[len(val_tokens)], from
    golf.data.load_val_byte_sidecar; CaseOps data has one): its entry j+1 is target j's original UTF-8 bytes.
    Without one, the LUT rule (golf.tokenizer.token_bytes)."""
    device = luts[0].device if luts is not None else torch.device("cpu")
    if sidecar is not None:
        if sidecar.shape != val_tokens.shape:
            raise GolfError(f"byte sidecar has {sidecar.numel()} entries for {val_tokens.numel()} val tokens")
        return sidecar[1:].to(device=device, dtype=torch.int64)
    return token_bytes(val_tokens[:-1].to(device), val_tokens[1:].to(device), luts)


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


def doc_spans(val_tokens: torch.Tensor) -> list[tuple[int, int]]:
    """(first target, targets) of each document: token s is its BOS and it predicts tokens s+1 .. the next BOS.

    Document d's targets are s_d .. s_{d+1} - 1 (the last one predicts the next document's BOS, the end of this
    one, from this document alone); the last document runs to the end of the stream. Tokens before the first BOS
    (a stream that does not start with one) form a document of their own. Together: every target once."""
    n = val_tokens.numel() - 1
    starts = (val_tokens[:n] == SP_BOS_ID).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0] + starts
    return [(s, e - s) for s, e in zip(starts, starts[1:] + [n])]


def doc_window_plan(val_tokens: torch.Tensor, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """window_plan inside each document: no window reaches back across a BOS into the previous document."""
    return [(s + start, length, first) for s, n in doc_spans(val_tokens)
            for start, length, first in window_plan(n, seq_len, stride)]


def sliding_window_plan(val_tokens: torch.Tensor, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """window_plan over the whole stream: windows run across document boundaries."""
    return window_plan(val_tokens.numel() - 1, seq_len, stride)


EVAL_CONTEXTS = {"doc": doc_window_plan, "sliding": sliding_window_plan}


def eval_windows(val_tokens: torch.Tensor, context: str, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """The windows that score every target once in this EVAL_CONTEXT."""
    return pick(EVAL_CONTEXTS, context, "EVAL_CONTEXT")(val_tokens, seq_len, stride)


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


def window_batches(windows: list[tuple[int, int, int]], batch_tokens: int) -> list[list[tuple[int, int, int]]]:
    """Windows grouped longest first into batches of about batch_tokens: rows of one batch have similar lengths,
    so short documents are not padded to a full window. Deterministic (a stable sort)."""
    ordered = sorted(windows, key=lambda w: -w[1])
    batches, i = [], 0
    while i < len(ordered):
        rows = max(1, batch_tokens // ordered[i][1])
        batches.append(ordered[i : i + rows])
        i += rows
    return batches


@torch.no_grad()
def score_windows(model, val_tokens: torch.Tensor, windows: list[tuple[int, int, int]], batch_tokens: int,
                  byte_counts: torch.Tensor, device, autocast_dtype=None, target_losses=None) -> torch.Tensor:
    """This rank's sums float64[3] (nll, targets, bytes) over `windows`, about batch_tokens tokens per forward.

    byte_counts: target_byte_counts(...) (or a sidecar's), on `device`.
    target_losses: optional float32[num_targets]; each scored target's NLL is written at its index.
    """
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    model.eval()
    for batch in window_batches(windows, batch_tokens):
        width = batch[0][1]
        x = torch.zeros(len(batch), width, dtype=torch.int64)
        y = torch.zeros_like(x)
        pos = torch.zeros_like(x)
        scored = torch.zeros_like(x, dtype=torch.bool)
        for row, (start, length, first) in enumerate(batch):
            x[row, :length] = val_tokens[start : start + length]
            y[row, :length] = val_tokens[start + 1 : start + length + 1]
            pos[row, :length] = torch.arange(start, start + length)
            scored[row, first:length] = True  # padding past `length` is never scored; attention is causal
        x, y, scored, pos = x.to(device), y.to(device), scored.to(device), pos.to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            nll = model.token_losses(x, y)
        nll, idx = nll[scored].float(), pos[scored]
        sums[0] += nll.double().sum()
        sums[1] += idx.numel()
        sums[2] += byte_counts[idx].double().sum()
        if target_losses is not None:
            target_losses[idx] = nll
    model.train()
    return sums


def eval_result(sums: torch.Tensor) -> EvalResult:
    """All ranks' sums (nll, targets, bytes), already reduced -> loss per token and bits per byte."""
    nll, tokens, nbytes = sums.tolist()
    return EvalResult(nll / tokens, nll / math.log(2) / nbytes, int(tokens), int(nbytes))


def eval_bpb(model, val_tokens: torch.Tensor, luts, seq_len: int, stride: int, batch_tokens: int,
             rank: int = 0, world_size: int = 1, device=torch.device("cpu"), autocast_dtype=None,
             target_losses=None, context: str = "sliding", byte_counts=None) -> EvalResult:
    """Score every val target once; windows are split over ranks and the sums reduced in float64.

    context: EVAL_CONTEXTS name. byte_counts: per-target bytes (default target_byte_counts(val_tokens, luts)).
    target_losses: optional zeroed float32[len(val_tokens) - 1], filled with every target's NLL on all ranks.
    """
    if byte_counts is None:
        byte_counts = target_byte_counts(val_tokens, luts)
    plan = eval_windows(val_tokens, context, seq_len, stride)
    sums = score_windows(model, val_tokens, plan[rank::world_size], batch_tokens, byte_counts.to(device), device,
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
