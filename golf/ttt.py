"""Score-first test-time training: stream the val targets in chunks; score a chunk, then adapt on it.

Legality (DESIGN.md): every target is scored once, by weights that have only been updated on targets
scored before it; one pass; never revisit a chunk. All ranks share one stream: they score different
windows of a chunk, then take the same step with gradients all-reduced over the whole chunk.
"""

import copy
import io
import math
import re
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from golf.config import pick
from golf.data import write_bytes_atomic
from golf.dist import all_reduce_
from golf.evaluate import eval_bpb, eval_result, score_windows, split_plan, window_plan
from golf.tokenizer import SP_BOS_ID


class LoRA(nn.Module):
    """Forward hook adding x A^T B^T to an nn.Linear's output. A: (rank, in), B: (out, rank) = 0 at the start,
    so the adapted model starts exactly at the artifact model."""

    def __init__(self, linear: nn.Linear, rank: int, generator: torch.Generator):
        super().__init__()
        out_features, in_features = linear.weight.shape
        a = torch.randn(rank, in_features, generator=generator) / math.sqrt(in_features)
        self.a = nn.Parameter(a.to(linear.weight.device))
        self.b = nn.Parameter(torch.zeros(out_features, rank, device=linear.weight.device))

    def forward(self, module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        return out + F.linear(F.linear(args[0], self.a), self.b)


def lora_targets(model: nn.Module, cfg) -> list[nn.Parameter]:
    """Rank-r LoRA on the attention and MLP matrices (nn.Linear named *.attn.* / *.mlp.*; not, e.g., the loop
    schedule's pass adapters); returns the adapter parameters."""
    gen = torch.Generator().manual_seed(cfg.seed)  # same A on every rank
    params = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and re.search(r"\.(attn|mlp)\.[^.]+$", name):
            module.ttt_lora = LoRA(module, cfg.ttt_lora_rank, gen)
            module.register_forward_hook(module.ttt_lora)
            params += [module.ttt_lora.a, module.ttt_lora.b]
    return params


def mlp_proj_targets(model: nn.Module, cfg) -> list[nn.Parameter]:
    """The MLP down-projections, in full (what the seed file adapts)."""
    return [p for name, p in model.named_parameters() if re.search(r"mlp\.proj\.weight$", name)]


def all_targets(model: nn.Module, cfg) -> list[nn.Parameter]:
    """Every weight of the model."""
    return list(model.parameters())


TTT_TARGETS = {"lora": lora_targets, "mlp_proj": mlp_proj_targets, "all": all_targets}


def ttt_model(model: nn.Module, cfg) -> tuple[nn.Module, list[nn.Parameter]]:
    """A copy of model (the caller's stays untouched) whose TTT_PARAMS pieces alone require grad."""
    model = copy.deepcopy(model)
    model.requires_grad_(False)
    params = pick(TTT_TARGETS, cfg.ttt_params, "TTT_PARAMS")(model, cfg)
    for p in params:
        p.requires_grad_(True)
    return model, params


def ttt_chunk_bounds(val_tokens: torch.Tensor, chunk_tokens: int, reset_per_doc: bool) -> tuple[list[int], list[bool]]:
    """Target boundaries [0, ..., N] of the chunks (N = len(val_tokens) - 1) and, per chunk, whether
    adaptation restarts there. With reset_per_doc, chunks also break where a document starts: at
    target p when token p is BOS (target p predicts the document's first token from BOS)."""
    n = val_tokens.numel() - 1
    doc_starts = [0]
    if reset_per_doc:
        doc_starts += (val_tokens[1:n] == SP_BOS_ID).nonzero().flatten().add(1).tolist()
    bounds, resets = [], []
    for s, e in zip(doc_starts, doc_starts[1:] + [n]):
        starts = list(range(s, e, chunk_tokens))
        bounds += starts
        resets += [reset_per_doc and b == s for b in starts]
    return bounds + [n], resets


def chunk_rows(num_targets: int, seq_len: int) -> list[tuple[int, int]]:
    """(offset, length) training rows of at most seq_len targets covering a chunk's targets."""
    return [(s, min(seq_len, num_targets - s)) for s in range(0, num_targets, seq_len)]


def chunk_batch(chunk: torch.Tensor, rows: list[tuple[int, int]], seq_len: int, device):
    """(x, y, mask) of shape (len(rows), seq_len) for rows (offset, length) of a chunk's tokens; mask 1 on real targets."""
    x = torch.zeros(len(rows), seq_len, dtype=torch.int64)
    y = torch.zeros_like(x)
    mask = torch.zeros(len(rows), seq_len)
    for row, (offset, length) in enumerate(rows):
        x[row, :length] = chunk[offset : offset + length]
        y[row, :length] = chunk[offset + 1 : offset + length + 1]
        mask[row, :length] = 1.0
    return x.to(device), y.to(device), mask.to(device)


def adapt_on_chunk(model, opt, params, chunk: torch.Tensor, seq_len: int, steps: int, rank: int, world_size: int,
                   device, autocast_dtype) -> None:
    """`steps` optimiser steps on the mean NLL of an already-scored chunk (tokens lo..hi: targets lo..hi-1).

    Each rank takes every world_size-th row, all in one micro-batch (at most TTT_CHUNK_TOKENS tokens, a
    fraction of a training micro-batch); gradients are summed over ranks, so all ranks step alike.
    """
    n = chunk.numel() - 1
    mine = chunk_rows(n, seq_len)[rank::world_size]
    model.eval()  # learn the forward that scores: the loop schedule runs its evaluation depth in eval mode
    for _ in range(steps):
        for p in params:
            p.grad = torch.zeros_like(p)
        if mine:
            x, y, mask = chunk_batch(chunk, mine, seq_len, device)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                nll = model.token_losses(x, y)
            ((nll.float() * mask).sum() / n).backward()
        for p in params:
            all_reduce_(p.grad)
        opt.step()


def score_first_ttt(model, val_tokens: torch.Tensor, target_bytes: torch.Tensor, cfg, rank: int = 0,
                    world_size: int = 1,
                    device=torch.device("cpu"), autocast_dtype=None, target_losses=None):
    """BPB of the val tokens under score-first TTT (one pass). The caller's model is not changed.

    Windows are window_plan's (sw_seq_len, sw_stride), cut at chunk boundaries (split_plan), so each
    target gets the context plain sliding-window eval gives it. target_losses: as in eval_bpb.
    """
    model, params = ttt_model(model, cfg)
    initial = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=cfg.ttt_lr)
    plan = window_plan(val_tokens.numel() - 1, cfg.sw_seq_len, cfg.sw_stride)
    bounds, resets = ttt_chunk_bounds(val_tokens, cfg.ttt_chunk_tokens, cfg.ttt_reset_per_doc)
    chunks = split_plan(plan, bounds)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    for i, windows in enumerate(chunks):
        if resets[i]:
            with torch.no_grad():
                for p, p0 in zip(params, initial):
                    p.copy_(p0)
            opt = torch.optim.Adam(params, lr=cfg.ttt_lr)
        # Score first, with the weights as they are; only then learn from this chunk.
        sums += score_windows(model, val_tokens, windows[rank::world_size], cfg.sw_seq_len, cfg.val_batch_tokens,
                              target_bytes, device, autocast_dtype, target_losses)
        if i + 1 < len(chunks) and not resets[i + 1]:  # an update nothing will be scored with is skipped
            adapt_on_chunk(model, opt, params, val_tokens[bounds[i] : bounds[i + 1] + 1], cfg.sw_seq_len,
                           cfg.ttt_steps, rank, world_size, device, autocast_dtype)
    all_reduce_(sums)
    if target_losses is not None:
        all_reduce_(target_losses)
    return eval_result(sums)


