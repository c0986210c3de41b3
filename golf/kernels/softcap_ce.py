"""Fused softcapped cross-entropy: per-token losses of z = c * tanh(logits / c), one pass over V.

Unfused, the loss materialises z (N, V) in fp32 and its softmax again for backward; at the record
shape (N=65536 tokens, V=8192) that is 2 GiB per copy. The Triton kernel streams each row in
vocab chunks with an online logsumexp, saves only lse (N,), and backward recomputes z from the
logits. `softcap_cross_entropy_torch` is the obviously-correct twin tests compare it with.
"""

import torch
import torch.nn.functional as F

from golf.kernels.triton_support import TRITON_AVAILABLE, tl, triton

SOFTCAP_CE_BLOCK_V = 2048  # vocab chunk per loop step: 8192 / 2048 = 4 steps per row at record V


def softcap_logits(logits, softcap):
    """z = c * tanh(logits / c) in fp32, any shape: the logits whose softmax the loss scores
    (and so the distribution that sampling must draw from)."""
    return softcap * torch.tanh(logits.float() / softcap)


def softcap_cross_entropy_torch(logits, targets, softcap):
    """Twin: logits (N, V) any float dtype, targets (N,) int64 -> per-token losses (N,) fp32."""
    return F.cross_entropy(softcap_logits(logits, softcap), targets, reduction="none")


if TRITON_AVAILABLE:

    @triton.jit
    def softcap_tanh_triton(u):
        # tanh from exp (the interpreter has no tanh): exp(2u) -> inf gives 1, -> 0 gives -1, no NaN.
        # Absolute error ~1e-7 near 0, i.e. ~3e-6 on z at softcap 30: far below bf16 logit noise.
        return 1.0 - 2.0 / (tl.exp(2.0 * u) + 1.0)

    @triton.jit
    def softcap_ce_fwd_kernel(logits_ptr, targets_ptr, loss_ptr, lse_ptr, stride_row, V, softcap,
                              BLOCK_V: tl.constexpr):
        # One program per row: logits row (V,) -> loss (scalar), lse (scalar) in fp32.
        row = tl.program_id(0).to(tl.int64)
        row_ptr = logits_ptr + row * stride_row
        running_max = float("-inf")
        running_sum = 0.0
        for start in range(0, V, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            x = tl.load(row_ptr + cols, mask=cols < V, other=0.0).to(tl.float32)
            z = tl.where(cols < V, softcap * softcap_tanh_triton(x / softcap), float("-inf"))
            new_max = tl.maximum(running_max, tl.max(z, 0))
            running_sum = running_sum * tl.exp(running_max - new_max) + tl.sum(tl.exp(z - new_max), 0)
            running_max = new_max
        lse = running_max + tl.log(running_sum)
        target = tl.load(targets_ptr + row)
        z_target = softcap * softcap_tanh_triton(tl.load(row_ptr + target).to(tl.float32) / softcap)
        tl.store(loss_ptr + row, lse - z_target)
        tl.store(lse_ptr + row, lse)

    @triton.jit
    def softcap_ce_bwd_kernel(logits_ptr, targets_ptr, lse_ptr, grad_loss_ptr, grad_logits_ptr,
                              stride_row, stride_grad_row, V, softcap, BLOCK_V: tl.constexpr):
        # d loss / d x = (softmax(z) - onehot(y)) * dz/dx, with dz/dx = 1 - tanh(x/c)^2.
        row = tl.program_id(0).to(tl.int64)
        row_ptr = logits_ptr + row * stride_row
        grad_row_ptr = grad_logits_ptr + row * stride_grad_row
        lse = tl.load(lse_ptr + row)
        grad_loss = tl.load(grad_loss_ptr + row)
        target = tl.load(targets_ptr + row)
        for start in range(0, V, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            x = tl.load(row_ptr + cols, mask=cols < V, other=0.0).to(tl.float32)
            t = softcap_tanh_triton(x / softcap)
            prob = tl.exp(softcap * t - lse)
            grad_z = prob - tl.where(cols == target, 1.0, 0.0)
            grad_x = grad_loss * grad_z * (1.0 - t * t)
            tl.store(grad_row_ptr + cols, grad_x.to(grad_logits_ptr.dtype.element_ty), mask=cols < V)


class SoftcapCrossEntropyTriton(torch.autograd.Function):
    """Autograd wrapper: forward saves (logits, targets, lse (N,) fp32); backward recomputes z."""

    @staticmethod
    def forward(ctx, logits, targets, softcap, block_v):
        if logits.ndim != 2 or targets.shape != logits.shape[:1]:
            raise ValueError(f"softcap_cross_entropy: want logits (N, V) and targets (N,), "
                             f"got {tuple(logits.shape)} and {tuple(targets.shape)}")
        if logits.stride(-1) != 1:
            logits = logits.contiguous()
        targets = targets.contiguous()
        n_rows, vocab = logits.shape
        losses = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
        lse = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
        if n_rows:
            softcap_ce_fwd_kernel[(n_rows,)](logits, targets, losses, lse, logits.stride(0), vocab,
                                             float(softcap), BLOCK_V=block_v)
        ctx.save_for_backward(logits, targets, lse)
        ctx.softcap = float(softcap)
        ctx.block_v = block_v
        return losses

    @staticmethod
    def backward(ctx, grad_losses):
        logits, targets, lse = ctx.saved_tensors
        grad_losses = grad_losses.float().contiguous()
        grad_logits = torch.empty_like(logits, memory_format=torch.contiguous_format)
        n_rows, vocab = logits.shape
        if n_rows:
            softcap_ce_bwd_kernel[(n_rows,)](logits, targets, lse, grad_losses, grad_logits,
                                             logits.stride(0), grad_logits.stride(0), vocab,
                                             ctx.softcap, BLOCK_V=ctx.block_v)
        return grad_logits, None, None, None


def softcap_cross_entropy_triton(logits, targets, softcap, block_v=SOFTCAP_CE_BLOCK_V):
    """Triton kernel: logits (N, V), targets (N,) int64 in [0, V) -> per-token losses (N,) fp32.

    No ignore_index: every row is a scored token (the twin's F.cross_entropy would skip -100).
    block_v (a power of two) is the vocab chunk; V need not be a multiple of it.
    """
    block_v = min(block_v, triton.next_power_of_2(logits.shape[-1]))
    return SoftcapCrossEntropyTriton.apply(logits, targets, softcap, block_v)


def softcap_cross_entropy(logits, targets, softcap):
    """Per-token losses (N,) fp32 of softcapped logits (N, V): the Triton kernel on CUDA, else the twin."""
    if TRITON_AVAILABLE and logits.is_cuda:
        return softcap_cross_entropy_triton(logits, targets, softcap)
    return softcap_cross_entropy_torch(logits, targets, softcap)
