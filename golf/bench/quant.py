"""`python -m golf.bench quant`: RTN vs GPTQ layer-output error, and codec bytes vs entropy.

Default: synthetic layers (Gaussian weights, std 0.02, fed correlated inputs: white noise through a
random mixing with a decaying spectrum, so GPTQ has correlations to exploit).
`--smoke SECONDS`: train the smoke preset for SECONDS on the sample data, then val_bpb of the fp32
model, RTN-int6 and GPTQ-int6 (same bits, same scales, so the same bytes to within the codec),
and the gap ratio (GPTQ gap / RTN gap). `quant_report(state, hessians, plan)` works on any state dict.
"""
import argparse
import dataclasses
import math
import os
import time

import numpy
import torch

from golf.budget import WallclockBudget
from golf.compress import CODECS
from golf.config import from_env
from golf.data import load_val_byte_sidecar, load_val_tokens
from golf.dist import setup_dist
from golf.evaluate import eval_bpb
from golf.model.attention import sdpa_attention
from golf.quant.rtn import QuantTensor, as_rows, dequantize_rows
from golf.quant.state import dequantize_state, quantize_state
from golf.tokenizer import build_byte_luts, load_tokenizer, val_target_bytes
from golf.train import RunLog, build_and_train, calibrate_hessians

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


def smoke_model_bpb(seconds: float, bits: int) -> tuple[dict, dict, dict, dict]:
    """Train the smoke preset for `seconds`; returns ({fp32, rtn, gptq: val_bpb}, matrices, hessians, plan)."""
    cfg = dataclasses.replace(from_env({"PRESET": "smoke"}), max_wallclock_seconds=seconds, quant_reserve_seconds=0.0,
                              matrix_bits=bits, quant_method="gptq", out_dir=os.path.join("runs", "bench_quant"))
    env = setup_dist(cfg.device)
    model, rules, loader, _ = build_and_train(cfg, env, RunLog(cfg, env), WallclockBudget(cfg, env.device),
                                              sdpa_attention)
    hessians = calibrate_hessians(cfg, env, model, rules, loader)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    val = load_val_tokens(cfg.data_path, cfg.val_max_tokens)
    target_bytes = val_target_bytes(val, build_byte_luts(load_tokenizer(cfg.tokenizer_path), cfg.vocab_size),
                                    load_val_byte_sidecar(cfg.data_path, cfg.val_max_tokens))
    score = lambda m: eval_bpb(m, val, target_bytes, cfg.sw_seq_len, cfg.sw_seq_len, cfg.val_batch_tokens).val_bpb  # noqa: E731
    bpb = {"fp32": score(model)}
    plan = {n: {"bits": r.bits, "clip_k": r.clip_k} for n, r in rules.items()}
    for method in ("rtn", "gptq"):
        entries = quantize_state(state, {n: {**s, "method": method} for n, s in plan.items()}, hessians)
        model.load_state_dict(dequantize_state(entries, state))
        bpb[method] = score(model)
    return bpb, {n: state[n] for n in hessians}, hessians, {n: plan[n] for n in hessians}


def main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m golf.bench quant", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bits", type=int, default=6)
    parser.add_argument("--smoke", type=float, default=0.0, metavar="SECONDS",
                        help="train the smoke preset this long on the sample data and measure val_bpb")
    args = parser.parse_args(argv)
    if args.smoke > 0:
        bpb, state, hessians, plan = smoke_model_bpb(args.smoke, args.bits)
        rtn_gap, gptq_gap = bpb["rtn"] - bpb["fp32"], bpb["gptq"] - bpb["fp32"]
        print(f"smoke model ({args.smoke:.0f} s CPU), val_bpb (non-overlapping windows): fp32 {bpb['fp32']:.4f}  "
              f"rtn-int{args.bits} {bpb['rtn']:.4f} (gap {rtn_gap:+.4f})  gptq-int{args.bits} {bpb['gptq']:.4f} "
              f"(gap {gptq_gap:+.4f})  gap ratio gptq/rtn {gptq_gap / rtn_gap if rtn_gap else float('nan'):.3f}")
        print(f"trained matrices, int{args.bits} SDClip, calibration Hessians from training batches")
    else:
        state, hessians = synthetic_layers(args.seed)
        plan = {n: {"bits": args.bits, "clip_k": BENCH_CLIP_K[n]} for n in state}
        print(f"synthetic layers, int{args.bits} SDClip, {BENCH_TOKENS} correlated calibration rows, seed {args.seed}")
    report = quant_report(state, hessians, plan)
    print(f"{'layer':<24} {'shape':>12} {'rtn err':>10} {'gptq err':>10} {'gptq/rtn':>9}")
    for row in report["layers"]:
        shape = "x".join(map(str, state[row["name"]].shape))
        print(f"{row['name']:<24} {shape:>12} {row['rtn_error']:>10.4f} {row['gptq_error']:>10.4f} "
              f"{row['ratio']:>9.3f}")
    total_rtn = math.sqrt(sum(r["rtn_error"] ** 2 for r in report["layers"]))
    total_gptq = math.sqrt(sum(r["gptq_error"] ** 2 for r in report["layers"]))
    print(f"{'all':<24} {'':>12} {total_rtn:>10.4f} {total_gptq:>10.4f} {total_gptq / total_rtn:>9.3f}")
    print(f"{'codec':<8} {'bytes':>10} {'entropy':>10} {'ratio':>7} {'seconds':>8}")
    for row in report["codecs"]:
        print(f"{row['codec']:<8} {row['bytes']:>10,} {round(row['entropy_bytes']):>10,} {row['ratio']:>7.4f} "
              f"{row['seconds']:>8.2f}")
    return 0
