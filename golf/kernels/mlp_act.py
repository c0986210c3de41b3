"""Fused LeakyReLU(0.5)^2, the MLP activation: one elementwise pass forward, one backward.

Unfused, autograd keeps both leaky_relu(x) and its square's input; the kernel saves only x.
`leaky_relu_sq_torch` is the twin tests compare it with.
"""

import torch
import torch.nn.functional as F

from golf.kernels.triton_support import TRITON_AVAILABLE, tl, triton

LEAKY_RELU_SQ_BLOCK = 1024  # elements per program


def leaky_relu_sq_torch(x):
    """Twin: leaky_relu(x, 0.5) ** 2, any shape."""
    return F.leaky_relu(x, 0.5).square()


if TRITON_AVAILABLE:

    @triton.jit
    def leaky_relu_sq_fwd_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + offs, mask=offs < n, other=0.0).to(tl.float32)
        leaky = tl.where(x > 0, x, 0.5 * x)
        tl.store(y_ptr + offs, (leaky * leaky).to(y_ptr.dtype.element_ty), mask=offs < n)

    @triton.jit
    def leaky_relu_sq_bwd_kernel(x_ptr, grad_y_ptr, grad_x_ptr, n, BLOCK: tl.constexpr):
        # d/dx (leaky)^2 = 2 * leaky * slope: 2x for x > 0, 2 * 0.5x * 0.5 = 0.5x otherwise.
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + offs, mask=offs < n, other=0.0).to(tl.float32)
        grad_y = tl.load(grad_y_ptr + offs, mask=offs < n, other=0.0).to(tl.float32)
        grad_x = grad_y * tl.where(x > 0, 2.0 * x, 0.5 * x)
        tl.store(grad_x_ptr + offs, grad_x.to(grad_x_ptr.dtype.element_ty), mask=offs < n)


class LeakyReluSquareTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, block):
        x = x.contiguous()
        y = torch.empty_like(x)
        leaky_relu_sq_fwd_kernel[(triton.cdiv(x.numel(), block),)](x, y, x.numel(), BLOCK=block)
        ctx.save_for_backward(x)
        ctx.block = block
        return y

    @staticmethod
    def backward(ctx, grad_y):
        (x,) = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        grad_x = torch.empty_like(x)
        leaky_relu_sq_bwd_kernel[(triton.cdiv(x.numel(), ctx.block),)](x, grad_y, grad_x, x.numel(), BLOCK=ctx.block)
        return grad_x, None


def leaky_relu_sq_triton(x, block=LEAKY_RELU_SQ_BLOCK):
    """Triton kernel: leaky_relu(x, 0.5) ** 2 elementwise, any shape, fp32 math, x's dtype out."""
    return LeakyReluSquareTriton.apply(x, block)


def leaky_relu_sq(x):
    """LeakyReLU(0.5)^2: the Triton kernel on CUDA, else the twin."""
    if TRITON_AVAILABLE and x.is_cuda:
        return leaky_relu_sq_triton(x)
    return leaky_relu_sq_torch(x)
