"""`python -m golf.bench quant`: RTN vs GPTQ layer-output error, and codec bytes vs entropy.

For now on synthetic layers: Gaussian weights (std 0.02) fed correlated inputs (white noise
through a random mixing with a decaying spectrum, so GPTQ has correlations to exploit).
`quant_report(state, hessians, plan)` does the measuring and works on any state dict.
"""
import argparse
import math
import time

import numpy
import torch

from golf.compress import CODECS
from golf.quant.rtn import QuantTensor, as_rows, dequantize_rows
from golf.quant.state import quantize_state

# (rows, cols) of the synthetic layers: an attention projection and the MLP pair of dim 512.
BENCH_SHAPES = {"attn.proj": (512, 512), "mlp.fc": (2048, 512), "mlp.proj": (512, 2048)}
BENCH_CLIP_K = {"attn.proj": 13.0, "mlp.fc": 11.5, "mlp.proj": 11.5}  # the records' SDClip k
BENCH_TOKENS = 4096


def correlated_inputs(n: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    """(n, cols) inputs whose covariance has singular values decaying like 1 / (1 + i / 8)."""
    mixing = torch.randn(cols, cols, generator=generator) / math.sqrt(cols)
    spectrum = 1.0 / (1.0 + torch.arange(cols) / 8.0)
    return (torch.randn(n, cols, generator=generator) * spectrum) @ mixing


def synthetic_layers(seed: int) -> tuple[dict, dict]:
    """({name: weight (rows, cols)}, {name: Hessian X^T X (cols, cols)}) for BENCH_SHAPES."""
    generator = torch.Generator().manual_seed(seed)
    state, hessians = {}, {}
    for name, (rows, cols) in BENCH_SHAPES.items():
        state[name] = torch.randn(rows, cols, generator=generator) * 0.02
        x = correlated_inputs(BENCH_TOKENS, cols, generator)
        hessians[name] = x.T @ x
    return state, hessians


def output_error(w: torch.Tensor, approx: torch.Tensor, hessian: torch.Tensor) -> float:
    """||X W^T - X A^T||_F from H = X^T X alone: sqrt(trace(D H D^T)), D = W - A."""
    diff = as_rows(w) - as_rows(approx)
    return math.sqrt(max(((diff @ hessian.float()) * diff).sum().item(), 0.0))


def order0_entropy_bytes(symbols: numpy.ndarray) -> float:
    """Bytes an ideal order-0 coder needs for these int8 symbols (one histogram for all)."""
    counts = numpy.unique(symbols, return_counts=True)[1]
    p = counts / counts.sum()
    return float(-(p * numpy.log2(p)).sum() * symbols.size / 8)


def quant_report(state: dict[str, torch.Tensor], hessians: dict[str, torch.Tensor], plan: dict[str, dict]) -> dict:
    """Quantise `state` by `plan` with RTN and with GPTQ (same bits and clip). Returns
    {"layers": [{name, rtn_error, gptq_error, ratio}] for names with a Hessian,
     "codecs": [{codec, bytes, entropy_bytes, ratio, seconds}] over the GPTQ symbols}."""
    rtn = quantize_state(state, {n: {**s, "method": "rtn"} for n, s in plan.items()})
    gptq = quantize_state(state, {n: {**s, "method": "gptq"} for n, s in plan.items()}, hessians)
    layers = []
    for name in state:
        if name in hessians and isinstance(gptq[name], QuantTensor):
            rtn_error = output_error(state[name], dequantize_rows(rtn[name]), hessians[name])
            gptq_error = output_error(state[name], dequantize_rows(gptq[name]), hessians[name])
            layers.append({"name": name, "rtn_error": rtn_error, "gptq_error": gptq_error,
                           "ratio": gptq_error / rtn_error})
    symbols = numpy.concatenate([e.q.numpy().ravel() for e in gptq.values() if isinstance(e, QuantTensor)])
    entropy = order0_entropy_bytes(symbols)
    codecs = []
    for codec, (compress, _) in CODECS.items():
        start = time.perf_counter()
        size = len(compress(symbols.tobytes()))
        codecs.append({"codec": codec, "bytes": size, "entropy_bytes": entropy, "ratio": size / entropy,
                       "seconds": time.perf_counter() - start})
    return {"layers": layers, "codecs": codecs}


def main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m golf.bench quant", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bits", type=int, default=6)
    args = parser.parse_args(argv)
    state, hessians = synthetic_layers(args.seed)
    plan = {n: {"bits": args.bits, "clip_k": BENCH_CLIP_K[n]} for n in state}
    report = quant_report(state, hessians, plan)
    print(f"synthetic layers, int{args.bits} SDClip, {BENCH_TOKENS} correlated calibration rows, seed {args.seed}")
    print(f"{'layer':<10} {'shape':>12} {'rtn err':>10} {'gptq err':>10} {'gptq/rtn':>9}")
    for row in report["layers"]:
        shape = "x".join(map(str, BENCH_SHAPES[row["name"]]))
        print(f"{row['name']:<10} {shape:>12} {row['rtn_error']:>10.4f} {row['gptq_error']:>10.4f} "
              f"{row['ratio']:>9.3f}")
    total_rtn = math.sqrt(sum(r["rtn_error"] ** 2 for r in report["layers"]))
    total_gptq = math.sqrt(sum(r["gptq_error"] ** 2 for r in report["layers"]))
    print(f"{'all':<10} {'':>12} {total_rtn:>10.4f} {total_gptq:>10.4f} {total_gptq / total_rtn:>9.3f}")
    print(f"{'codec':<8} {'bytes':>10} {'entropy':>10} {'ratio':>7} {'seconds':>8}")
    for row in report["codecs"]:
        print(f"{row['codec']:<8} {row['bytes']:>10,} {round(row['entropy_bytes']):>10,} {row['ratio']:>7.4f} "
              f"{row['seconds']:>8.2f}")
    return 0
