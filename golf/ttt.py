"""Score-first test-time training, and the plan of the whole final evaluation.

Two TTT modes (TTT_MODE):
  "doc" (default, the 2026-04-27 record's design): documents one by one from their own BOS, in batches of
      TTT_DOC_BATCH documents of similar length, longest first; each document's targets in chunks of
      TTT_DOC_CHUNK_TOKENS: a chunk is scored, then one AdamW step of that document's own LoRA on it; adapters
      reset per document. Between batches, after TTT_PHASE_PREFIX_DOCS / TTT_PHASES documents are scored, a global
      SGD phase trains all weights on the documents scored so far, never on one not yet scored.
  "stream": one LoRA stream over sliding windows across documents, chunk by chunk (the earlier golf default).
Legality (DESIGN.md, issues #677 / #1017): every target is scored once, by weights updated only on targets scored
before it; one pass; nothing is re-scored. Warm-up and timing forwards use random tokens, never val.
The eval plan (eval_passes) is the one declaration of what the final evaluation does, pass by pass; the run logs
it, tools/preflight.py predicts its seconds from it, and the TTT loop's budget guard counts its work in its units.
"""

import copy
import io
import math
import re
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from golf.config import GolfError, pick
from golf.data import document_ids, write_bytes_atomic
from golf.dist import all_reduce_
from golf.evaluate import (doc_spans, eval_bpb, eval_result, eval_windows, score_windows, split_plan,
                           target_byte_counts, window_batches, window_plan)
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


def score_first_ttt(model, val_tokens: torch.Tensor, luts, cfg, rank: int = 0, world_size: int = 1,
                    device=torch.device("cpu"), autocast_dtype=None, target_losses=None, byte_counts=None,
                    score_order=None, deadline: float | None = None, log=None, **_):
    """BPB of the val tokens under stream score-first TTT (TTT_MODE=stream, one pass). The caller's model is not
    changed.

    Windows are window_plan's (sw_seq_len, sw_stride), cut at chunk boundaries (split_plan), so each
    target gets the context plain sliding-window eval gives it. target_losses, byte_counts: as in eval_bpb.
    score_order: optional int64[num_targets], filled with each target's chunk index (its scoring step).
    deadline: time.perf_counter() by which the pass must end; once the chunks so far say finishing with
    adaptation would pass it, adaptation stops on every rank at once and the rest is scored as is (logged).
    """
    if byte_counts is None:
        byte_counts = target_byte_counts(val_tokens, luts)
    byte_counts = byte_counts.to(device)
    model, params = ttt_model(model, cfg)
    initial = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=cfg.ttt_lr)
    plan = window_plan(val_tokens.numel() - 1, cfg.sw_seq_len, cfg.sw_stride)
    bounds, resets = ttt_chunk_bounds(val_tokens, cfg.ttt_chunk_tokens, cfg.ttt_reset_per_doc)
    chunks = split_plan(plan, bounds)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    adapting, t0 = True, time.perf_counter()
    for i, windows in enumerate(chunks):
        if resets[i]:
            with torch.no_grad():
                for p, p0 in zip(params, initial):
                    p.copy_(p0)
            opt = torch.optim.Adam(params, lr=cfg.ttt_lr)
        # Score first, with the weights as they are; only then learn from this chunk.
        sums += score_windows(model, val_tokens, windows[rank::world_size], cfg.val_batch_tokens, byte_counts,
                              device, autocast_dtype, target_losses)
        if score_order is not None:
            score_order[bounds[i] : bounds[i + 1]] = i
        if adapting and deadline is not None:
            now = time.perf_counter()  # chunks so far (scored + adapted) predict the rest at the same rate
            late = torch.tensor([float(now + (now - t0) / (i + 1) * (len(chunks) - i - 1) > deadline)], device=device)
            if all_reduce_(late, op=torch.distributed.ReduceOp.MAX).item() > 0:  # ranks step together: stop together
                adapting = False
                if log:
                    log(f"ttt_guard: stream TTT stopped adapting after chunk {i + 1}/{len(chunks)} at {now - t0:.1f}s: "
                        f"finishing with adaptation was predicted past the eval budget; scoring the rest as is")
        if adapting and i + 1 < len(chunks) and not resets[i + 1]:  # an update nothing will be scored with is skipped
            adapt_on_chunk(model, opt, params, val_tokens[bounds[i] : bounds[i + 1] + 1], cfg.sw_seq_len,
                           cfg.ttt_steps, rank, world_size, device, autocast_dtype)
    all_reduce_(sums)
    if target_losses is not None:
        all_reduce_(target_losses)
    return eval_result(sums)


