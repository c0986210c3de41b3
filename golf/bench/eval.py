"""Plain (non-overlapping) vs sliding-window vs sliding + score-first TTT BPB of one model, with eval seconds.

python -m golf.bench eval [--seconds 90] [--artifact final_model.golf] [--val-tokens 32768]
                          [--ttt-params lora,mlp_proj] [--ttt-lr F] [--ttt-steps N] [--ttt-chunk-tokens N]
Without --artifact, trains a smoke-preset model for --seconds with the real training loop (CPU, or the GPU
when there is one); with it, scores the dequantised artifact under the config stored in it. Every eval
scores the same val tokens; TTT runs once per --ttt-params entry. Needs: python data/prepare_sample.py.
"""

import argparse
import dataclasses
import time

from golf.artifact import read_artifact_meta
from golf.budget import WallclockBudget
from golf.config import Config, config_from_dict, smoke
from golf.data import load_val_byte_sidecar, load_val_tokens
from golf.dist import setup_dist
from golf.evaluate import eval_bpb
from golf.model.attention import sdpa_attention
from golf.model.gpt import GPT
from golf.step import autocast_dtype
from golf.tokenizer import build_byte_luts, load_tokenizer, val_target_bytes
from golf.train import RunLog, build_and_train, load_artifact_model
from golf.ttt import score_first_ttt


def trained_model(cfg: Config, env) -> GPT:
    model, _, _, steps = build_and_train(cfg, env, RunLog(cfg, env), WallclockBudget(cfg, env.device), sdpa_attention)
    print(f"trained {steps} steps in {cfg.max_wallclock_seconds:.0f}s on {env.device.type}", flush=True)
    return model


def artifact_model(path: str, cfg: Config, env) -> tuple[GPT, Config]:
    """The dequantised artifact model under its stored config, on this bench's device."""
    stored = config_from_dict(read_artifact_meta(path).get("config"), path)
    cfg = dataclasses.replace(stored, device=cfg.device, compile=cfg.compile)
    return load_artifact_model(path, cfg, sdpa_attention, env.device), cfg


def main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m golf.bench eval", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="training wallclock (without --artifact)")
    parser.add_argument("--artifact", help="score this .golf artifact instead of training")
    parser.add_argument("--val-tokens", type=int, default=32768, help="val tokens scored (0: all)")
    parser.add_argument("--ttt-params", default="lora", help="comma list of golf.ttt.TTT_TARGETS names")
    parser.add_argument("--ttt-lr", type=float)
    parser.add_argument("--ttt-steps", type=int)
    parser.add_argument("--ttt-chunk-tokens", type=int)
    args = parser.parse_args(argv)
    env = setup_dist("auto")
    cfg = dataclasses.replace(smoke(Config()), max_wallclock_seconds=args.seconds, quant_reserve_seconds=0.0,
                              iterations=10**9, train_log_every=10**9, out_dir="runs/bench_eval", run_id="bench_eval",
                              device=env.device.type)
    model, cfg = artifact_model(args.artifact, cfg, env) if args.artifact else (trained_model(cfg, env), cfg)
    overrides = dict(ttt_lr=args.ttt_lr, ttt_steps=args.ttt_steps, ttt_chunk_tokens=args.ttt_chunk_tokens)
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    val_tokens = load_val_tokens(cfg.data_path, args.val_tokens)
    target_bytes = val_target_bytes(val_tokens, build_byte_luts(load_tokenizer(cfg.tokenizer_path), cfg.vocab_size),
                                    load_val_byte_sidecar(cfg.data_path, args.val_tokens))
    amp = autocast_dtype(env.device)
    print(f"{val_tokens.numel()} val tokens; window {cfg.sw_seq_len}, stride {cfg.sw_stride}; TTT chunks of "
          f"{cfg.ttt_chunk_tokens}, {cfg.ttt_steps} steps, lr {cfg.ttt_lr}, LoRA rank {cfg.ttt_lora_rank}")
    runs = [("plain (stride = window)", lambda: eval_bpb(model, val_tokens, target_bytes, cfg.sw_seq_len, cfg.sw_seq_len,
                                                         cfg.val_batch_tokens, device=env.device, autocast_dtype=amp)),
            ("sliding window", lambda: eval_bpb(model, val_tokens, target_bytes, cfg.sw_seq_len, cfg.sw_stride,
                                                cfg.val_batch_tokens, device=env.device, autocast_dtype=amp))]
    for params in args.ttt_params.split(","):
        ttt_cfg = dataclasses.replace(cfg, ttt_params=params)
        runs.append((f"sliding + TTT {params}", lambda c=ttt_cfg: score_first_ttt(
            model, val_tokens, target_bytes, c, device=env.device, autocast_dtype=amp)))
    print(f"{'eval':<28} {'val_loss':>10} {'val_bpb':>10} {'vs plain':>9} {'seconds':>8}")
    plain_bpb = None
    for name, run in runs:
        t0 = time.perf_counter()
        r = run()
        seconds = time.perf_counter() - t0
        plain_bpb = plain_bpb or r.val_bpb
        print(f"{name:<28} {r.val_loss:>10.5f} {r.val_bpb:>10.5f} {r.val_bpb - plain_bpb:>+9.5f} {seconds:>8.1f}",
              flush=True)
    return 0
