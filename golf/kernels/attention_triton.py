"""Causal flash attention (forward + backward) in Triton, with grouped-query attention.

Shapes: q (B, H, T, D), k and v (B, Hkv, T, D) with H % Hkv == 0; query head h reads kv head
h // (H // Hkv), as `repeat_interleave` / SDPA's enable_gqa do. D is a power of two >= 16.
Scores, softmax statistics and gradients accumulate in fp32; T need not be a multiple of a tile.
Forward saves the per-row log2-sum-exp2 (B, H, T) so backward recomputes P tile by tile.
Backward runs two kernels without atomics: dK/dV per kv tile (looping over the kv head's group
of query heads) and dQ per query tile. `attention_torch` is the twin tests compare it with.
Optional document ids doc_ids (B, T) int: a query sees a key only within its own document (a
block-diagonal causal mask; packed training batches, see golf/data.py document_ids).
"""

import math

import torch
import torch.nn.functional as F

from golf.kernels.triton_support import TRITON_AVAILABLE, tl, triton, triton_interpreting

LOG2_E = 1.4426950408889634  # scores are scaled by log2(e) so the kernels can use exp2


def doc_causal_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) document ids -> (B, 1, T, T) bool: key j visible to query i iff j <= i and same document."""
    T = doc_ids.size(-1)
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    return (causal & (doc_ids[:, :, None] == doc_ids[:, None, :]))[:, None]


def attention_torch(q, k, v, doc_ids=None):
    """Twin: causal attention via PyTorch SDPA. q (B, H, T, D), k/v (B, Hkv, T, D) -> (B, H, T, D);
    with doc_ids (B, T) the block-diagonal causal mask of doc_causal_mask."""
    gqa = q.shape[1] != k.shape[1]
    if doc_ids is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=doc_causal_mask(doc_ids), enable_gqa=gqa)


if TRITON_AVAILABLE:

    @triton.jit
    def flash_attn_fwd_kernel(q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, doc_ptr, H, T, qk_scale_log2,
                              HAS_DOCS: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                              BLOCK_N: tl.constexpr, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr):
        # Program (query tile, batch*head): q tile (BLOCK_M, D) against kv tiles (BLOCK_N, D)
        # up to the diagonal; all tensors contiguous, so a (b, h) slice starts at (b*H + h)*T*D.
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1).to(tl.int64)
        b = pid_bh // H
        kv_bh = b * (H // GROUP) + (pid_bh % H) // GROUP
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM)
        q_base = q_ptr + pid_bh * T * HEAD_DIM
        k_base = k_ptr + kv_bh * T * HEAD_DIM
        v_base = v_ptr + kv_bh * T * HEAD_DIM
        q = tl.load(q_base + rows[:, None] * HEAD_DIM + offs_d[None, :], mask=rows[:, None] < T, other=0.0)
        if UPCAST:
            q = q.to(tl.float32)
        row_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
        row_sum = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        if HAS_DOCS:
            doc_rows = tl.load(doc_ptr + b * T + rows, mask=rows < T, other=-1)
        # Without documents column 0 is visible to every row, so row_max is finite after one tile. With
        # documents a tile may hide every column of a row: `shift` keeps exp2 away from (-inf) - (-inf).
        for start_n in range(0, tl.minimum((pid_m + 1) * BLOCK_M, T), BLOCK_N):
            cols = start_n + offs_n
            k = tl.load(k_base + cols[:, None] * HEAD_DIM + offs_d[None, :], mask=cols[:, None] < T, other=0.0)
            v = tl.load(v_base + cols[:, None] * HEAD_DIM + offs_d[None, :], mask=cols[:, None] < T, other=0.0)
            if UPCAST:
                k = k.to(tl.float32)
                v = v.to(tl.float32)
            scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale_log2  # (BM, BN)
            visible = (cols[None, :] <= rows[:, None]) & (cols[None, :] < T)
            if HAS_DOCS:
                doc_cols = tl.load(doc_ptr + b * T + cols, mask=cols < T, other=-2)
                visible = visible & (doc_rows[:, None] == doc_cols[None, :])
            scores = tl.where(visible, scores, float("-inf"))
            new_max = tl.maximum(row_max, tl.max(scores, 1))
            shift = tl.where(new_max == float("-inf"), 0.0, new_max)
            rescale = tl.exp2(row_max - shift)
            p = tl.exp2(scores - shift[:, None])
            row_sum = row_sum * rescale + tl.sum(p, 1)
            acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
            row_max = new_max
        # A real row's sum is >= 1 (its max term is exp2(0)); only padding rows, which see no key when documents
        # are on, reach 0 here: keep them finite (they are never stored).
        row_sum = tl.maximum(row_sum, 1.0)
        acc = acc / row_sum[:, None]
        tl.store(o_ptr + pid_bh * T * HEAD_DIM + rows[:, None] * HEAD_DIM + offs_d[None, :],
                 acc.to(o_ptr.dtype.element_ty), mask=rows[:, None] < T)
        tl.store(lse_ptr + pid_bh * T + rows, row_max + tl.log2(row_sum), mask=rows < T)

    @triton.jit
    def flash_attn_bwd_dkdv_kernel(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, doc_ptr,
                                   H, T, qk_scale_log2, sm_scale, HAS_DOCS: tl.constexpr, GROUP: tl.constexpr,
                                   HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                   UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr):
        # Program (kv tile, batch*kv_head): dK, dV (BLOCK_N, D) summed over the GROUP query heads
        # sharing this kv head and over query tiles at or below the diagonal.
        pid_n = tl.program_id(0)
        kv_bh = tl.program_id(1).to(tl.int64)
        b = kv_bh // (H // GROUP)
        first_head = (kv_bh % (H // GROUP)) * GROUP
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_m = tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, HEAD_DIM)
        kv_offsets = kv_bh * T * HEAD_DIM + cols[:, None] * HEAD_DIM + offs_d[None, :]
        k = tl.load(k_ptr + kv_offsets, mask=cols[:, None] < T, other=0.0)
        v = tl.load(v_ptr + kv_offsets, mask=cols[:, None] < T, other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
        dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
        if HAS_DOCS:
            doc_cols = tl.load(doc_ptr + b * T + cols, mask=cols < T, other=-2)
        first_row = (pid_n * BLOCK_N // BLOCK_M) * BLOCK_M  # first query tile that sees this kv tile
        for g in range(0, GROUP):
            bh = b * H + first_head + g
            for start_m in range(first_row, T, BLOCK_M):
                rows = start_m + offs_m
                q_offsets = bh * T * HEAD_DIM + rows[:, None] * HEAD_DIM + offs_d[None, :]
                q = tl.load(q_ptr + q_offsets, mask=rows[:, None] < T, other=0.0)
                do = tl.load(do_ptr + q_offsets, mask=rows[:, None] < T, other=0.0)
                if UPCAST:
                    q = q.to(tl.float32)
                    do = do.to(tl.float32)
                lse = tl.load(lse_ptr + bh * T + rows, mask=rows < T, other=0.0)
                delta = tl.load(delta_ptr + bh * T + rows, mask=rows < T, other=0.0)
                scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale_log2
                visible = (cols[None, :] <= rows[:, None]) & (rows[:, None] < T) & (cols[None, :] < T)
                if HAS_DOCS:
                    doc_rows = tl.load(doc_ptr + b * T + rows, mask=rows < T, other=-1)
                    visible = visible & (doc_rows[:, None] == doc_cols[None, :])
                p = tl.where(visible, tl.exp2(scores - lse[:, None]), 0.0)  # softmax tile (BM, BN)
                dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=DOT_PRECISION)
                dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
                ds = p * (dp - delta[:, None])  # d loss / d (q.k), before sm_scale
                dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=DOT_PRECISION)
        tl.store(dk_ptr + kv_offsets, (dk * sm_scale).to(dk_ptr.dtype.element_ty), mask=cols[:, None] < T)
        tl.store(dv_ptr + kv_offsets, dv.to(dv_ptr.dtype.element_ty), mask=cols[:, None] < T)

    @triton.jit
    def flash_attn_bwd_dq_kernel(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr, doc_ptr,
                                 H, T, qk_scale_log2, sm_scale, HAS_DOCS: tl.constexpr, GROUP: tl.constexpr,
                                 HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                 UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr):
        # Program (query tile, batch*head): dQ (BLOCK_M, D) over kv tiles up to the diagonal.
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1).to(tl.int64)
        b = pid_bh // H
        kv_bh = b * (H // GROUP) + (pid_bh % H) // GROUP
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM)
        q_offsets = pid_bh * T * HEAD_DIM + rows[:, None] * HEAD_DIM + offs_d[None, :]
        q = tl.load(q_ptr + q_offsets, mask=rows[:, None] < T, other=0.0)
        do = tl.load(do_ptr + q_offsets, mask=rows[:, None] < T, other=0.0)
        if UPCAST:
            q = q.to(tl.float32)
            do = do.to(tl.float32)
        lse = tl.load(lse_ptr + pid_bh * T + rows, mask=rows < T, other=0.0)
        delta = tl.load(delta_ptr + pid_bh * T + rows, mask=rows < T, other=0.0)
        dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        if HAS_DOCS:
            doc_rows = tl.load(doc_ptr + b * T + rows, mask=rows < T, other=-1)
        for start_n in range(0, tl.minimum((pid_m + 1) * BLOCK_M, T), BLOCK_N):
            cols = start_n + offs_n
            kv_offsets = kv_bh * T * HEAD_DIM + cols[:, None] * HEAD_DIM + offs_d[None, :]
            k = tl.load(k_ptr + kv_offsets, mask=cols[:, None] < T, other=0.0)
            v = tl.load(v_ptr + kv_offsets, mask=cols[:, None] < T, other=0.0)
            if UPCAST:
                k = k.to(tl.float32)
                v = v.to(tl.float32)
            scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale_log2
            visible = (cols[None, :] <= rows[:, None]) & (rows[:, None] < T) & (cols[None, :] < T)
            if HAS_DOCS:
                doc_cols = tl.load(doc_ptr + b * T + cols, mask=cols < T, other=-2)
                visible = visible & (doc_rows[:, None] == doc_cols[None, :])
            p = tl.where(visible, tl.exp2(scores - lse[:, None]), 0.0)
            dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION)
        tl.store(dq_ptr + q_offsets, (dq * sm_scale).to(dq_ptr.dtype.element_ty), mask=rows[:, None] < T)


def flash_attention_launch_options(dtype):
    """(UPCAST, DOT_PRECISION) for input dtype: fp32 inputs get exact ieee dots (tests compare
    them tightly); the interpreter's bf16 tl.dot is wrong, so tiles are upcast to fp32 there."""
    upcast = dtype == torch.float32 or triton_interpreting()
    return upcast, "ieee" if upcast else "tf32"