# ---------------------------------------------------------------- per-document batched LoRA + phased global SGD
# Adapters per virtual layer (R:1509-1566, the record's BatchedTTTLoRA with ttt_k_lora / ttt_o_lora / ttt_mlp_lora all
# True): Q, K, V on their nn.Linear; O and MLP on the attention and MLP modules: each of those reads its module's input
# (the normed block input) and adds to the module's output, as the record's o_loras(n) and mlp_loras(mlp_n) do.
DOC_LORA_MODULES = re.compile(r"\.attn(\.q|\.k|\.v)?$|\.mlp$")
DOC_LORA_KINDS = ("q", "k", "v", "proj", "mlp")  # what TTT_DOC_LORA_OFF may name ("proj": the O adapter on .attn)


def doc_lora_kind(name: str) -> str:
    """The DOC_LORA_KINDS entry of an adapted module's name: its last part, the attention module's being O."""
    last = name.rsplit(".", 1)[-1]
    return "proj" if last == "attn" else last


def doc_lora_off(cfg) -> set[str]:
    """The DOC_LORA_KINDS that get no adapter (TTT_DOC_LORA_OFF, comma-separated; PR #2101 TTT_MASK=no_qv: q,v)."""
    off = {k.strip() for k in cfg.ttt_doc_lora_off.split(",") if k.strip()}
    unknown = sorted(off - set(DOC_LORA_KINDS))
    if unknown:
        raise GolfError(f"TTT_DOC_LORA_OFF={cfg.ttt_doc_lora_off!r}: unknown target(s) {', '.join(unknown)} "
                        f"(choices: {', '.join(DOC_LORA_KINDS)})")
    return off


