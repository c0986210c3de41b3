"""`python -m golf.bench step`: ms per training step of a recipe, and the steps that fit its training budget.

python -m golf.bench step [--recipe default] [--preset record|smoke] [--steps 20] [--warmup 5] [--compile]
Random tokens (the step's cost does not depend on them), the real model, optimisers and train_step, one
process with the grad accumulation an 8-process run would have per rank (1). On CPU use --preset smoke;
absolute GPU times only mean something measured on the GPU itself.
"""

import argparse
import dataclasses
import time

import torch

from golf.config import PRESETS
from golf.dist import setup_dist
from golf.kernels.attention import select_attention
from golf.model.gpt import GPT, size_report
from golf.optim import build_optimizers
from golf.params import assign_rules, param_rules
from golf.recipes import RECIPES
from golf.step import train_step


class RandomTokens:
    """Stands in for DistributedTokenLoader: uniform random (x, y) micro-batches of the requested shape."""

    def __init__(self, vocab_size: int, world_size: int, seed: int = 0):
        self.vocab_size, self.world_size = vocab_size, world_size
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int):
        rows = global_tokens // (self.world_size * grad_accum_steps * seq_len)
        seq = torch.randint(0, self.vocab_size, (rows, seq_len + 1), generator=self.generator)
        return seq[:, :-1], seq[:, 1:]


def time_steps(cfg, steps: int, warmup: int, world_size: int) -> dict:
    """Median ms per optimiser step after `warmup` untimed steps, with the loop schedule at full depth.

    Also: compile_s, the first step's seconds (torch.compile traces and compiles there), and on CUDA the
    peak bytes allocated over all steps (peak_memory_bytes; None on CPU)."""
    env = setup_dist(cfg.device)
    attention_name, attention_fn = select_attention(env.device.type, cfg.attention)
    model = GPT(cfg, attention_fn).to(env.device)
    model.set_progress(0, 1.0)  # time the deepest (looped) configuration the run spends most time in
    opts = build_optimizers(model, assign_rules(model.named_parameters(), param_rules(cfg)), cfg)
    net = torch.compile(model) if cfg.compile else model
    loader = RandomTokens(cfg.vocab_size, world_size)
    grad_accum = cfg.grad_accum_steps or max(1, 8 // world_size)
    sync = torch.cuda.synchronize if env.device.type == "cuda" else (lambda: None)
    if env.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(env.device)
    times, compile_s = [], None
    for i in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        train_step(net, loader, opts, cfg, grad_accum, env.device)
        sync()
        if i == 0:
            compile_s = time.perf_counter() - t0
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    peak = torch.cuda.max_memory_allocated(env.device) if env.device.type == "cuda" else None
    return {"ms": 1000 * times[len(times) // 2], "compile_s": compile_s, "peak_memory_bytes": peak,
            "attention": attention_name, "device": env.device.type, "grad_accum": grad_accum, **size_report(model)}


def main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m golf.bench step", description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="default", choices=sorted(RECIPES))
    parser.add_argument("--preset", default="record", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--world-size", type=int, default=8, help="the run this projects to (sets grad accum)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (record runs do)")
    args = parser.parse_args(argv)
    cfg = PRESETS[args.preset](RECIPES[args.recipe])
    cfg = dataclasses.replace(cfg, compile=args.compile, device="cuda" if torch.cuda.is_available() else "cpu")
    r = time_steps(cfg, args.steps, args.warmup, args.world_size)
    budget = cfg.max_wallclock_seconds - cfg.quant_reserve_seconds
    tokens = cfg.train_batch_tokens // args.world_size
    print(f"recipe:{args.recipe} preset:{args.preset} device:{r['device']} attention:{r['attention']} "
          f"compile:{args.compile} unique_params:{r['unique_params']} effective_params:{r['effective_params']}")
    print(f"one rank of {args.world_size}: {tokens} tokens/step ({r['grad_accum']} micro-batches): "
          f"{r['ms']:.1f} ms/step (median of {args.steps})")
    print(f"projected: {budget / (r['ms'] / 1000):.0f} steps in the {budget:.0f} s training budget "
          f"(communication not included)")
    return 0