class FlashAttentionTriton(torch.autograd.Function):
    """Autograd wrapper: saves q, k, v, o and the row log2-sum-exp2 (B, H, T) fp32."""

    @staticmethod
    def forward(ctx, q, k, v, doc_ids, block_m, block_n):
        batch, heads, seq_len, head_dim = q.shape
        kv_heads = k.shape[1]
        same_btd = k.shape[0] == batch and k.shape[2:] == q.shape[2:]
        if k.shape != v.shape or not same_btd or heads % kv_heads or head_dim < 16 or head_dim & (head_dim - 1):
            raise ValueError(f"flash_attention: want q (B, H, T, D), k/v (B, Hkv, T, D) with H % Hkv == 0 and D "
                             f"a power of two >= 16, got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        has_docs = doc_ids is not None
        docs = doc_ids.to(torch.int32).contiguous() if has_docs else torch.zeros(1, dtype=torch.int32, device=q.device)
        out = torch.empty_like(q)
        lse = torch.empty((batch, heads, seq_len), dtype=torch.float32, device=q.device)
        sm_scale = 1.0 / math.sqrt(head_dim)
        upcast, precision = flash_attention_launch_options(q.dtype)
        grid = (triton.cdiv(seq_len, block_m), batch * heads)
        flash_attn_fwd_kernel[grid](q, k, v, out, lse, docs, heads, seq_len, sm_scale * LOG2_E,
                                    HAS_DOCS=has_docs, GROUP=heads // kv_heads, HEAD_DIM=head_dim, BLOCK_M=block_m,
                                    BLOCK_N=block_n, UPCAST=upcast, DOT_PRECISION=precision)
        ctx.save_for_backward(q, k, v, out, lse, docs)
        ctx.block_m, ctx.block_n, ctx.has_docs = block_m, block_n, has_docs
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, docs = ctx.saved_tensors
        batch, heads, seq_len, head_dim = q.shape
        kv_heads = k.shape[1]
        grad_out = grad_out.contiguous()
        # delta_i = sum_d dO_id * O_id = sum_j P_ij dP_ij: the softmax-backward row term (B, H, T).
        delta = (grad_out.float() * out.float()).sum(-1)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        sm_scale = 1.0 / math.sqrt(head_dim)
        upcast, precision = flash_attention_launch_options(q.dtype)
        common = dict(HAS_DOCS=ctx.has_docs, GROUP=heads // kv_heads, HEAD_DIM=head_dim, BLOCK_M=ctx.block_m,
                      BLOCK_N=ctx.block_n, UPCAST=upcast, DOT_PRECISION=precision)
        flash_attn_bwd_dkdv_kernel[(triton.cdiv(seq_len, ctx.block_n), batch * kv_heads)](
            q, k, v, grad_out, lse, delta, dk, dv, docs, heads, seq_len, sm_scale * LOG2_E, sm_scale, **common)
        flash_attn_bwd_dq_kernel[(triton.cdiv(seq_len, ctx.block_m), batch * heads)](
            q, k, v, grad_out, lse, delta, dq, docs, heads, seq_len, sm_scale * LOG2_E, sm_scale, **common)
        return dq, dk, dv, None, None, None


def flash_attention(q, k, v, doc_ids=None, block_m=64, block_n=64):
    """Causal GQA attention in Triton: q (B, H, T, D), k/v (B, Hkv, T, D) -> (B, H, T, D).

    doc_ids (B, T) int, optional: attend only within a document (block-diagonal causal). Every kv tile up
    to the diagonal is still visited (masked, not skipped). block_m / block_n (powers of two >= 16) are the
    query / key tile sizes.
    """
    return FlashAttentionTriton.apply(q, k, v, doc_ids, block_m, block_n)