class DocLoRA(nn.Module):
    """Batched LoRA: row b of a forward gets its own adapters, one set per virtual layer slot (a looped block's
    modules run once per pass; each run is a slot), on Q/K/V/O, each MLP and the tied head (less TTT_DOC_LORA_OFF).

    Adapter (A, B) maps x -> x A^T B^T * alpha / rank; A (rows, rank, in) uniform(+-1/sqrt(in)) from draw_a(key),
    B (rows, out, rank) zero, so a fresh set starts exactly at the base model. reset() zeroes B before each batch;
    with warm start (the record's TTT_WARM_START_A=1) A keeps what earlier batches taught it, else it is redrawn.
    """

    def __init__(self, model: nn.Module, cfg, rows: int, device, key: int):
        super().__init__()
        self.scale = cfg.ttt_doc_lora_alpha / cfg.ttt_doc_lora_rank
        self.warm_start_a = cfg.ttt_doc_warm_start_a
        self.seed = cfg.seed
        off = doc_lora_off(cfg)
        self.modules_ = [(name, m) for name, m in model.named_modules()
                         if DOC_LORA_MODULES.search(name) and doc_lora_kind(name) not in off]
        slots = slot_counts(model, [m for _, m in self.modules_], cfg, device)
        dim, vocab = model.tok_emb.embedding_dim, model.tok_emb.num_embeddings
        self.a, self.b = nn.ParameterList(), nn.ParameterList()
        self.index = {}  # module -> its first adapter; call k of the module in a forward uses adapter index + k
        for name, m in self.modules_:
            out_f, in_f = m.weight.shape if isinstance(m, nn.Linear) else (dim, dim)
            self.index[m] = len(self.a)
            for _ in range(slots[m]):
                self.add(rows, in_f, out_f, cfg.ttt_doc_lora_rank, device)
        self.head = len(self.a)
        self.add(rows, dim, vocab, cfg.ttt_doc_lora_rank, device)
        self.draw_a(key)
        self.calls: dict[nn.Module, int] = {}
        self.rows = None
        self.enabled = False
        self.handles = [m.register_forward_hook(self.hook) for _, m in self.modules_]

    def add(self, rows: int, in_f: int, out_f: int, rank: int, device) -> None:
        self.a.append(nn.Parameter(torch.empty(rows, rank, in_f, device=device)))
        self.b.append(nn.Parameter(torch.zeros(rows, out_f, rank, device=device)))

    def draw_a(self, key: int) -> None:
        """Every A uniform(+-1/sqrt(in)) from a generator seeded by (seed, key), so the draw depends on which batch
        or phase this is, not on which rank runs it or what it ran before."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + key)
        with torch.no_grad():
            for a in self.a:
                bound = 1.0 / math.sqrt(a.shape[-1])
                a.copy_(((torch.rand(a.shape, generator=gen) * 2 - 1) * bound).to(a.device))

    def reset(self, key: int) -> None:
        """Before a batch: zero B; without warm start also redraw A."""
        with torch.no_grad():
            for b in self.b:
                b.zero_()
        if not self.warm_start_a:
            self.draw_a(key)

    def begin(self, rows: torch.Tensor | None) -> None:
        """Before each forward: which adapter rows the batch's rows use (None: adapters off)."""
        self.enabled = rows is not None
        self.rows = rows
        self.calls = {}

    def delta(self, i: int, x: torch.Tensor) -> torch.Tensor:
        a, b = self.a[i][self.rows], self.b[i][self.rows]
        return torch.bmm(torch.bmm(x, a.transpose(1, 2).to(x.dtype)), b.transpose(1, 2).to(x.dtype)) * self.scale

    def hook(self, module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return out
        k = self.calls.get(module, 0)
        self.calls[module] = k + 1
        return out + self.delta(self.index[module] + k, args[0]).to(out.dtype)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def slot_counts(model: nn.Module, modules: list[nn.Module], cfg, device) -> dict[nn.Module, int]:
    """How often each module runs in one evaluation forward (random tokens, never val)."""
    counts = {m: 0 for m in modules}
    handles = [m.register_forward_hook(lambda mod, a, o: counts.__setitem__(mod, counts[mod] + 1)) for m in modules]
    model.eval()
    with torch.no_grad():
        model.token_losses(torch.randint(4, cfg.vocab_size, (1, 8), device=device),
                           torch.randint(4, cfg.vocab_size, (1, 8), device=device))
    for h in handles:
        h.remove()
    return counts


def doc_lora_losses(model, lora: DocLoRA | None, rows: torch.Tensor | None, x: torch.Tensor, y: torch.Tensor,
                    autocast_dtype) -> torch.Tensor:
    """Per-token NLL (len(rows), T) of the model (as GPT.token_losses) with adapter rows `rows` (lora None: none)."""
    if lora is not None:
        lora.begin(rows)
    with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        h = model.hidden(x)
        logits = model.project(h)
        if lora is not None:
            logits = logits + lora.delta(lora.head, h).to(logits.dtype)
    if lora is not None:
        lora.begin(None)
    return model.head_nll(logits, y)


@dataclass(frozen=True)
class DocSchedule:
    """Who scores which documents when, as the record's eval_val_ttt_phased (R:2815-2826, R:3021-3310) does it.

    Documents sorted by length (stable) are cut into batches of TTT_DOC_BATCH: batches[i] is the record's batch i, its
    documents shortest first (row b of a batch's adapters is its b-th document). Batches are scored longest first
    (a stable sort on each batch's longest document), so the one short batch, the remainder, holds the longest
    documents and goes first. The phases cut that order into segments; inside a segment each rank scores its share
    (in order, to the least loaded rank, as the record's shared claim counter hands them out) with no
    synchronisation; phase i follows segment i, all ranks together, and trains on phase_docs[i], all scored by then."""
    batches: list[list[int]]  # document indices
    segments: list[list[list[int]]]  # segment -> rank -> batch indices, in scoring order
    phase_docs: list[list[int]]  # the documents phase i trains on, in its token order

    def batches_of(self, rank: int) -> list[tuple[int, int, int]]:
        """(segment, position on this rank, batch index) of every batch this rank scores, in order."""
        return [(si, bi, b) for si, seg in enumerate(self.segments) for bi, b in enumerate(seg[rank])]


def doc_schedule(doc_lengths: list[int], cfg, world_size: int) -> DocSchedule:
    by_length = sorted(range(len(doc_lengths)), key=lambda d: doc_lengths[d])
    batches = [by_length[i : i + cfg.ttt_doc_batch] for i in range(0, len(by_length), cfg.ttt_doc_batch)]
    order = sorted(range(len(batches)), key=lambda b: -doc_lengths[batches[b][-1]])
    scored = [0]  # scored[j]: documents in the first j batches of the order
    for b in order:
        scored.append(scored[-1] + len(batches[b]))
    prefix = min(cfg.ttt_phase_prefix_docs, len(doc_lengths)) if cfg.ttt_phases > 0 else 0
    edges, phase_docs = [0], []
    for i in range(cfg.ttt_phases if prefix else 0):
        boundary = prefix * (i + 1) // cfg.ttt_phases
        # A phase starts once the batch that brings the scored documents to its boundary is done, and every other
        # rank has finished the batch it holds: the record's logs show 1296 / 2128 / 2960 documents scored at
        # boundaries 833 / 1666 / 2500 on 8 ranks, the crossing batch of 64 plus 7 more each time.
        k = edges[-1]
        while k + 1 < len(order) and scored[k + 1] < boundary:
            k += 1
        end = min(k + world_size, len(order))
        if end == len(order):
            break  # nothing is scored after it: a phase here would train for nothing
        edges.append(end)
        # The record trains on the first `boundary` documents scored, ordered by batch index, then row (R:3258-3262).
        phase_docs.append([d for b in sorted(order[:end]) for d in batches[b]][:boundary])
    segments = []
    for lo, hi in zip(edges, edges[1:] + [len(order)]):
        per_rank, load = [[] for _ in range(world_size)], [0] * world_size
        for b in order[lo:hi]:
            r = load.index(min(load))
            per_rank[r].append(b)
            load[r] += batch_units([doc_lengths[d] for d in batches[b]], cfg)
        segments.append(per_rank)
    return DocSchedule(batches, segments, phase_docs)


def doc_chunks(n: int, chunk: int, seq_len: int):
    """(lo, hi, window start) per chunk of a document's n targets: targets [lo, hi) scored in a window of at most
    seq_len tokens ending at hi, i.e. targets [ws, hi) of the document fed (doc-isolated: ws >= 0)."""
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        yield lo, hi, max(0, hi - seq_len)


def doc_batch_work(lengths: list[int], cfg, adapt: bool) -> tuple[int, int]:
    """(tokens forward only, tokens forward + backward) of one batch of documents, padding included."""
    c, L = cfg.ttt_doc_chunk_tokens, cfg.sw_seq_len
    nch = [math.ceil(n / c) for n in lengths]
    fwd = bwd = 0
    for ci in range(max(nch, default=0)):
        rows = sum(ci < k for k in nch)
        tokens = rows * min(L, (ci + 1) * c)
        if adapt and any(ci < k - 1 for k in nch):
            bwd += tokens
        else:
            fwd += tokens
    return fwd, bwd


def batch_units(lengths: list[int], cfg) -> int:
    """A batch's work in forward-token units (a forward + backward counts three): the guard's and balancer's measure."""
    fwd, bwd = doc_batch_work(lengths, cfg, True)
    return fwd + 3 * bwd


def phase_steps(num_tokens: int, cfg, world_size: int) -> list[tuple[float, list[tuple[int, int]]]]:
    """Global SGD over num_tokens + 1 tokens as the record's train_val_ttt_global_sgd_distributed (R:2926-3018): per
    step its lr and, per rank, (first token, sequences of sw_seq_len tokens). Chunks of TTT_PHASE_CHUNK_TOKENS, cosine
    lr from TTT_PHASE_LR to 0 over the chunks (the last one's lr would be 0: skipped); a chunk's whole sequences are
    split over the ranks in contiguous ranges, each rank taking TTT_PHASE_BATCH_SEQS of its range per step."""
    chunk, L, per = cfg.ttt_phase_chunk_tokens, cfg.sw_seq_len, cfg.ttt_phase_batch_seqs
    num_chunks = math.ceil(num_tokens / chunk)
    steps = []
    for ci in range(num_chunks - 1):
        lr = cfg.ttt_phase_lr * 0.5 * (1 + math.cos(math.pi * ci / (num_chunks - 1)))
        lo = ci * chunk
        seqs = (min(lo + chunk, num_tokens) - lo) // L
        ranges = [(seqs * r // world_size, seqs * (r + 1) // world_size) for r in range(world_size)]
        for k in range(0, max(e - s for s, e in ranges), per):
            steps.append((lr, [(lo + (s + k) * L, max(0, min(per, e - s - k))) for s, e in ranges]))
    return steps


def ttt_global_phase(model, tokens: torch.Tensor, cfg, rank: int, world_size: int, device, autocast_dtype) -> int:
    """SGD (momentum, grad clip) on all weights over `tokens` (documents already scored); returns steps taken.

    Each rank's loss is the mean over its own sequences, and the gradient the mean over ranks (the record's)."""
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=cfg.ttt_phase_lr, momentum=cfg.ttt_phase_momentum)
    L = cfg.sw_seq_len
    steps = phase_steps(tokens.numel() - 1, cfg, world_size)
    model.eval()  # learn the forward that scores (the loop schedule's evaluation depth)
    for lr, per_rank in steps:
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=False)
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        start, seqs = per_rank[rank]
        if seqs:
            # One row of this rank's sequences, attention cut at every BOS and every sw_seq_len tokens from a
            # document's start: the record's cu_seqlens over its flat batch (R:2983-2996).
            flat = tokens[start : start + seqs * L + 1].to(device)
            x, y = flat[None, :-1], flat[None, 1:]
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                # the record's phase trains through its training forward
                nll = model.train_losses(x, y, document_ids(x, cap=L))
            (nll.float().sum() / (seqs * L * world_size)).backward()
        for p in params:
            all_reduce_(p.grad)
        if cfg.ttt_phase_grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.ttt_phase_grad_clip)
        opt.step()
    for p in params:
        p.requires_grad_(False)
        p.grad = None
    return len(steps)


