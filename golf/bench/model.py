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
from golf.data import DistributedTokenLoader, load_val_tokens, shard_paths
from golf.evaluate import eval_bpb
from golf.model.gpt import GPT, size_report
from golf.optim import WeightEMA, build_optimizers, lr_multiplier, set_lr
from golf.params import assign_rules, param_rules
from golf.step import train_step
from golf.tokenizer import build_byte_luts, load_tokenizer


def plain_stack(cfg: Config) -> Config:
    """The same blocks run once each, in order: sequential residual, no loop, no skips, no lanes."""
    return dataclasses.replace(cfg, block="sequential", loop_schedule="loop", train_loops=1, eval_loops=1,
                               loop_enable_at=0.0, unet_skips=False, lane_layers=0, pass_adapter_rank=0)


def train_and_score(cfg: Config, val_tokens: torch.Tensor, luts) -> tuple[float, int, dict]:
    """Train on one CPU process until cfg.max_wallclock_seconds; returns (val_bpb, steps, size report)."""
    torch.manual_seed(cfg.seed)
    device = torch.device("cpu")
    model = GPT(cfg)
    opts = build_optimizers(model, assign_rules(model.named_parameters(), param_rules(cfg)), cfg)
    ema = WeightEMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    loader = DistributedTokenLoader(shard_paths(cfg.data_path, "train"), 0, 1)
    budget = WallclockBudget(cfg, device)
    budget.start("train")
    step, stop = 0, False
    while step < cfg.iterations and not stop:
        set_lr(opts, lr_multiplier(step, budget.train_elapsed, budget.train_seconds, cfg.lr_warmup_steps,
                                   cfg.warmdown_frac))
        model.set_progress(step, budget.progress(step, cfg.iterations))
        train_step(model, loader, opts, cfg, 1, device, ema)
        step += 1
        stop = budget.tick()
    if ema is not None:
        ema.copy_to_model()
    result = eval_bpb(model, val_tokens, luts, cfg.sw_seq_len, cfg.sw_stride, cfg.val_batch_tokens)
    return result.val_bpb, step, size_report(model)


def main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m golf.bench model", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="training wallclock per model")
    parser.add_argument("--val-tokens", type=int, default=65536, help="val tokens scored per model")
    args = parser.parse_args(argv)
    recurrent = dataclasses.replace(smoke(Config()), max_wallclock_seconds=args.seconds, quant_reserve_seconds=0.0,
                                    iterations=10**9)
    sp = load_tokenizer(recurrent.tokenizer_path)
    luts = build_byte_luts(sp, recurrent.vocab_size)
    val_tokens = load_val_tokens(recurrent.data_path, args.val_tokens)
    results = {}
    for name, cfg in (("plain_stack", plain_stack(recurrent)), ("recurrent_parallel", recurrent)):
        bpb, steps, sizes = train_and_score(cfg, val_tokens, luts)
        results[name] = bpb
        print(f"{name}: val_bpb:{bpb:.4f} steps:{steps} unique_params:{sizes['unique_params']} "
              f"effective_params:{sizes['effective_params']} depth_eval:{sizes['eval_depth']}", flush=True)
    diff = results["recurrent_parallel"] - results["plain_stack"]
    print(f"val_bpb difference (recurrent_parallel - plain_stack): {diff:+.4f} "
          f"({args.seconds:.0f} s CPU training each, {val_tokens.numel()} val tokens)")
    return 0
