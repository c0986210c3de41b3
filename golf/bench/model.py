"""Plain stack vs the default recurrent parallel-residual stack, same unique weights, same CPU time budget.

python -m golf.bench model [--seconds 60] [--val-tokens 65536]
Trains both on the smoke corpus for the same wallclock seconds and prints their val_bpb and the difference.
Needs the sample data: python data/prepare_sample.py.
"""

import argparse
import dataclasses

import torch

from golf.budget import WallclockBudget
from golf.config import Config, smoke
from golf.data import load_val_byte_sidecar, load_val_tokens
from golf.evaluate import eval_bpb
from golf.model.attention import sdpa_attention
from golf.model.gpt import size_report
from golf.dist import setup_dist
from golf.tokenizer import build_byte_luts, load_tokenizer, val_target_bytes
from golf.train import RunLog, build_and_train


def plain_stack(cfg: Config) -> Config:
    """The same blocks run once each, in order: sequential residual, no loop, no skips, no lanes."""
    return dataclasses.replace(cfg, block="sequential", loop_schedule="loop", train_loops=1, eval_loops=1,
                               loop_enable_at=0.0, unet_skips=False, lane_layers=0, pass_adapter_rank=0)


def train_and_score(cfg: Config, val_tokens: torch.Tensor, target_bytes: torch.Tensor) -> tuple[float, int, dict]:
    """Train on one CPU process until cfg.max_wallclock_seconds with the real training loop; returns
    (val_bpb of the EMA/final weights, steps, size report)."""
    env = setup_dist("cpu")
    model, _, _, steps = build_and_train(cfg, env, RunLog(cfg, env), WallclockBudget(cfg, env.device), sdpa_attention)
    result = eval_bpb(model, val_tokens, target_bytes, cfg.sw_seq_len, cfg.sw_stride, cfg.val_batch_tokens)
    return result.val_bpb, steps, size_report(model)


def main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m golf.bench model", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="training wallclock per model")
    parser.add_argument("--val-tokens", type=int, default=65536, help="val tokens scored per model")
    args = parser.parse_args(argv)
    recurrent = dataclasses.replace(smoke(Config()), max_wallclock_seconds=args.seconds, quant_reserve_seconds=0.0,
                                    iterations=10**9, grad_accum_steps=1, train_log_every=10**9,
                                    out_dir="runs/bench_model")
    sp = load_tokenizer(recurrent.tokenizer_path)
    val_tokens = load_val_tokens(recurrent.data_path, args.val_tokens)
    target_bytes = val_target_bytes(val_tokens, build_byte_luts(sp, recurrent.vocab_size),
                                    load_val_byte_sidecar(recurrent.data_path, args.val_tokens))
    results = {}
    for name, cfg in (("plain_stack", plain_stack(recurrent)), ("recurrent_parallel", recurrent)):
        bpb, steps, sizes = train_and_score(dataclasses.replace(cfg, run_id=name), val_tokens, target_bytes)
        results[name] = bpb
        print(f"{name}: val_bpb:{bpb:.4f} steps:{steps} unique_params:{sizes['unique_params']} "
              f"effective_params:{sizes['effective_params']} depth_eval:{sizes['eval_depth']}", flush=True)
    diff = results["recurrent_parallel"] - results["plain_stack"]
    print(f"val_bpb difference (recurrent_parallel - plain_stack): {diff:+.4f} "
          f"({args.seconds:.0f} s CPU training each, {val_tokens.numel()} val tokens)")
    return 0