def doc_chunk_batch(val_tokens: torch.Tensor, docs: list[tuple[int, int]], chunks: list[list], ci: int):
    """Chunk ci of each document that has one, padded into one batch: (rows: those documents' indices, x, y, pos:
    each cell's target index, scored: the chunk's own targets (not its context), weight: 1 / the chunk's length on
    those targets of documents with a later chunk to train for, else 0)."""
    rows = [b for b in range(len(docs)) if ci < len(chunks[b])]
    width = max(chunks[b][ci][1] - chunks[b][ci][2] for b in rows)
    x = torch.zeros(len(rows), width, dtype=torch.int64)
    y, pos = torch.zeros_like(x), torch.zeros_like(x)
    scored = torch.zeros_like(x, dtype=torch.bool)
    weight = torch.zeros(len(rows), width)
    for r, b in enumerate(rows):
        s, _ = docs[b]
        lo, hi, ws = chunks[b][ci]
        x[r, : hi - ws] = val_tokens[s + ws : s + hi]
        y[r, : hi - ws] = val_tokens[s + ws + 1 : s + hi + 1]
        pos[r, : hi - ws] = torch.arange(s + ws, s + hi)
        scored[r, lo - ws : hi - ws] = True
        if ci < len(chunks[b]) - 1:
            weight[r, lo - ws : hi - ws] = 1.0 / (hi - lo)  # each document: the mean over its chunk
    return rows, x, y, pos, scored, weight


