"""main(): the whole run. Config -> data -> model -> timed training -> quantise -> write -> reload -> re-score.

The only result a run reports is the round trip: the artifact as written, reloaded and evaluated
(with TTT_ENABLED, the score-first TTT score of that reloaded model).
"""

import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import platform
import sys
import time

import torch
from torch.nn.parallel import DistributedDataParallel

from golf.artifact import encode_artifact, read_artifact, write_artifact
from golf.config import Config, GolfError, from_env
from golf.data import DistributedTokenLoader, data_fingerprint, load_val_tokens, shard_paths
from golf.dist import DistEnv, all_reduce_, setup_dist, teardown_dist
from golf.evaluate import eval_bpb, eval_phase_started
from golf.kernels.attention import select_attention
from golf.model.gpt import GPT
from golf.optim import build_optimizers, lr_multiplier, set_lr
from golf.params import assign_rules, param_rules
from golf.quant.state import dequantize_state, quantize_state
from golf.tokenizer import build_byte_luts, load_tokenizer
from golf.ttt import eval_plan_lines, final_eval


class RunLog:
    """Rank 0 prints each line and appends it to <out_dir>/logs/<run_id>.txt; other ranks stay quiet."""

    def __init__(self, cfg: Config, env: DistEnv):
        self.path = os.path.join(cfg.out_dir, "logs", f"{cfg.run_id}.txt")
        self.on = env.is_main
        if self.on:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            open(self.path, "w").close()

    def __call__(self, line: str, console: bool = True) -> None:
        if not self.on:
            return
        if console:
            print(line, flush=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def log_provenance(log: RunLog, cfg: Config, code_path: str, paths: list[str]) -> None:
    """Enough to reproduce the run: source hash (+ source, in the file only), config, versions, data hash."""
    code = open(code_path, "rb").read()
    log(f"code:{os.path.basename(code_path)} sha256:{hashlib.sha256(code).hexdigest()[:16]} bytes:{len(code)}")
    log(f"config:{json.dumps(dataclasses.asdict(cfg), sort_keys=True)}")
    cuda = torch.version.cuda or "none"
    log(f"versions: python:{platform.python_version()} torch:{torch.__version__} cuda:{cuda}")
    log(f"data_fingerprint:{data_fingerprint(paths)} shards:{len(paths)}")
    log("=" * 40 + " source " + "=" * 40 + "\n" + code.decode("utf-8", "replace"), console=False)


def autocast_dtype(device: torch.device):
    return torch.bfloat16 if device.type == "cuda" else None


def train_step(model, loader, opts, cfg: Config, grad_accum: int, device) -> torch.Tensor:
    """One optimiser step over grad_accum micro-batches; returns the mean micro-batch loss (detached)."""
    total = torch.zeros((), device=device)
    for micro in range(grad_accum):
        x, y = loader.next_batch(cfg.train_batch_tokens, cfg.train_seq_len, grad_accum)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        # Gradients are all-reduced only on the last micro-batch.
        sync = micro == grad_accum - 1 or not isinstance(model, DistributedDataParallel)
        with contextlib.nullcontext() if sync else model.no_sync():
            with torch.autocast(device.type, dtype=autocast_dtype(device), enabled=device.type == "cuda"):
                loss = model(x, y) / grad_accum
            loss.backward()
        total += loss.detach()
    for opt in opts:
        opt.step()
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    return total


def run_training(cfg: Config, env: DistEnv, log: RunLog, model: GPT, train_paths: list[str]) -> GPT:
    """Untimed warm-up (then reset), then train until the time budget or the iteration cap."""
    rules = assign_rules(model.named_parameters(), param_rules(cfg))
    opts = build_optimizers(model, rules, cfg)
    net = torch.compile(model) if cfg.compile else model
    if env.world_size > 1:
        net = DistributedDataParallel(net, device_ids=[env.local_rank] if env.device.type == "cuda" else None)
    grad_accum = cfg.grad_accum_steps or max(1, 8 // env.world_size)
    if cfg.train_batch_tokens % (env.world_size * grad_accum * cfg.train_seq_len):
        raise GolfError(f"TRAIN_BATCH_TOKENS={cfg.train_batch_tokens} is not a multiple of world_size x "
                        f"grad_accum x TRAIN_SEQ_LEN = {env.world_size} x {grad_accum} x {cfg.train_seq_len}")
    budget = cfg.max_wallclock_seconds - cfg.quant_reserve_seconds
    log(f"budget_plan: train:{budget:.1f}s quant_reserve:{cfg.quant_reserve_seconds:.1f}s "
        f"total:{cfg.max_wallclock_seconds:.1f}s compile_warmup_steps:{cfg.compile_warmup_steps} (untimed)")
    log(f"world_size:{env.world_size} grad_accum_steps:{grad_accum} device:{env.device.type}")

    # Warm-up compiles kernels on real batches; then weights, optimiser state and data order are reset.
    if cfg.compile_warmup_steps > 0:
        init_model = copy.deepcopy(model.state_dict())
        init_opts = [copy.deepcopy(o.state_dict()) for o in opts]
        warm_loader = DistributedTokenLoader(train_paths, env.rank, env.world_size)
        for _ in range(cfg.compile_warmup_steps):
            train_step(net, warm_loader, opts, cfg, grad_accum, env.device)
        model.load_state_dict(init_model)
        for o, s in zip(opts, init_opts):
            o.load_state_dict(s)

    loader = DistributedTokenLoader(train_paths, env.rank, env.world_size)
    sync = torch.cuda.synchronize if env.device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    step, elapsed = 0, 0.0
    while step < cfg.iterations:
        set_lr(opts, lr_multiplier(step, elapsed, budget, cfg.lr_warmup_steps, cfg.warmdown_frac))
        loss = train_step(net, loader, opts, cfg, grad_accum, env.device)
        step += 1
        # Every rank uses the slowest rank's clock, so LR and the stop step agree everywhere (one all-reduce).
        clock = torch.tensor([time.perf_counter() - t0], dtype=torch.float64, device=env.device)
        elapsed = all_reduce_(clock, op=torch.distributed.ReduceOp.MAX).item()
        if step % cfg.train_log_every == 0 or step == 1 or elapsed >= budget or step == cfg.iterations:
            log(f"step:{step}/{cfg.iterations} train_loss:{loss.item():.4f} train_time:{elapsed * 1000:.0f}ms "
                f"step_avg:{elapsed * 1000 / step:.2f}ms")
        if elapsed >= budget:
            break
    log(f"stopped step:{step} train_time:{elapsed * 1000:.0f}ms planned:{budget * 1000:.0f}ms")
    return model


def score(cfg: Config, env: DistEnv, model: GPT, val_tokens, luts):
    return eval_bpb(model, val_tokens, luts, cfg.sw_seq_len, cfg.sw_stride, cfg.val_batch_tokens,
                    env.rank, env.world_size, env.device, autocast_dtype(env.device))


def quantize_and_write(cfg: Config, model: GPT, path: str) -> int:
    """Quantise by the policy table, write the artifact atomically; returns its size in bytes."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    rules = assign_rules(model.named_parameters(), param_rules(cfg))
    plan = {name: {"bits": r.bits, "clip_k": r.clip_k, "method": cfg.quant_method} for name, r in rules.items()}
    entries = quantize_state(state, plan, None)
    groups = {name: r.group for name, r in rules.items()}
    meta = {"config": dataclasses.asdict(cfg)}
    write_artifact(path, encode_artifact(entries, groups, meta, cfg.codec))
    return os.path.getsize(path)


def main(code_path: str) -> None:
    cfg = from_env()
    env = setup_dist(cfg.device)
    log = RunLog(cfg, env)
    torch.manual_seed(cfg.seed)
    sp = load_tokenizer(cfg.tokenizer_path)
    if sp.vocab_size() != cfg.vocab_size:
        raise GolfError(f"{cfg.tokenizer_path}: vocab {sp.vocab_size()} != VOCAB_SIZE={cfg.vocab_size}")
    luts = tuple(t.to(env.device) for t in build_byte_luts(sp, cfg.vocab_size))
    train_paths = shard_paths(cfg.data_path, "train")
    log_provenance(log, cfg, code_path, train_paths + shard_paths(cfg.data_path, "val"))

    attention_name, attention_fn = select_attention(env.device.type, cfg.attention)
    log(f"attention_backend:{attention_name}")
    model = GPT(cfg, attention_fn).to(env.device)
    log(f"model_params:{sum(p.numel() for p in model.parameters())}")
    run_training(cfg, env, log, model, train_paths)

    artifact_path = os.path.join(cfg.out_dir, "final_model.golf")
    if env.is_main:
        quantize_and_write(cfg, model, artifact_path)
    if env.world_size > 1:
        torch.distributed.barrier()

    # Evaluation starts here: training and calibration are done, and the val split is first read now.
    log(eval_phase_started())
    val_tokens = load_val_tokens(cfg.data_path, cfg.val_max_tokens)
    for line in eval_plan_lines(model, val_tokens, cfg, env.world_size, env.device, autocast_dtype(env.device)):
        log(line)
    pre = score(cfg, env, model, val_tokens, luts)
    log(f"prequant val_loss:{pre.val_loss:.8f} val_bpb:{pre.val_bpb:.8f}")
    log(f"val_tokens:{pre.tokens} val_bytes:{pre.bytes}")
    entries, _ = read_artifact(artifact_path)
    reloaded = GPT(cfg, attention_fn).to(env.device)
    like = reloaded.state_dict()
    reloaded.load_state_dict(dequantize_state(entries, like))
    final_eval(reloaded, val_tokens, luts, cfg, env.rank, env.world_size, env.device, autocast_dtype(env.device), log)
    artifact_bytes = os.path.getsize(artifact_path)
    code_bytes = os.path.getsize(code_path)
    log(f"artifact_bytes:{artifact_bytes} code_bytes:{code_bytes} total_bytes:{artifact_bytes + code_bytes}")
    teardown_dist()


def run(code_path: str) -> None:
    """Entry point: bad input ends in one line on stderr and exit code 2, not a traceback."""
    try:
        main(code_path)
    except GolfError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run(__file__)
