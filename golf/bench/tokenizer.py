"""Plain SP8192 vs CaseOps SP8192 on the sample corpus: tokens per byte, and val_bpb at equal CPU training seconds.

python -m golf.bench tokenizer [--seconds 300] [--val-tokens 0]
Needs both sample datasets: python data/prepare_sample.py && python data/prepare_sample.py --plain.
Trains the smoke model on each for the same wallclock seconds with the real training loop (one process), and scores the
val split: BPB on the same original bytes for both (the CaseOps side through its val byte sidecar).
Prints one row per tokenizer, with the bytes of the tokenizer model file, and the differences.
"""

import argparse
import dataclasses
import os

from golf.budget import WallclockBudget
from golf.config import Config, GolfError, smoke
from golf.data import load_val_byte_sidecar, load_val_tokens, read_shard, shard_paths
from golf.dist import setup_dist
from golf.evaluate import eval_bpb, target_byte_counts
from golf.model.attention import sdpa_attention
from golf.tokenizer import build_byte_luts, load_tokenizer
from golf.train import RunLog, build_and_train

# The sample datasets data/prepare_sample.py writes (plain with --plain, and CaseOps by default).
SAMPLES = {"plain": ("sample_sp8192", "sample_8192_bpe.model"),
           "caseops": ("sample_sp8192_caseops", "sample_8192_bpe_caseops.model")}


def tokenizer_row(name: str, cfg: Config, val_tokens_limit: int) -> dict:
    """Train cfg for its wallclock seconds on its data, score its val split; figures of one table row."""
    sp = load_tokenizer(cfg.tokenizer_path)
    val = load_val_tokens(cfg.data_path, val_tokens_limit)
    luts = build_byte_luts(sp, cfg.vocab_size)
    byte_counts = target_byte_counts(val, luts, load_val_byte_sidecar(cfg.data_path, val_tokens_limit))
    train_tokens = sum(len(read_shard(p)) for p in shard_paths(cfg.data_path, "train"))
    env = setup_dist("cpu")
    model, _, _, steps = build_and_train(cfg, env, RunLog(cfg, env), WallclockBudget(cfg, env.device), sdpa_attention)
    result = eval_bpb(model, val, luts, cfg.sw_seq_len, cfg.sw_stride, cfg.val_batch_tokens,
                      context=cfg.eval_context, byte_counts=byte_counts)
    return {"name": name, "model_bytes": os.path.getsize(cfg.tokenizer_path), "val_tokens": result.tokens,
            "val_bytes": result.bytes, "tokens_per_byte": result.tokens / result.bytes, "train_tokens": train_tokens,
            "steps": steps, "val_loss": result.val_loss, "val_bpb": result.val_bpb}


def main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m golf.bench tokenizer", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="training wallclock per tokenizer")
    parser.add_argument("--val-tokens", type=int, default=0, help="val tokens scored (0: the whole val split)")
    args = parser.parse_args(argv)
    base = dataclasses.replace(smoke(Config()), max_wallclock_seconds=args.seconds, quant_reserve_seconds=0.0,
                               iterations=10**9, grad_accum_steps=1, train_log_every=10**9,
                               out_dir="runs/bench_tokenizer")
    rows = []
    for transform, (dataset, model) in SAMPLES.items():
        cfg = dataclasses.replace(base, run_id=f"bench_tokenizer_{transform}", data_path=f"./data/datasets/{dataset}",
                                  tokenizer_path=f"./data/tokenizers/{model}")
        if not os.path.isfile(cfg.tokenizer_path):
            raise GolfError(f"{cfg.tokenizer_path}: missing; run `python data/prepare_sample.py"
                            + (" --plain`" if transform == "plain" else "`"))
        rows.append(tokenizer_row(transform, cfg, args.val_tokens))
        r = rows[-1]
        print(f"{transform}: steps:{r['steps']} val_loss:{r['val_loss']:.4f} val_bpb:{r['val_bpb']:.4f}", flush=True)
    print(f"\n{'tokenizer':<10} {'model bytes':>11} {'val tokens':>10} {'val bytes':>9} {'tokens/byte':>11} "
          f"{'train tokens':>12} {'steps':>6} {'nats/token':>10} {'val_bpb':>8}")
    for r in rows:
        print(f"{r['name']:<10} {r['model_bytes']:>11} {r['val_tokens']:>10} {r['val_bytes']:>9} "
              f"{r['tokens_per_byte']:>11.4f} {r['train_tokens']:>12} {r['steps']:>6} {r['val_loss']:>10.4f} "
              f"{r['val_bpb']:>8.4f}")
    plain, caseops = rows
    print(f"caseops - plain: val_bpb {caseops['val_bpb'] - plain['val_bpb']:+.4f}, tokens/byte "
          f"{caseops['tokens_per_byte'] / plain['tokens_per_byte'] - 1:+.1%}, nats/token "
          f"{caseops['val_loss'] - plain['val_loss']:+.4f} ({args.seconds:.0f} s CPU training each, one process; "
          f"val bytes {'equal' if caseops['val_bytes'] == plain['val_bytes'] else 'DIFFER'})")
    return 0