def ttt_score_doc_batch(model, lora: DocLoRA | None, val_tokens: torch.Tensor, docs: list[tuple[int, int]], cfg, device,
                    autocast_dtype, byte_counts, sums, target_losses, score_order, tick: int) -> None:
    """Score a batch of documents chunk by chunk; with lora, after each chunk one AdamW step of each document's own
    adapters on the chunk just scored (the chunk's scores are summed before the step exists)."""
    c, L = cfg.ttt_doc_chunk_tokens, cfg.sw_seq_len
    chunks = [list(doc_chunks(n, c, L)) for _, n in docs]
    opt = None
    if lora is not None:  # a fresh optimiser per batch (the record zeroes its AdamW state, R:3110-3116)
        opt = torch.optim.AdamW(list(lora.parameters()), lr=cfg.ttt_doc_lora_lr, eps=1e-10,
                                betas=(cfg.ttt_doc_beta1, cfg.ttt_doc_beta2), weight_decay=cfg.ttt_doc_weight_decay)
    model.eval()
    for ci in range(max(len(ch) for ch in chunks)):
        rows, *batch = doc_chunk_batch(val_tokens, docs, chunks, ci)
        train = lora is not None and any(ci < len(chunks[b]) - 1 for b in rows)
        x, y, pos, scored, weight = (t.to(device) for t in batch)
        with torch.set_grad_enabled(train):
            nll = doc_lora_losses(model, lora, torch.tensor(rows, device=device), x, y, autocast_dtype)
        # Score first: the chunk's losses are summed now, by adapters that have not seen it.
        got, idx = nll.detach()[scored].float(), pos[scored]
        sums[0] += got.double().sum()
        sums[1] += idx.numel()
        sums[2] += byte_counts[idx].double().sum()
        if target_losses is not None:
            target_losses[idx] = got
        if score_order is not None:
            score_order[idx] = tick + ci
        if train:
            opt.zero_grad(set_to_none=False)
            (nll.float() * weight).sum().backward()  # rows have their own adapters: one sum trains each alone
            opt.step()


SEGMENT_TICKS, BATCH_TICKS = 1 << 40, 1 << 20  # score_order: segment * SEGMENT_TICKS + batch * BATCH_TICKS + chunk


