"""Recipes side by side at smoke dims: val_bpb at equal CPU training seconds, steps taken and ms per step.

python -m golf.bench model [--recipes baseline,gpt_j_x0,default] [--seconds 60] [--val-tokens 65536]
Each recipe (golf/recipes.py) gets the smoke preset's scale, trains on one CPU process with the real training
loop for the same wallclock seconds, and its EMA/final weights are scored (sliding window, unquantised).
Needs the sample data: python data/prepare_sample.py.
"""

import argparse
import dataclasses

import torch

from golf.budget import WallclockBudget
from golf.config import Config, smoke
from golf.data import load_val_tokens
from golf.dist import setup_dist
from golf.evaluate import eval_bpb
from golf.model.attention import sdpa_attention
from golf.model.gpt import size_report
from golf.recipes import RECIPES
from golf.tokenizer import build_byte_luts, load_tokenizer
from golf.train import RunLog, build_and_train


def bench_config(recipe: Config, seconds: float) -> Config:
    """The recipe at smoke scale, trained for `seconds` of wallclock with no quantisation reserve."""
    return dataclasses.replace(smoke(recipe), max_wallclock_seconds=seconds, quant_reserve_seconds=0.0,
                               iterations=10**9, grad_accum_steps=1, train_log_every=10**9, out_dir="runs/bench_model")


def train_and_score(cfg: Config, val_tokens: torch.Tensor, luts) -> dict:
    """Train on one CPU process until cfg.max_wallclock_seconds with the real training loop; returns val_bpb of
    the EMA/final weights, steps, ms per step and the size report."""
    env = setup_dist("cpu")
    budget = WallclockBudget(cfg, env.device)
    model, _, _, steps = build_and_train(cfg, env, RunLog(cfg, env), budget, sdpa_attention)
    result = eval_bpb(model, val_tokens, luts, cfg.sw_seq_len, cfg.sw_stride, cfg.val_batch_tokens)
    return dict(val_bpb=result.val_bpb, steps=steps, ms_per_step=budget.train_elapsed * 1000 / max(steps, 1),
                **size_report(model))


def main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m golf.bench model", description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="baseline,gpt_j_x0,default", help="comma-separated golf/recipes.py names")
    parser.add_argument("--seconds", type=float, default=60.0, help="training wallclock per recipe")
    parser.add_argument("--val-tokens", type=int, default=65536, help="val tokens scored per recipe")
    args = parser.parse_args(argv)
    names = [n for n in args.recipes.split(",") if n]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"--recipes: unknown {', '.join(unknown)} (choices: {', '.join(RECIPES)})")
    first = bench_config(RECIPES[names[0]], args.seconds)
    luts = build_byte_luts(load_tokenizer(first.tokenizer_path), first.vocab_size)
    val_tokens = load_val_tokens(first.data_path, args.val_tokens)
    rows = []
    for name in names:
        r = train_and_score(dataclasses.replace(bench_config(RECIPES[name], args.seconds), run_id=name), val_tokens,
                            luts)
        rows.append((name, r))
        print(f"{name}: val_bpb:{r['val_bpb']:.4f} steps:{r['steps']} ms_per_step:{r['ms_per_step']:.0f} "
              f"unique_params:{r['unique_params']} depth_eval:{r['eval_depth']}", flush=True)
    print(f"\n{args.seconds:.0f} s CPU training each (one process), {val_tokens.numel()} val tokens, smoke dims")
    print(f"{'recipe':<10} {'val_bpb':>8} {'steps':>6} {'ms/step':>8} {'params':>9}")
    for name, r in rows:
        print(f"{name:<10} {r['val_bpb']:>8.4f} {r['steps']:>6} {r['ms_per_step']:>8.0f} {r['unique_params']:>9}")
    return 0
