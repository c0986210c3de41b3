"""main(): the whole run. Config -> data -> model -> timed training -> quantise -> write -> reload -> re-score.

The only result a run reports is the round trip: the artifact as written, reloaded and evaluated
(with TTT_ENABLED, the score-first TTT score of that reloaded model).
"""

import copy
import dataclasses
import hashlib
import json
import linecache
import os
import platform
import subprocess
import sys

import torch
from torch.nn.parallel import DistributedDataParallel

from golf.artifact import check_symbol_settings, encode_artifact, read_artifact, write_artifact
from golf.budget import WallclockBudget, size_violation_line
from golf.checkpoint import CHECKPOINTERS
from golf.config import RECIPE, Config, GolfError, from_env, pick
from golf.data import (TRAIN_LOADERS, TrainLoader, data_fingerprint, load_val_byte_sidecar, load_val_tokens, shard_paths,
                       val_byte_sidecar_paths)
from golf.dist import DistEnv, all_reduce_, setup_dist, teardown_dist
from golf.evaluate import eval_bpb, eval_phase_started, target_byte_counts
from golf.kernels.attention import select_attention
from golf.model.gpt import GPT, size_report
from golf.optim import (WeightEMA, build_optimizers, lr_multiplier, muon_momenta, muon_momentum_at,
                        restore_muon_momenta, set_lr, set_muon_momentum)
from golf.params import ParamRule, assign_rules, param_rules
from golf.quant.awq import activation_rms, protect_salient_groups
from golf.quant.gptq import collect_hessians
from golf.quant.state import LQER_SELECTIONS, QUANTIZERS, LqerPlan, dequantize_state, quantize_state
from golf.step import autocast_dtype, train_step
from golf.tokenizer import build_byte_luts, load_tokenizer, tokenizer_transform
from golf.ttt import eval_plan_lines, final_eval, pass_stride

SIZE_LIMIT = 16_000_000  # decimal bytes: code + compressed model (the challenge's artifact limit)