def seconds_of(fn, device) -> float:
    """Wall seconds of fn()'s second call (the first warms kernels and allocators)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def eval_plan_lines(model, val_tokens: torch.Tensor, cfg, world_size: int, device, autocast_dtype) -> list[str]:
    """What the final eval will do and how long it should take, against the eval budget (EVAL_MAX_SECONDS).

    One full batch of windows (and, with TTT, one adaptation step's forward+backward) is timed on random
    tokens; the estimate is seconds per row times the rows each rank scores (padding rows cost as much as
    full ones), plus seconds per step times the steps (every chunk but the last).
    """
    seq_len, per_batch = cfg.sw_seq_len, max(1, cfg.val_batch_tokens // cfg.sw_seq_len)
    plan = window_plan(val_tokens.numel() - 1, seq_len, cfg.sw_stride)
    x = torch.randint(0, cfg.vocab_size, (per_batch, seq_len), generator=torch.Generator().manual_seed(0)).to(device)

    def score_batch():
        with torch.no_grad(), torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            model.token_losses(x, x)

    row_s = seconds_of(score_batch, device) / per_batch
    sliding_rows = math.ceil(len(plan) / world_size)
    claimed_s = sliding_rows * row_s
    lines = [f"eval_plan sliding: targets:{val_tokens.numel() - 1} windows:{len(plan)} seq_len:{seq_len} "
             f"stride:{cfg.sw_stride} rows_per_rank:{sliding_rows} row_ms:{row_s * 1000:.2f} est:{claimed_s:.1f}s"]
    if cfg.ttt_enabled:
        adapted, _ = ttt_model(model, cfg)
        adapted.eval()
        bounds, _ = ttt_chunk_bounds(val_tokens, cfg.ttt_chunk_tokens, cfg.ttt_reset_per_doc)
        chunks = split_plan(plan, bounds)
        step_rows = math.ceil(math.ceil(cfg.ttt_chunk_tokens / seq_len) / world_size)  # a rank's rows per TTT step

        xt = torch.randint(0, cfg.vocab_size, (step_rows, seq_len), generator=torch.Generator().manual_seed(1)).to(device)

        def train_step_batch():
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                adapted.token_losses(xt, xt).mean().backward()

        step_s = seconds_of(train_step_batch, device)
        score_rows = sum(math.ceil(len(w) / world_size) for w in chunks)
        claimed_s = score_rows * row_s + cfg.ttt_steps * (len(chunks) - 1) * step_s
        lines.append(f"eval_plan ttt: chunks:{len(chunks)} chunk_tokens:{cfg.ttt_chunk_tokens} steps:{cfg.ttt_steps} "
                     f"params:{cfg.ttt_params} score_rows_per_rank:{score_rows} rows_per_step:{step_rows} "
                     f"step_ms:{step_s * 1000:.1f} est:{claimed_s:.1f}s")
    lines.append(f"eval_plan claimed_eval_est:{claimed_s:.1f}s budget:{cfg.eval_max_seconds:.0f}s "
                 f"({'ttt' if cfg.ttt_enabled else 'sliding'}; timed on one batch of random tokens)")
    return lines


def final_eval(model, val_tokens: torch.Tensor, target_bytes: torch.Tensor, cfg, rank: int, world_size: int, device,
               autocast_dtype,
               log) -> None:
    """Score the reloaded artifact model: the plain round trip, then (TTT_ENABLED) score-first TTT.

    Logs the targets, bytes and seconds of each eval, then `final_roundtrip` and `final_ttt` lines.
    With DUMP_VAL_LOSSES, rank 0 writes the claimed eval's (TTT's when on) per-target NLL as float32 .npy.
    """
    dump = torch.zeros(val_tokens.numel() - 1, device=device) if cfg.dump_val_losses else None
    t0 = time.perf_counter()
    plain = eval_bpb(model, val_tokens, target_bytes, cfg.sw_seq_len, cfg.sw_stride, cfg.val_batch_tokens, rank,
                     world_size, device, autocast_dtype, None if cfg.ttt_enabled else dump)
    plain_s = time.perf_counter() - t0
    log(f"roundtrip val_tokens:{plain.tokens} val_bytes:{plain.bytes} time:{plain_s:.1f}s")
    if cfg.ttt_enabled:
        t0 = time.perf_counter()
        ttt = score_first_ttt(model, val_tokens, target_bytes, cfg, rank, world_size, device, autocast_dtype, dump)
        log(f"ttt val_loss:{ttt.val_loss:.8f} val_bpb:{ttt.val_bpb:.8f} val_tokens:{ttt.tokens} "
            f"val_bytes:{ttt.bytes} time:{time.perf_counter() - t0:.1f}s")
    log(f"final_roundtrip val_loss:{plain.val_loss:.8f} val_bpb:{plain.val_bpb:.8f}")
    if cfg.ttt_enabled:
        log(f"final_ttt val_loss:{ttt.val_loss:.8f} val_bpb:{ttt.val_bpb:.8f}")
    if dump is not None and rank == 0:
        buf = io.BytesIO()
        np.save(buf, dump.cpu().numpy())
        write_bytes_atomic(cfg.dump_val_losses, buf.getvalue())
