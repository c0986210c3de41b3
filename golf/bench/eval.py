"""Every final-eval variant on one model, side by side: val_bpb and seconds.

python -m golf.bench eval [--train-seconds 90] [--artifact final_model.golf] [--val-tokens 0]
                          [--ttt-params lora] [--ttt-lr F] [--ttt-steps N] [--ttt-chunk-tokens N]
Rows: plain (non-overlapping windows), sliding windows across documents, doc-isolated windows, stream LoRA TTT
(TTT_MODE=stream, over sliding windows; once per --ttt-params entry), per-doc batched LoRA TTT without phases,
and phased global SGD + per-doc LoRA (TTT_MODE=doc, the default). All are legal (score-first, one pass); the
claimed row is the config's own (EVAL_CONTEXT / TTT_MODE). Without --artifact, trains a smoke-preset model for
--train-seconds with the real training loop (CPU, or the GPU when there is one); with it, scores the dequantised
artifact under the config stored in it. Every eval scores the same val tokens. Needs: python data/prepare_sample.py.
"""

import argparse
import dataclasses
import time

from golf.artifact import read_artifact_meta
from golf.budget import WallclockBudget
from golf.config import Config, config_from_dict, smoke
from golf.data import load_val_tokens
from golf.dist import setup_dist
from golf.evaluate import eval_bpb, target_byte_counts
from golf.model.attention import sdpa_attention
from golf.model.gpt import GPT
from golf.step import autocast_dtype
from golf.tokenizer import build_byte_luts, load_tokenizer
from golf.train import RunLog, build_and_train, load_artifact_model
from golf.ttt import doc_ttt, score_first_ttt


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
    parser.add_argument("--train-seconds", "--seconds", dest="seconds", type=float, default=90.0,
                        help="training wallclock (without --artifact)")
    parser.add_argument("--artifact", help="score this .golf artifact instead of training")
    parser.add_argument("--val-tokens", type=int, default=0, help="val tokens scored (0: all)")
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
    luts = tuple(t.to(env.device) for t in build_byte_luts(load_tokenizer(cfg.tokenizer_path), cfg.vocab_size))
    val_tokens = load_val_tokens(cfg.data_path, args.val_tokens)
    nbytes = target_byte_counts(val_tokens, luts)
    amp = autocast_dtype(env.device)
    print(f"{val_tokens.numel()} val tokens; window {cfg.sw_seq_len}, stride {cfg.sw_stride}; stream TTT chunks of "
          f"{cfg.ttt_chunk_tokens}, {cfg.ttt_steps} steps, lr {cfg.ttt_lr}, LoRA rank {cfg.ttt_lora_rank}; per-doc "
          f"LoRA rank {cfg.ttt_doc_lora_rank} lr {cfg.ttt_doc_lora_lr} chunks {cfg.ttt_doc_chunk_tokens} batch "
          f"{cfg.ttt_doc_batch}; {cfg.ttt_phases} phases over {cfg.ttt_phase_prefix_docs} docs")

    def windows(context, stride):
        return lambda: eval_bpb(model, val_tokens, luts, cfg.sw_seq_len, stride, cfg.val_batch_tokens,
                                device=env.device, autocast_dtype=amp, context=context, byte_counts=nbytes)

    def ttt(fn, **changes):
        c = dataclasses.replace(cfg, **changes)
        return lambda: fn(model, val_tokens, luts, c, device=env.device, autocast_dtype=amp, byte_counts=nbytes)

    runs = [("plain (stride = window)", "", windows("sliding", cfg.sw_seq_len)),
            ("sliding window", "sliding:", windows("sliding", cfg.sw_stride)),
            ("doc-isolated", "doc:", windows("doc", cfg.sw_stride))]
    for params in args.ttt_params.split(","):
        runs.append((f"stream TTT {params}", "sliding:stream", ttt(score_first_ttt, ttt_params=params)))
    runs += [("per-doc LoRA TTT", "doc:doc-nophase", ttt(doc_ttt, ttt_phases=0)),
             ("phased + per-doc LoRA TTT", "doc:doc", ttt(doc_ttt))]
    claimed = f"{cfg.eval_context}:{cfg.ttt_mode if cfg.ttt_enabled else ''}"
    claimed += "-nophase" if claimed == "doc:doc" and cfg.ttt_phases == 0 else ""
    print(f"{'eval':<28} {'val_loss':>10} {'val_bpb':>10} {'vs plain':>9} {'seconds':>8}  claimed")
    plain_bpb = None
    for name, key, run in runs:
        t0 = time.perf_counter()
        r = run()
        seconds = time.perf_counter() - t0
        plain_bpb = plain_bpb or r.val_bpb
        print(f"{name:<28} {r.val_loss:>10.5f} {r.val_bpb:>10.5f} {r.val_bpb - plain_bpb:>+9.5f} {seconds:>8.1f}"
              f"  {'<- claimed by the config' if key == claimed else ''}", flush=True)
    return 0