def doc_ttt(model, val_tokens: torch.Tensor, luts, cfg, rank: int = 0, world_size: int = 1,
            device=torch.device("cpu"), autocast_dtype=None, target_losses=None, byte_counts=None, score_order=None,
            deadline: float | None = None, log=None):
    """BPB under per-document batched LoRA TTT with phased global SGD (TTT_MODE=doc). The caller's model is unchanged.

    doc_schedule says which rank scores which batch; after each segment every rank trains the same global SGD phase
    on documents scored so far, then the adapters start over (A redrawn, as the record builds new ones). deadline (a
    time.perf_counter() value): when this rank's measured rate says finishing with adaptation would pass it, the rank
    stops adapting (no more LoRA steps; phases stop for all ranks at the next phase) and keeps scoring; logged.
    score_order: optional int64[num_targets] of each target's scoring step on its rank (segment, batch, chunk), for
    tools/audit.py.
    """
    if byte_counts is None:
        byte_counts = target_byte_counts(val_tokens, luts)
    byte_counts = byte_counts.to(device)
    model = copy.deepcopy(model)
    model.requires_grad_(False)
    docs = doc_spans(val_tokens)
    lengths = [n for _, n in docs]
    sched = doc_schedule(lengths, cfg, world_size)
    adapting = cfg.ttt_doc_lora_lr > 0 or bool(sched.phase_docs)
    lora = DocLoRA(model, cfg, cfg.ttt_doc_batch, device, key=-1) if cfg.ttt_doc_lora_lr > 0 else None
    mine = sched.batches_of(rank)
    units = [batch_units([lengths[d] for d in sched.batches[b]], cfg) for _, _, b in mine]
    phase_units = [3 * (sum(lengths[d] + 1 for d in pd) // world_size) for pd in sched.phase_docs]
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    t0, done_units, k = time.perf_counter(), 0, 0
    for si, seg in enumerate(sched.segments):
        for bi, b in enumerate(seg[rank]):
            batch = [docs[d] for d in sched.batches[b]]
            adapters = lora if adapting else None
            if adapters is not None and len(batch) < cfg.ttt_doc_batch:
                # The record gives a batch of another size its own fresh adapters and keeps the warm set (R:3117-3123).
                adapters = DocLoRA(model, cfg, len(batch), device, key=batch[0][0])
            elif adapters is not None:
                adapters.reset(key=batch[0][0])  # keyed by the batch's first document (its first target)
            ttt_score_doc_batch(model, adapters, val_tokens, batch, cfg, device, autocast_dtype, byte_counts, sums,
                                target_losses, score_order, si * SEGMENT_TICKS + bi * BATCH_TICKS)
            if adapters is not None and adapters is not lora:
                adapters.remove()
            done_units += units[k]
            k += 1
            if adapting and deadline is not None:
                now = time.perf_counter()
                rest = sum(units[k:]) + sum(phase_units[si:])
                if now + (now - t0) / max(done_units, 1) * rest > deadline:
                    adapting = False
                    if log:
                        log(f"ttt_guard: rank {rank} stopped adapting after {k}/{len(mine)} batches at {now - t0:.1f}s: "
                            f"finishing with adaptation was predicted past the eval budget; scoring the rest as is")
        if si < len(sched.phase_docs):
            stopped = torch.tensor([float(not adapting)], device=device)
            if all_reduce_(stopped, op=torch.distributed.ReduceOp.MAX).item() > 0:
                if adapting and log:
                    log(f"ttt_guard: phase {si + 1}/{len(sched.phase_docs)} and later skipped: another rank stopped "
                        f"adapting")
                adapting = False  # a phase needs every rank; once one rank is late, adaptation ends everywhere
                continue
            phase = sched.phase_docs[si]
            tokens = torch.cat([val_tokens[docs[d][0] : docs[d][0] + docs[d][1] + 1] for d in phase])
            steps = ttt_global_phase(model, tokens, cfg, rank, world_size, device, autocast_dtype)
            done_units += phase_units[si]
            if lora is not None:
                lora.draw_a(key=-2 - si)  # the record builds new adapters after each phase (R:3281-3285)
            if log:
                log(f"ttt_phase {si + 1}/{len(sched.phase_docs)} docs:{len(phase)} tokens:{tokens.numel()} "
                    f"steps:{steps} t:{time.perf_counter() - t0:.1f}s")
    if lora is not None:
        lora.remove()
    all_reduce_(sums)
    if target_losses is not None:
        all_reduce_(target_losses)
    if score_order is not None:
        all_reduce_(score_order)
    return eval_result(sums)


TTT_MODES = {"doc": doc_ttt, "stream": score_first_ttt}


# ---------------------------------------------------------------- the eval plan: one declaration of the passes
@dataclass(frozen=True)
class EvalPass:
    """One pass of the final evaluation and its work on the busiest rank (tokens include padding)."""
    name: str  # the log line it reports under: prequant | roundtrip | ttt
    what: str
    claimed: bool  # the score the run reports
    targets: int
    score_tokens: int  # tokens through a forward only
    adapt_tokens: int  # tokens through forward + backward (LoRA chunks, stream TTT steps)
    phase_tokens: int  # tokens through forward + backward in global SGD phases (this rank's share)
    steps: int  # optimiser steps (LoRA batch steps + phase steps)
    timed: bool = True  # inside the eval 600 s; the prequant diagnostic is not (golf/budget.py says why)

    def seconds(self, fwd_s_per_token: float, fwdbwd_s_per_token: float) -> float:
        return self.score_tokens * fwd_s_per_token + (self.adapt_tokens + self.phase_tokens) * fwdbwd_s_per_token


def pass_stride(cfg, claimed: bool) -> int:
    """Window stride of a scoring pass: sw_stride for the claimed one, EVAL_DIAG_STRIDE (0: sw_stride) otherwise."""
    return cfg.sw_stride if claimed or not cfg.eval_diag_stride else min(cfg.eval_diag_stride, cfg.sw_seq_len)


def scoring_tokens(windows: list[tuple[int, int, int]], batch_tokens: int, world_size: int) -> int:
    """Padded tokens rank 0 (the busiest) feeds to score `windows` (as score_windows batches them)."""
    return sum(len(b) * b[0][1] for b in window_batches(windows[0::world_size], batch_tokens))


def doc_windows_from_lengths(doc_lengths: list[int], seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    out, s = [], 0
    for n in doc_lengths:
        out += [(s + a, b, c) for a, b, c in window_plan(n, seq_len, stride)]
        s += n
    return out


def eval_passes(cfg, doc_lengths: list[int], world_size: int) -> list[EvalPass]:
    """The final evaluation's passes for documents of these target counts (golf.evaluate.doc_spans; their sum is
    the val tokens - 1) on world_size ranks: what golf.train runs after eval_phase_started, in order."""
    n = sum(doc_lengths)
    passes = []
    for name, model, claimed in (("prequant", "trained", False), ("roundtrip", "artifact", not cfg.ttt_enabled)):
        stride = pass_stride(cfg, claimed)
        if cfg.eval_context == "doc":
            windows = doc_windows_from_lengths(doc_lengths, cfg.sw_seq_len, stride)
        else:
            windows = window_plan(n, cfg.sw_seq_len, stride)
        what = f"{model} model, {cfg.eval_context} windows {cfg.sw_seq_len}/{stride}: {len(windows)}"
        passes.append(EvalPass(name, what, claimed, n, scoring_tokens(windows, cfg.val_batch_tokens, world_size),
                               0, 0, 0, timed=name != "prequant"))
    if cfg.ttt_enabled:
        passes.append(pick(TTT_PASSES, cfg.ttt_mode, "TTT_MODE")(cfg, doc_lengths, world_size))
    return passes


def doc_ttt_pass(cfg, doc_lengths: list[int], world_size: int) -> EvalPass:
    """doc_ttt's pass: per-document LoRA batches (each segment costs its busiest rank) and the global phases."""
    n = sum(doc_lengths)
    sched = doc_schedule(doc_lengths, cfg, world_size)
    fwd = bwd = lora_steps = 0
    for seg in sched.segments:  # ranks meet only at phases: each segment costs its busiest rank's work
        batches = [[[doc_lengths[d] for d in sched.batches[b]] for b in mine] for mine in seg]
        work = [[doc_batch_work(lengths, cfg, cfg.ttt_doc_lora_lr > 0) for lengths in mine] for mine in batches]
        busiest = max(range(world_size), key=lambda r: sum(f + 3 * b for f, b in work[r]))
        fwd += sum(f for f, _ in work[busiest])
        bwd += sum(b for _, b in work[busiest])
        for lengths in batches[busiest]:
            nch = [math.ceil(k / cfg.ttt_doc_chunk_tokens) for k in lengths]
            lora_steps += max(nch) - 1 if cfg.ttt_doc_lora_lr > 0 else 0
    phase_tok = phase_n = 0
    for phase in sched.phase_docs:
        steps = phase_steps(sum(doc_lengths[d] + 1 for d in phase) - 1, cfg, world_size)
        phase_n += len(steps)
        phase_tok += sum(max(seqs for _, seqs in per_rank) for _, per_rank in steps) * cfg.sw_seq_len
    what = (f"per-doc LoRA r{cfg.ttt_doc_lora_rank} chunks of {cfg.ttt_doc_chunk_tokens}, "
            f"{len(sched.batches)} batches of {cfg.ttt_doc_batch} docs, "
            f"{len(sched.phase_docs)} global SGD phases on {[len(p) for p in sched.phase_docs]} docs")
    return EvalPass("ttt", what, True, n, fwd, bwd, phase_tok, lora_steps + phase_n)


def stream_ttt_pass(cfg, doc_lengths: list[int], world_size: int) -> EvalPass:
    """score_first_ttt's pass: the stream's chunks, each scored, then trained on."""
    n = sum(doc_lengths)
    val = torch.ones(n + 1, dtype=torch.int64)  # stream TTT's chunks depend on BOS positions only
    starts = [0]
    for k in doc_lengths[:-1]:
        starts.append(starts[-1] + k)
    val[starts] = SP_BOS_ID
    bounds, _ = ttt_chunk_bounds(val, cfg.ttt_chunk_tokens, cfg.ttt_reset_per_doc)
    chunks = split_plan(window_plan(n, cfg.sw_seq_len, cfg.sw_stride), bounds)
    score = sum(scoring_tokens(w, cfg.val_batch_tokens, world_size) for w in chunks if w)
    rows = math.ceil(math.ceil(cfg.ttt_chunk_tokens / cfg.sw_seq_len) / world_size)
    steps = cfg.ttt_steps * (len(chunks) - 1)
    return EvalPass("ttt", f"stream LoRA r{cfg.ttt_lora_rank}, {len(chunks)} chunks of "
                    f"{cfg.ttt_chunk_tokens}, {cfg.ttt_steps} steps each", True, n, score,
                    steps * rows * cfg.sw_seq_len, 0, steps)


# Config.ttt_mode -> its pass in the eval plan (TTT_MODES runs it).
TTT_PASSES = {"doc": doc_ttt_pass, "stream": stream_ttt_pass}


def seconds_of(fn, device) -> float:
    """Wall seconds of fn()'s second call (the first warms kernels and allocators)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def token_rates(model, cfg, device, autocast_dtype) -> tuple[float, float]:
    """Seconds per token of a scoring forward and of a forward + backward (all weights), at window length,
    timed on random tokens (never val)."""
    seq_len = cfg.sw_seq_len
    rows = max(1, cfg.val_batch_tokens // seq_len)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(4, cfg.vocab_size, (rows, seq_len), generator=gen).to(device)

    def score_batch():
        with torch.no_grad(), torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            model.token_losses(x, x)

    fwd = seconds_of(score_batch, device) / x.numel()
    adapted = copy.deepcopy(model).eval()
    xt = x[: max(1, min(rows, cfg.ttt_doc_batch))]

    def train_batch():
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            adapted.token_losses(xt, xt).float().mean().backward()

    return fwd, seconds_of(train_batch, device) / xt.numel()


def eval_plan_lines(model, val_tokens: torch.Tensor, cfg, world_size: int, device, autocast_dtype) -> list[str]:
    """The eval plan (eval_passes) with each pass's predicted seconds, against the eval budget (EVAL_MAX_SECONDS).

    Rates are timed on random tokens; a prediction is tokens x seconds per token on the busiest rank."""
    passes = eval_passes(cfg, [n for _, n in doc_spans(val_tokens)], world_size)
    fwd, fwdbwd = token_rates(model, cfg, device, autocast_dtype)
    lines, total = [], 0.0
    for p in passes:
        s = p.seconds(fwd, fwdbwd)
        total += s if p.timed else 0.0
        lines.append(f"eval_plan pass:{p.name} claimed:{int(p.claimed)} targets:{p.targets} "
                     f"score_tokens:{p.score_tokens} adapt_tokens:{p.adapt_tokens} phase_tokens:{p.phase_tokens} "
                     f"steps:{p.steps} est:{s:.1f}s{'' if p.timed else ' uncounted'} ({p.what})")
    lines.append(f"eval_plan eval_phase_est:{total:.1f}s budget:{cfg.eval_max_seconds:.0f}s "
                 f"fwd_us_per_token:{fwd * 1e6:.2f} fwdbwd_us_per_token:{fwdbwd * 1e6:.2f} "
                 f"(predicted; rates timed on random tokens on this device)")
    return lines


def final_eval(model, val_tokens: torch.Tensor, luts, cfg, rank: int, world_size: int, device, autocast_dtype,
               log, eval_started: float | None = None, byte_counts=None) -> None:
    """Score the reloaded artifact model: the round trip, then (TTT_ENABLED) TTT in TTT_MODE.

    Logs the targets, bytes and seconds of each eval, then `final_roundtrip` and `final_ttt` lines.
    eval_started: time.perf_counter() when the eval phase began; TTT stops adapting when its rate says the phase
    would otherwise end past EVAL_MAX_SECONDS x (1 - TTT_GUARD_MARGIN).
    With DUMP_VAL_LOSSES, rank 0 writes the claimed eval's per-target NLL as float32 .npy, and its per-target
    scoring order as int64 <name>_order.npy (targets scored in one step share a value; tools/audit.py reads it).
    """
    if byte_counts is None:
        byte_counts = target_byte_counts(val_tokens, luts)
    n = val_tokens.numel() - 1
    dump = torch.zeros(n, device=device) if cfg.dump_val_losses else None
    order = torch.zeros(n, dtype=torch.int64, device=device) if cfg.dump_val_losses else None
    t0 = time.perf_counter()
    plain = eval_bpb(model, val_tokens, luts, cfg.sw_seq_len, pass_stride(cfg, not cfg.ttt_enabled),
                     cfg.val_batch_tokens, rank, world_size,
                     device, autocast_dtype, None if cfg.ttt_enabled else dump, cfg.eval_context, byte_counts)
    plain_s = time.perf_counter() - t0
    log(f"roundtrip val_tokens:{plain.tokens} val_bytes:{plain.bytes} time:{plain_s:.1f}s")
    if cfg.ttt_enabled:
        t0 = time.perf_counter()
        start = t0 if eval_started is None else eval_started
        deadline = start + cfg.eval_max_seconds * (1 - cfg.ttt_guard_margin)
        ttt_fn = pick(TTT_MODES, cfg.ttt_mode, "TTT_MODE")
        ttt = ttt_fn(model, val_tokens, luts, cfg, rank, world_size, device, autocast_dtype, dump,
                     byte_counts=byte_counts, score_order=order, deadline=deadline, log=log)
        log(f"ttt val_loss:{ttt.val_loss:.8f} val_bpb:{ttt.val_bpb:.8f} val_tokens:{ttt.tokens} "
            f"val_bytes:{ttt.bytes} time:{time.perf_counter() - t0:.1f}s mode:{cfg.ttt_mode}")
    log(f"final_roundtrip val_loss:{plain.val_loss:.8f} val_bpb:{plain.val_bpb:.8f}")
    if cfg.ttt_enabled:
        log(f"final_ttt val_loss:{ttt.val_loss:.8f} val_bpb:{ttt.val_bpb:.8f}")
    if dump is not None and rank == 0:
        for path, array in ((cfg.dump_val_losses, dump), (order_path(cfg.dump_val_losses), order)):
            buf = io.BytesIO()
            np.save(buf, array.cpu().numpy())
            write_bytes_atomic(path, buf.getvalue())


def order_path(dump_path: str) -> str:
    """Where the scoring order of a DUMP_VAL_LOSSES dump goes: x.npy -> x_order.npy."""
    root = dump_path[:-4] if dump_path.endswith(".npy") else dump_path
    return root + "_order.npy"
