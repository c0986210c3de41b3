"""Each Triton kernel against its torch twin: forward+backward time and max abs error.

    python -m golf.bench kernels [--runs N]

On CUDA: record shapes in bf16, median of N timed runs after a warm-up run (compile), each
bracketed by torch.cuda.synchronize. On CPU: Triton's interpreter on small fp32 shapes, so the
times say nothing about kernel speed; the run checks the kernels execute and agree with twins.
"""

import argparse
import os
import statistics
import time

import torch


def bench_kernel_cases(on_gpu):
    """[(name, shape text, kernel fn, twin fn, inputs)] at record shapes (GPU) or tiny ones (CPU)."""
    # Imported here: on CPU, TRITON_INTERPRET must be set before the @triton.jit decorators run.
    from golf.kernels.attention_triton import attention_torch, flash_attention
    from golf.kernels.mlp_act import leaky_relu_sq_torch, leaky_relu_sq_triton
    from golf.kernels.softcap_ce import softcap_cross_entropy_torch, softcap_cross_entropy_triton

    device, dtype = ("cuda", torch.bfloat16) if on_gpu else ("cpu", torch.float32)
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device, dtype)

    # Record: 786432 tokens/step over 8 GPUs; 8 x 2048 tokens is one micro-batch's worth.
    batch, seq_len, heads, kv_heads, head_dim = (8, 2048, 8, 4, 64) if on_gpu else (1, 100, 4, 2, 32)
    n_rows, vocab = (65536, 8192) if on_gpu else (64, 1000)
    mlp_shape = (batch * seq_len, 2048) if on_gpu else (64, 256)  # hidden = 4 x model_dim 512
    targets = torch.randint(0, vocab, (n_rows,), generator=gen).to(device)
    dtype_name = str(dtype).removeprefix("torch.")
    return [
        ("softcap_ce", f"N={n_rows} V={vocab} {dtype_name}",
         lambda x, y: softcap_cross_entropy_triton(x, y, 30.0), lambda x, y: softcap_cross_entropy_torch(x, y, 30.0),
         [rand(n_rows, vocab) * 10, targets]),
        ("flash_attention", f"B={batch} T={seq_len} H={heads} Hkv={kv_heads} D={head_dim} {dtype_name}",
         flash_attention, attention_torch,
         [rand(batch, heads, seq_len, head_dim), rand(batch, kv_heads, seq_len, head_dim),
          rand(batch, kv_heads, seq_len, head_dim)]),
        ("leaky_relu_sq", f"{mlp_shape[0]}x{mlp_shape[1]} {dtype_name}", leaky_relu_sq_triton, leaky_relu_sq_torch,
         [rand(*mlp_shape)]),
    ]


def forward_backward(fn, inputs, grad_out):
    """-> [output, grads of float inputs] of one forward+backward pass."""
    leaves = [x.detach().requires_grad_(x.is_floating_point()) for x in inputs]
    out = fn(*leaves)
    out.backward(grad_out)
    return [out.detach()] + [x.grad for x in leaves if x.requires_grad]


def median_fwd_bwd_ms(fn, inputs, grad_out, runs, sync):
    forward_backward(fn, inputs, grad_out)  # warm-up: Triton compiles, caches fill
    times = []
    for _ in range(runs):
        sync()
        start = time.perf_counter()
        forward_backward(fn, inputs, grad_out)
        sync()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def no_sync():
    """CPU work is synchronous: nothing to wait for."""


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m golf.bench kernels", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None, help="timed runs per kernel (default 10 GPU, 3 CPU)")
    args = parser.parse_args(argv)
    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from golf.kernels.triton_support import TRITON_AVAILABLE, triton_interpreting

    if not TRITON_AVAILABLE:
        print("kernels: triton is not installed (pip install -e '.[gpu]'); nothing to benchmark")
        return 1
    if on_gpu:
        print(f"kernels: {torch.cuda.get_device_name()}, compiled Triton, forward+backward")
        sync = torch.cuda.synchronize
    else:
        print(f"kernels: no CUDA device; Triton interpreter={triton_interpreting()} on CPU, small fp32 shapes: "
              "correctness only, times are not kernel speed")
        sync = no_sync
    runs = args.runs or (10 if on_gpu else 3)
    print(f"{'kernel':<16} {'shape':<40} {'kernel ms':>10} {'twin ms':>10} {'kernel/twin':>11} {'max abs err':>12}")
    for name, shape, kernel, twin, inputs in bench_kernel_cases(on_gpu):
        twin_out = twin(*inputs)
        grad_out = torch.randn(twin_out.shape, device=twin_out.device).to(twin_out.dtype)
        err = max((a.float() - b.float()).abs().max().item() for a, b in
                  zip(forward_backward(kernel, inputs, grad_out), forward_backward(twin, inputs, grad_out)))
        kernel_ms = median_fwd_bwd_ms(kernel, inputs, grad_out, runs, sync)
        twin_ms = median_fwd_bwd_ms(twin, inputs, grad_out, runs, sync)
        print(f"{name:<16} {shape:<40} {kernel_ms:>10.3f} {twin_ms:>10.3f} {kernel_ms / twin_ms:>11.2f} {err:>12.3e}")
    return 0