class RunLog:
    """Rank 0 prints each line and appends it to <out_dir>/logs/<run_id>.txt; other ranks stay quiet."""

    def __init__(self, cfg: Config, env: DistEnv):
        self.path = os.path.join(cfg.out_dir, "logs", f"{cfg.run_id}.txt")
        self.on = env.is_main
        if self.on:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            open(self.path, "a" if cfg.resume else "w").close()  # a resumed run's log goes on

    def __call__(self, line: str, console: bool = True) -> None:
        if not self.on:
            return
        if console:
            print(line, flush=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def git_commit(directory: str) -> str:
    """HEAD of the checkout holding `directory`; "unknown" outside one (best effort, never fails the run)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def log_provenance(log: RunLog, cfg: Config, code_path: str, paths: list[str]) -> None:
    """Enough to reproduce the run: the file's hash, the source that ran (in the file only), config, versions, data
    hash. A self-extracting train_gpt.py (Latin-1 bytes, not text) registered its source with linecache under its own
    path; any other file is read from disk. bytes: counts the logged source, which golf/logparse.py skips by it."""
    code = open(code_path, "rb").read()
    source = "".join(linecache.getlines(code_path))
    log(f"code:{os.path.basename(code_path)} sha256:{hashlib.sha256(code).hexdigest()[:16]} "
        f"bytes:{len(source.encode('utf-8'))}")
    log(f"recipe:{RECIPE} git:{git_commit(os.path.dirname(os.path.abspath(code_path)))}")
    log(f"config:{json.dumps(dataclasses.asdict(cfg), sort_keys=True)}")
    cuda = torch.version.cuda or "none"
    log(f"versions: python:{platform.python_version()} torch:{torch.__version__} cuda:{cuda}")
    log(f"data_fingerprint:{data_fingerprint(paths)} shards:{len(paths)}")
    log("=" * 40 + " source " + "=" * 40 + "\n" + source, console=False)
    log("=" * 40 + " end source " + "=" * 40, console=False)  # golf/logparse.py reads on after this line


def across_ranks(net, cfg: Config, env: DistEnv, varying_graph: bool = False):
    """net wrapped in DDP (gradients averaged in backward, then clipped), or as it is with one rank or with
    grad_clip_per_rank (train_step clips each rank's gradient, then averages: the record's order)."""
    if env.world_size == 1 or cfg.grad_clip_per_rank:
        return net
    return DistributedDataParallel(net, device_ids=[env.local_rank] if env.device.type == "cuda" else None,
                                   find_unused_parameters=varying_graph)


def reset_after_warmup(cfg: Config, world_size: int, model: GPT, opts: list, init_model: dict,
                       init_opts: list[dict]) -> None:
    """Weights and optimiser state back to before the warm-up; distributed, Muon's momentum stays, as the record's
    shard momentum does (Config.warmup_keep_muon_momentum)."""
    kept = muon_momenta(opts) if cfg.warmup_keep_muon_momentum and world_size > 1 else {}
    model.load_state_dict(init_model)
    for o, s in zip(opts, init_opts):
        o.load_state_dict(s)
    restore_muon_momenta(opts, kept)


def run_training(cfg: Config, env: DistEnv, log: RunLog, model: GPT, rules: dict[str, ParamRule],
                 loader: TrainLoader, budget: WallclockBudget) -> int:
    """Untimed warm-up (then reset), then train until the time budget or the iteration cap; EMA weights on exit.
    CHECKPOINTING=on: RESUME continues a checkpoint, CHECKPOINT_EVERY_SECONDS writes them (golf/checkpoint.py).

    Returns the number of optimiser steps taken."""
    checkpoints = pick(CHECKPOINTERS, cfg.checkpointing, "CHECKPOINTING")(cfg, env, log)  # checks RESUME first
    opts = build_optimizers(model, rules, cfg)
    net = across_ranks(torch.compile(model) if cfg.compile else model, cfg, env, model.schedule.varying_graph)
    grad_accum = cfg.grad_accum_steps or max(1, 8 // env.world_size)
    if cfg.train_batch_tokens % (env.world_size * grad_accum * cfg.train_seq_len):
        raise GolfError(f"TRAIN_BATCH_TOKENS={cfg.train_batch_tokens} is not a multiple of world_size x "
                        f"grad_accum x TRAIN_SEQ_LEN = {env.world_size} x {grad_accum} x {cfg.train_seq_len}")
    log(budget.plan_line())
    log(f"world_size:{env.world_size} grad_accum_steps:{grad_accum} device:{env.device.type}")

    # Warm-up compiles kernels on real batches; then weights, optimiser state and data order are reset. As the
    # record (R:3446-3470): compile_warmup_steps steps at progress 0 (no loops), then as many at progress 1 (loops
    # on), each at the base LR and the momentum ramp of its index, so every depth is compiled before the clock.
    if cfg.compile_warmup_steps > 0:
        budget.start("warmup")
        init_model = copy.deepcopy(model.state_dict())
        init_opts = [copy.deepcopy(o.state_dict()) for o in opts]
        warm_loader = copy.deepcopy(loader)  # the real run then starts from the same first batch
        for progress in (0.0, 1.0):
            for i in range(cfg.compile_warmup_steps):
                model.set_progress(i, progress)
                set_muon_momentum(opts, muon_momentum_at(i, cfg))
                train_step(net, warm_loader, opts, cfg, grad_accum, env.device)
        reset_after_warmup(cfg, env.world_size, model, opts, init_model, init_opts)
        budget.stop("warmup")

    ema = WeightEMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    budget.start("train")
    step, stop = checkpoints.start(model, ema, opts, loader, budget), False
    while step < cfg.iterations and not stop:
        set_lr(opts, lr_multiplier(step, budget.train_elapsed, budget.train_seconds, cfg.lr_warmup_steps,
                                   cfg.warmdown_frac, cfg.min_lr))
        set_muon_momentum(opts, muon_momentum_at(step, cfg))
        model.set_progress(step, budget.progress(step, cfg.iterations))
        loss = train_step(net, loader, opts, cfg, grad_accum, env.device, ema)
        step += 1
        stop = budget.tick()
        checkpoints.after_step(step, stop)
        if step % cfg.train_log_every == 0 or step == 1 or stop or step == cfg.iterations:
            log(f"step:{step}/{cfg.iterations} train_loss:{loss.item():.4f} "
                f"train_time:{budget.train_elapsed * 1000:.0f}ms step_avg:{budget.train_elapsed * 1000 / step:.2f}ms")
    budget.stop("train")
    log(f"stopped step:{step} train_time:{budget.train_elapsed * 1000:.0f}ms "
        f"planned:{budget.train_seconds * 1000:.0f}ms")
    if ema is not None:
        ema.copy_to_model()
    return step


def build_and_train(cfg: Config, env: DistEnv, log: RunLog, budget: WallclockBudget,
                    attention_fn) -> tuple[GPT, dict[str, ParamRule], TrainLoader, int]:
    """A fresh GPT (seeded by SEED) trained by run_training on the train shards.

    Returns (model, its policy rules, the train loader, steps); GPTQ calibration continues the loader's stream."""
    torch.manual_seed(cfg.seed)
    model = GPT(cfg, attention_fn).to(env.device)
    sizes = size_report(model)
    log(f"model_params:{sizes['unique_params']} effective_params:{sizes['effective_params']} "
        f"depth_train:{sizes['train_depth']} depth_eval:{sizes['eval_depth']}")
    rules = assign_rules(model.named_parameters(), param_rules(cfg))
    loader = pick(TRAIN_LOADERS, cfg.train_loader, "TRAIN_LOADER")(shard_paths(cfg.data_path, "train"), env.rank,
                                                                  env.world_size)
    steps = run_training(cfg, env, log, model, rules, loader, budget)
    return model, rules, loader, steps


def calibrate_hessians(cfg: Config, env: DistEnv, model: GPT, rules: dict[str, ParamRule],
                       loader: TrainLoader, rows_seen: dict | None = None) -> dict[str, torch.Tensor]:
    """GPTQ Hessians X^T X of every GPTQ-quantised Linear, from TRAINING batches (the stream training used).

    Summed over ranks so every rank holds the same Hessians. Runs inside the training 600 s (reserve phase).
    rows_seen, when given, receives the input rows behind each sum over all ranks (AWQ-lite needs them)."""
    if cfg.quant_method != "gptq" or cfg.gptq_calib_batches == 0:
        return {}
    weights = {name for name, r in rules.items() if r.bits is not None}
    modules = {name: m for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and f"{name}.weight" in weights}
    tokens = max(1, cfg.gptq_calib_tokens // (env.world_size * cfg.train_seq_len)) * cfg.train_seq_len * env.world_size
    batches = (loader.next_batch(tokens, cfg.train_seq_len, 1)[0].to(env.device) for _ in range(cfg.gptq_calib_batches))
    # The tied head's input is the final-norm output: hidden() runs every block (their hooks fire) and
    # gives the embedding's Hessian without the (tokens, vocab) logits.
    head = {"tok_emb"} if "tok_emb.weight" in weights else set()
    model.eval()  # eval loop count: calibrate the passes the artifact will be scored with
    with torch.autocast(env.device.type, dtype=autocast_dtype(env.device), enabled=env.device.type == "cuda"):
        rows: dict[str, int] = {}
        hessians = collect_hessians(model, modules, batches, lambda m, x: dict.fromkeys(
            head, m.hidden(x, None if cfg.calib_doc_attention else torch.zeros_like(x))), rows)  # zeros: one segment
    model.train()
    if rows_seen is not None:  # every rank calibrates on as many rows
        rows_seen.update({f"{name}.weight": n * env.world_size for name, n in rows.items()})
    return {f"{name}.weight": all_reduce_(h) for name, h in hessians.items()}


def score(cfg: Config, env: DistEnv, model: GPT, val_tokens, luts, byte_counts=None):
    """The prequant diagnostic: the trained model before quantisation (never the claimed score)."""
    return eval_bpb(model, val_tokens, luts, cfg.sw_seq_len, pass_stride(cfg, False), cfg.val_batch_tokens,
                    env.rank, env.world_size, env.device, autocast_dtype(env.device), context=cfg.eval_context,
                    byte_counts=byte_counts)


def quantize_entries(cfg: Config, state: dict[str, torch.Tensor], rules: dict[str, ParamRule],
                     hessians: dict[str, torch.Tensor], rows_seen: dict | None = None) -> dict:
    """The state quantised by the policy table (bits, clips) and the LQER settings: {name: QuantTensor | Tensor}.
    With AWQ_TOP_K > 0, rows_seen (calibrate_hessians') gives the activation RMS that ranks AWQ-lite's groups."""
    plan = {name: {"bits": r.bits, "clip_k": r.clip_k, "method": cfg.quant_method} for name, r in rules.items()}
    if cfg.awq_top_k > 0 and hessians:  # no Hessians (RTN): no GPTQ matrix to protect a group of
        if rows_seen is None:
            raise GolfError("AWQ_TOP_K > 0: quantize_entries needs calibrate_hessians' rows_seen (activation RMS)")
        plan = protect_salient_groups(state, plan, activation_rms(hessians, rows_seen), cfg.awq_top_k,
                                      cfg.awq_bits, cfg.awq_group)
    lqer = LqerPlan(cfg.lqer_top_k, cfg.lqer_rank, cfg.lqer_a_bits, cfg.lqer_b_bits, cfg.lqer_group, cfg.lqer_weighting,
                    cfg.lqer_select, cfg.lqer_budget_bytes)
    return quantize_state(state, plan, hessians, lqer)


def quantize_and_write(cfg: Config, model: GPT, rules: dict[str, ParamRule], hessians: dict, path: str,
                       rows_seen: dict | None = None) -> int:
    """Quantise by the policy table (GPTQ where a Hessian exists, else RTN), write atomically; returns bytes."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    entries = quantize_entries(cfg, state, rules, {k: h.cpu() for k, h in hessians.items()}, rows_seen)
    groups = {name: r.group for name, r in rules.items()}
    meta = {"config": dataclasses.asdict(dataclasses.replace(cfg, resume=""))}  # a resumed run's artifact is the same
    write_artifact(path, encode_artifact(entries, groups, meta, cfg.codec, cfg.symbol_layout))
    return os.path.getsize(path)


def fit_artifact(cfg: Config, model: GPT, rules: dict[str, ParamRule], hessians: dict, path: str, rows_seen: dict,
                 code_bytes: int, log) -> int:
    """quantize_and_write; with AWQ-lite on and SIZE_FALLBACK, an artifact that would break SIZE_LIMIT with the code
    is rewritten without AWQ-lite's groups, and one log line says so. Returns the artifact's bytes."""
    size = quantize_and_write(cfg, model, rules, hessians, path, rows_seen)
    if cfg.awq_top_k > 0:  # a test on a PACKED_OPTIONS field alone: tools/pack.py drops it where AWQ-lite is off
        if cfg.size_fallback and size + code_bytes > SIZE_LIMIT:
            fallback = quantize_and_write(dataclasses.replace(cfg, awq_top_k=0), model, rules, hessians, path)
            log(f"size_fallback artifact_bytes:{size} code_bytes:{code_bytes} limit:{SIZE_LIMIT} "
                f"awq_top_k:{cfg.awq_top_k} rewritten_artifact_bytes:{fallback} (without AWQ-lite's groups)")
            size = fallback
    return size


def load_artifact_model(path: str, cfg: Config, attention_fn, device) -> GPT:
    """The model as evaluation sees it: GPT(cfg) holding the artifact's dequantised weights, in eval mode."""
    entries, _ = read_artifact(path)
    model = GPT(cfg, attention_fn).to(device)
    model.load_state_dict(dequantize_state(entries, model.state_dict()))
    return model.eval()


def main(code_path: str) -> int:
    cfg = from_env()
    env = setup_dist(cfg.device)
    log = RunLog(cfg, env)
    sp = load_tokenizer(cfg.tokenizer_path)
    if sp.vocab_size() != cfg.vocab_size:
        raise GolfError(f"{cfg.tokenizer_path}: vocab {sp.vocab_size()} != VOCAB_SIZE={cfg.vocab_size}")
    luts = build_byte_luts(sp, cfg.vocab_size)
    sidecars = val_byte_sidecar_paths(cfg.data_path)  # their byte counts decide BPB: fingerprinted with the shards
    if tokenizer_transform(sp) == "caseops" and not sidecars:
        raise GolfError(f"{cfg.data_path}: no val byte sidecar (*_val_bytes_*.bin) for the CaseOps tokenizer "
                        f"{cfg.tokenizer_path}; the LUT rule would count its operators as bytes")
    log_provenance(log, cfg, code_path,
                   shard_paths(cfg.data_path, "train") + shard_paths(cfg.data_path, "val") + sidecars)

    # Before training: the pieces the artifact needs exist in this file (a packed one holds only its recipe's).
    check_symbol_settings(cfg.codec, cfg.symbol_layout, [r.group for r in param_rules(cfg)])
    pick(QUANTIZERS, cfg.quant_method, "QUANT_METHOD")
    pick(LQER_SELECTIONS, cfg.lqer_select, "LQER_SELECT")
    attention_name, attention_fn = select_attention(env.device.type, cfg.attention)
    log(f"attention_backend:{attention_name}")
    budget = WallclockBudget(cfg, env.device)
    model, rules, loader, _ = build_and_train(cfg, env, log, budget, attention_fn)

    # Reserve (inside the training 600 s): GPTQ calibration on training batches. Serialise (quantise, compress,
    # write) reads no training data and is counted in neither budget (golf/budget.py says where each phase counts).
    artifact_path = os.path.join(cfg.out_dir, "final_model.golf")
    code_bytes = os.path.getsize(code_path)
    budget.start("reserve")
    rows_seen: dict[str, int] = {}
    hessians = calibrate_hessians(cfg, env, model, rules, loader, rows_seen)
    budget.stop("reserve")
    budget.start("serialise")
    if env.is_main:
        fit_artifact(cfg, model, rules, hessians, artifact_path, rows_seen, code_bytes, log)
    if env.world_size > 1:
        torch.distributed.barrier()
    budget.stop("serialise")

    # Evaluation starts here: training and calibration are done, and the val split is first read now.
    log(eval_phase_started())
    val_tokens = load_val_tokens(cfg.data_path, cfg.val_max_tokens)
    sidecar = load_val_byte_sidecar(cfg.data_path, cfg.val_max_tokens)
    byte_counts = target_byte_counts(val_tokens, luts, sidecar)  # per-target bytes: every eval below sums these
    log(f"val_byte_rule:{'sidecar' if sidecar is not None else 'lut'}")
    budget.start("diagnostic")  # the trained weights' own score: uncounted, as the records run it
    pre = score(cfg, env, model, val_tokens, luts, byte_counts)
    budget.stop("diagnostic")
    log(f"prequant val_loss:{pre.val_loss:.8f} val_bpb:{pre.val_bpb:.8f}")
    log(f"val_tokens:{pre.tokens} val_bytes:{pre.bytes}")
    budget.start("eval")
    for line in eval_plan_lines(model, val_tokens, cfg, env.world_size, env.device, autocast_dtype(env.device)):
        log(line)
    reloaded = load_artifact_model(artifact_path, cfg, attention_fn, env.device)
    final_eval(reloaded, val_tokens, luts, cfg, env.rank, env.world_size, env.device, autocast_dtype(env.device), log,
               budget.phase_t0["eval"], byte_counts)
    eval_s = budget.stop("eval")
    artifact_bytes = os.path.getsize(artifact_path)
    log(f"eval_time:{eval_s:.1f}s budget:{cfg.eval_max_seconds:.0f}s")
    budget.agree()
    for line in budget.report_lines():
        log(line)
    log(f"artifact_bytes:{artifact_bytes} code_bytes:{code_bytes} total_bytes:{artifact_bytes + code_bytes}")
    # An overrun is never quiet: one line per broken limit, then exit 1 (the artifact stays on disk).
    violations = budget.violation_lines()
    size_line = size_violation_line(artifact_bytes, code_bytes, SIZE_LIMIT)
    violations += [size_line] if size_line else []
    for line in violations:
        log(line)
    teardown_dist()
    return 1 if violations else 0


def run(code_path: str) -> None:
    """Entry point: bad input ends in one line on stderr and exit code 2, not a traceback; a broken limit
    (a budget_violation / size_violation line) exits 1."""
    try:
        status = main(code_path)
    except GolfError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status)


if __name__ == "__main__":
    run(__file__)
