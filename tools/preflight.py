"""Preflight: size, memory and both 600 s budgets of a training file, known on a CPU before a GPU minute.

    python tools/preflight.py [train_gpt.py] [--json] [--checks model,memory,size,train,reserve,eval]
                              [--track record|non-record|unlimited]

Loads the GIVEN file's own code (packed, self-extracting or library-driven: whatever it defines is what is
checked), its Config from the env (PRESET and field overrides, as a run reads them), and reports one line per
check, each with its figure, its limit and the margin. Predicted figures say what they were calibrated on
(golf/budget.py: published record logs). Exit 0 all within limits, 1 a limit broken, 2 bad input.

--track (golf/budget.py TRACKS; default record): size and memory are checked on every track. On the record track
`track.train` / `track.eval` hold MAX_WALLCLOCK_SECONDS and EVAL_MAX_SECONDS to its 600 s each (FAIL naming the
limit); on non-record and unlimited they are reported with no limit, and a time line over the run's own setting
(reserve, eval) is a WARN, never a FAIL.

- model: the model at its real dims, one forward+backward on one full-length sequence (shapes, dtypes, finite
  loss, a gradient on every trained weight); unique/effective params, train/eval depth.
- memory: peak bytes per GPU at the real micro-batch: params + grads + optimiser state (the file's optimisers,
  stepped once, measured) + EMA + DDP buckets + the activations autograd saves (counted on meta tensors with a
  flash-attention stand-in that saves what FlashAttention saves, the model in bf16 as autocast runs its matmuls)
  vs 80 GB; FAIL over it, WARN when only the all-fp32 upper bound is over it.
- size: the file's own quantize_and_write (its GPTQ on Hessians from one random-token calibration pass, its
  codec) applied to the real-dims model with every quantised matrix redrawn as Gaussian rows (std spread
  log-normal 0.3 across rows): Gaussian rows are the statistics under which golf/size_predict.py reproduces
  two published records' artifacts (tests/test_size_predict.py), and near-init weights are no proxy (zero-init
  projections compress to almost nothing). Plus the file's exact bytes. The upper bound adds the predictor's
  largest calibration error.
- train: FLOPs per step (counted on meta tensors, full loop depth), predicted ms/step and steps on 8xH100 from
  the rate of a published record.
- reserve: GPTQ calibration (the part of the reserve that counts; golf/budget.py) predicted from its FLOPs at a
  published record's calibration rate, vs QUANT_RESERVE_SECONDS; serialise (quantise + encode + write, uncounted
  by the rules) timed here at real size, scaled by SERIALISE_FACTOR.
- eval: every pass the file's eval_passes() (golf/ttt.py, the one declaration of the eval phase) declares, on
  the busiest rank: tokens scored and tokens through forward+backward (per-document LoRA, global phases), FLOPs
  and predicted seconds at one H100's share of a published record's eval rates, the timed ones vs
  EVAL_MAX_SECONDS, plus the size check's artifact decode timed here (it runs inside the timed eval). Document
  lengths: the val split's when it is here, else an assumed log-normal split of FineWeb's 40.5 M tokens into
  its 50,000 documents.
"""

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from golf import budget as facts  # noqa: E402
from golf.size_predict import SIZE_PREDICTOR_ERROR  # noqa: E402

CHECKS = ("model", "memory", "size", "train", "reserve", "eval")
SIZE_LIMIT = 16_000_000  # decimal bytes, code + compressed model
SIZE_TARGET = 15_980_000  # the default recipe's target: WARN between this and the limit
GPU_MEMORY_BYTES = 80 * 10**9  # H100 SXM: 80 GB HBM3
TIME_MARGIN = 0.05  # a budget used beyond 95% is a WARN
# Rows of GPTQ calibration run here to get real Hessians to time GPTQ with (the target machine's calibration
# time is predicted, not measured here).
LOCAL_CALIBRATION_ROWS = 1
# Serialise runs on the host CPU in the shipped code (quantize_and_write moves weights and Hessians to the CPU),
# so seconds here carry over with the ratio of one core here to one host core of an 8xH100 machine; we take 1.0
# (a server core is no slower than a shared container core here), an upper bound until a GPU run measures it.
SERIALISE_FACTOR = 1.0


class PreflightError(Exception):
    """Bad input: the file cannot be loaded or lacks what a golf training file defines."""


def load_training_file(path: Path):
    """The file as a module (its __main__ block does not run); a self-extracting file unpacks itself."""
    if not path.is_file():
        raise PreflightError(f"{path}: training file not found")
    spec = importlib.util.spec_from_file_location("preflight_target", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the file's own import-time error
        raise PreflightError(f"{path}: does not load: {type(e).__name__}: {e}") from None
    needed = ("from_env", "GPT", "size_report", "param_rules", "assign_rules", "build_optimizers",
              "calibrate_hessians", "quantize_and_write", "select_attention", "DistEnv", "eval_passes", "GolfError",
              "window_plan", "load_val_tokens", "doc_spans", "read_artifact")
    missing = [n for n in needed if not hasattr(module, n)]
    if missing:
        raise PreflightError(f"{path}: not a golf training file (lacks {', '.join(missing)})")
    return module


def line(status: str, check: str, figure: str, limit: str, margin: str, detail: str = "") -> dict:
    return {"status": status, "check": check, "figure": figure, "limit": limit, "margin": margin, "detail": detail}


def time_status(used: float, limit: float) -> str:
    return "FAIL" if used > limit else "WARN" if used > (1 - TIME_MARGIN) * limit else "PASS"


# ---------------------------------------------------------------- counting on meta tensors

def meta_model(ns, cfg, attention_fn, train: bool):
    with torch.device("meta"):
        model = ns.GPT(cfg, attention_fn)
    model.train(train)
    model.set_progress(cfg.iterations, 1.0)  # the deepest schedule: loops on
    return model


def memoised(fn):
    """FLOP counts depend only on (file, config): count each once per preflight (the record shape is reused)."""
    cache = {}

    def counted(ns, cfg, attention_fn):
        key = (id(ns), cfg)
        if key not in cache:
            cache[key] = fn(ns, cfg, attention_fn)
        return cache[key]
    return counted


@memoised
def train_flops_per_row(ns, cfg, attention_fn) -> int:
    """FLOPs of one forward+backward on one row of train_seq_len tokens (matmuls and attention, full loop depth)."""
    model = meta_model(ns, cfg, attention_fn, train=True)
    x = torch.zeros(1, cfg.train_seq_len, dtype=torch.int64, device="meta")
    with FlopCounterMode(display=False) as counter:
        model(x, x).backward()
    return counter.get_total_flops()


@memoised
def eval_flops_per_row(ns, cfg, attention_fn) -> int:
    """FLOPs of one scoring forward (eval depth) on one row of sw_seq_len tokens."""
    model = meta_model(ns, cfg, attention_fn, train=False)
    x = torch.zeros(1, cfg.sw_seq_len, dtype=torch.int64, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.token_losses(x, x)
    return counter.get_total_flops()


class FlashSaved(torch.autograd.Function):
    """Attention that saves for backward what FlashAttention saves: q, k, v, the output and the fp32 row
    log-sum-exp (B, H, T); never the (T, T) probabilities (FA3 varlen on packed documents saves the same, plus
    the tiny cu_seqlens). Used only to count saved bytes (no backward)."""

    @staticmethod
    def forward(ctx, q, k, v, attention_fn, doc_ids=None):
        with torch.no_grad():
            out = attention_fn(q, k, v) if doc_ids is None else attention_fn(q, k, v, doc_ids)
        ctx.save_for_backward(q, k, v, out, q.new_empty(q.shape[:3], dtype=torch.float32))
        return out

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("FlashSaved only counts memory")


def flash_saved(attention_fn):
    """An attention backend (q, k, v, doc_ids=None) that runs attention_fn and saves what FlashAttention saves."""
    return lambda q, k, v, doc_ids=None: FlashSaved.apply(q, k, v, attention_fn, doc_ids)


def saved_bytes_per_row(ns, cfg, attention_fn, dtype: torch.dtype) -> int:
    """Bytes autograd keeps from the forward of one training row, counted on meta tensors with the model in
    `dtype`: bfloat16 is what autocast computes the matmuls in (its fp32 ops, e.g. norms, save a little more);
    float32 is an upper bound."""
    model = meta_model(ns, cfg, flash_saved(attention_fn), train=True).to(dtype)
    x = torch.zeros(1, cfg.train_seq_len, dtype=torch.int64, device="meta")
    seen: dict[int, int] = {}

    def pack(t):
        seen.setdefault(id(t), t.numel() * t.element_size())  # a tensor saved twice is stored once
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x, x)
    return sum(seen.values())


# ---------------------------------------------------------------- checks

def build_model(ns, cfg, attention_fn, out: dict):
    """The file's model at its real dims on the CPU (seeded), deepest loop schedule; kept in out["model"]."""
    torch.manual_seed(cfg.seed)
    model = ns.GPT(cfg, attention_fn)
    model.set_progress(cfg.iterations, 1.0)
    out["model"] = model
    return model


def check_model(ns, cfg, attention_fn, out: dict) -> dict:
    model = out["model"]
    sizes = ns.size_report(model)
    x = torch.randint(0, cfg.vocab_size, (1, cfg.train_seq_len), generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    logits = model.logits(x)
    loss = model(x, x)
    loss.backward()
    seconds = time.perf_counter() - t0
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    problems = []
    if tuple(logits.shape) != (1, cfg.train_seq_len, cfg.vocab_size):
        problems.append(f"logits shape {tuple(logits.shape)}")
    if not torch.isfinite(loss):
        problems.append(f"loss {loss.item()}")
    if no_grad:
        problems.append(f"no gradient for {', '.join(no_grad[:3])}")
    detail = (f"unique_params:{sizes['unique_params']} effective_params:{sizes['effective_params']} "
              f"depth_train:{sizes['train_depth']} depth_eval:{sizes['eval_depth']} logits:{tuple(logits.shape)} "
              f"{logits.dtype} loss:{loss.item():.3f} fwd+bwd:{seconds:.1f}s here")
    if problems:
        return line("FAIL", "model", "; ".join(problems), "finite loss, (1, seq, vocab) logits, every grad", "-", detail)
    return line("PASS", "model", f"{sizes['unique_params']} params", "builds, forward+backward", "-", detail)


def micro_batch_rows(cfg, world_size: int) -> int:
    grad_accum = cfg.grad_accum_steps or max(1, 8 // world_size)
    return cfg.train_batch_tokens // (world_size * grad_accum * cfg.train_seq_len)


def optimizer_state_bytes(ns, cfg, model) -> int:
    """The file's optimisers over the real-dims model, stepped once on its gradients: bytes of their state."""
    rules = ns.assign_rules(model.named_parameters(), ns.param_rules(cfg))
    opts = ns.build_optimizers(model, rules, cfg)
    for opt in opts:
        opt.step()
    state = 0
    for opt in opts:
        for s in opt.state.values():
            state += sum(v.numel() * v.element_size() for v in s.values() if isinstance(v, torch.Tensor))
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    return state


def check_memory(ns, cfg, attention_fn, world_size: int, out: dict) -> dict:
    model = out["model"]
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    opt_state = optimizer_state_bytes(ns, cfg, model)
    ema = params if cfg.ema_decay > 0 else 0
    ddp = grads if world_size > 1 else 0  # DDP's gradient buckets
    rows = micro_batch_rows(cfg, world_size)
    states = params + grads + opt_state + ema + ddp
    total = states + rows * saved_bytes_per_row(ns, cfg, attention_fn, torch.bfloat16)
    upper = states + rows * saved_bytes_per_row(ns, cfg, attention_fn, torch.float32)
    gb = 1e9
    detail = (f"params {params / gb:.2f} + grads {grads / gb:.2f} + optimiser {opt_state / gb:.2f} + ema {ema / gb:.2f} "
              f"+ ddp {ddp / gb:.2f} + activations {(total - states) / gb:.2f} GB ({rows} rows/GPU saved in bf16, "
              f"flash-style attention; all-fp32 upper bound {upper / gb:.1f} GB); record 1.0611 measured "
              f"{facts.RECORD_PEAK_MEMORY_MIB * 2**20 / gb:.1f} GB peak allocated on its shape")
    status = "FAIL" if total > GPU_MEMORY_BYTES else "WARN" if upper > GPU_MEMORY_BYTES else "PASS"
    return line(status, "memory", f"{total / gb:.2f} GB/GPU", f"{GPU_MEMORY_BYTES / gb:.0f} GB",
                f"{(GPU_MEMORY_BYTES - total) / gb:+.2f} GB", detail)


class RandomTokens:
    """Stands in for the train loader in GPTQ calibration: random tokens (no data is read)."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.generator = torch.Generator().manual_seed(0)

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int):
        x = torch.randint(0, self.vocab_size, (global_tokens // seq_len, seq_len), generator=self.generator)
        return x, x


def trained_like_weights(model, rules, seed: int) -> None:
    """Every quantised matrix redrawn as Gaussian rows of std base / sqrt(cols) x exp(0.3 z_row) (module docstring)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if rules[name].bits is None:
                continue
            rows = p.shape[0] if p.dim() > 1 else 1
            cols = p.numel() // rows
            spread = torch.exp(0.3 * torch.randn(rows, 1, generator=g))
            p.copy_((torch.randn(rows, cols, generator=g) * spread / math.sqrt(cols)).reshape(p.shape))


def check_size(ns, cfg, path: Path, out: dict) -> dict:
    model = out["model"]
    rules = ns.assign_rules(model.named_parameters(), ns.param_rules(cfg))
    trained_like_weights(model, rules, cfg.seed)
    env = ns.DistEnv(0, 1, 0, torch.device("cpu"))
    calib_cfg = dataclasses.replace(cfg, gptq_calib_batches=min(cfg.gptq_calib_batches, 1),
                                    gptq_calib_tokens=LOCAL_CALIBRATION_ROWS * cfg.train_seq_len)
    rows: dict = {}  # calibration rows per Hessian: AWQ-lite ranks its groups by activation RMS (AWQ_TOP_K)
    hessians = ns.calibrate_hessians(calib_cfg, env, model, rules, RandomTokens(cfg.vocab_size), rows)
    with tempfile.TemporaryDirectory() as tmp:
        artifact = os.path.join(tmp, "final_model.golf")
        t0 = time.perf_counter()
        artifact_bytes = ns.quantize_and_write(cfg, model, rules, hessians, artifact, rows)
        out["serialise_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ns.read_artifact(artifact)  # the decode every rank runs inside the timed eval (load_artifact_model)
        out["decode_s"] = time.perf_counter() - t0
    code_bytes = out["code_bytes"]
    total = artifact_bytes + code_bytes
    upper = math.ceil(artifact_bytes * (1 + SIZE_PREDICTOR_ERROR)) + code_bytes
    status = "FAIL" if upper > SIZE_LIMIT else "WARN" if upper > SIZE_TARGET else "PASS"
    detail = (f"artifact {artifact_bytes} (quant {cfg.quant_method}, codec {cfg.codec}, {len(hessians)} Hessians, "
              f"Gaussian rows) + code {code_bytes} ({path.name} as shipped) = {total}; upper bound +"
              f"{SIZE_PREDICTOR_ERROR:.2%} (size predictor's largest error on published records)")
    return line(status, "size", f"{upper} bytes", f"{SIZE_LIMIT}", f"{SIZE_LIMIT - upper:+d} bytes", detail)


def check_train(ns, cfg, attention_fn, out: dict) -> dict:
    rows_per_step = cfg.train_batch_tokens // cfg.train_seq_len
    step_flops = rows_per_step * train_flops_per_row(ns, cfg, attention_fn)
    record_cfg = dataclasses.replace(cfg, **facts.RECORD_SHAPE)
    record_flops = (facts.TRAIN_RECORD["tokens_per_step"] // facts.RECORD_SHAPE["train_seq_len"]
                    * train_flops_per_row(ns, record_cfg, attention_fn))
    rate = record_flops / (facts.TRAIN_RECORD["ms_per_step"] / 1000)  # FLOP/s of 8xH100 at the record's MFU
    ms = step_flops / rate * 1000
    train_s = cfg.max_wallclock_seconds - cfg.quant_reserve_seconds
    steps = min(cfg.iterations, int(train_s * 1000 / ms))
    out["train_rate"] = rate
    detail = (f"{step_flops / 1e12:.1f} TFLOP/step ({cfg.train_batch_tokens} tokens), {rate / 1e15:.2f} PFLOP/s "
              f"calibrated on {facts.TRAIN_RECORD['source']} ({facts.TRAIN_RECORD['ms_per_step']} ms/step); "
              f"predicted {steps} steps in {train_s:.1f}s (iterations cap {cfg.iterations})")
    status = "FAIL" if train_s <= 0 else "PASS"
    return line(status, "train", f"{ms:.4g} ms/step predicted", f"{train_s:.1f}s of {cfg.max_wallclock_seconds:.0f}s",
                f"{steps} steps", detail)


def check_reserve(ns, cfg, attention_fn, world_size: int, out: dict) -> list[dict]:
    # Rows each rank forwards in calibration (golf/train.py calibrate_hessians), at the record's per-GPU rate.
    rows_per_rank = max(1, cfg.gptq_calib_tokens // (world_size * cfg.train_seq_len)) * cfg.gptq_calib_batches
    calib_cfg = dataclasses.replace(cfg, sw_seq_len=cfg.train_seq_len)
    row_flops = eval_flops_per_row(ns, calib_cfg, attention_fn)
    rec = facts.CALIBRATION_RECORD
    record_row_flops = eval_flops_per_row(ns, dataclasses.replace(cfg, **facts.RECORD_SHAPE,
                                                                   sw_seq_len=facts.RECORD_SHAPE["train_seq_len"]),
                                          attention_fn)
    rate = rec["rows_per_rank"] * record_row_flops / rec["seconds"]  # FLOP/s of one GPU in calibration
    calib_s = rows_per_rank * row_flops / rate if cfg.quant_method == "gptq" and cfg.gptq_calib_batches else 0.0
    reserve = cfg.quant_reserve_seconds
    lines = [line(time_status(calib_s, reserve), "reserve", f"{calib_s:.3g}s predicted", f"{reserve:.1f}s",
                  f"{(reserve - calib_s) / reserve:.0%}" if reserve > 0 else "-",
                  f"GPTQ calibration: {cfg.gptq_calib_batches} batches x {rows_per_rank // max(cfg.gptq_calib_batches, 1)}"
                  f" rows/rank x {row_flops / 1e12:.2f} TFLOP, at {rate / 1e12:.0f} TFLOP/s/GPU from {rec['source']}; "
                  f"counted in the training {cfg.max_wallclock_seconds:.0f}s (golf/budget.py)")]
    if "serialise_s" in out:
        s = out["serialise_s"] * SERIALISE_FACTOR
        lines.append(line("PASS", "serialise", f"{s:.1f}s", "uncounted", "-",
                          f"GPTQ quantise + encode + write timed here at real size ({out['serialise_s']:.1f}s) x "
                          f"{SERIALISE_FACTOR} (host CPU, see SERIALISE_FACTOR); reads no training data, counted in "
                          f"neither budget (golf/budget.py)"))
    return lines


# FineWeb val has 50,000 documents (DESIGN.md). Without the val split here their lengths are drawn log-normal
# (sigma 1.0, seeded) and scaled to the split's token count: an assumption, labelled as such in the eval line;
# the cost of doc-isolated scoring and per-document TTT depends on how many documents exceed a window.
FINEWEB_VAL_DOCS = 50_000
SYNTHETIC_DOC_SIGMA = 1.0


def val_doc_lengths(ns, cfg) -> tuple[list[int], str]:
    """(target count of each val document, where they come from): the val split's documents when it is here,
    else FineWeb's token count split into FINEWEB_VAL_DOCS log-normal lengths."""
    try:
        tokens = ns.load_val_tokens(cfg.data_path, cfg.val_max_tokens)
        return [n for _, n in ns.doc_spans(tokens)], cfg.data_path
    except ns.GolfError:
        n = facts.FINEWEB_VAL_TOKENS if cfg.val_max_tokens <= 0 else min(cfg.val_max_tokens, facts.FINEWEB_VAL_TOKENS)
        gen = torch.Generator().manual_seed(0)
        docs = max(1, min(FINEWEB_VAL_DOCS, n // 64))
        weights = torch.exp(SYNTHETIC_DOC_SIGMA * torch.randn(docs, generator=gen, dtype=torch.float64))
        lengths = torch.clamp((weights / weights.sum() * (n - 1)).floor().long(), min=1)
        lengths[-1] += (n - 1) - int(lengths.sum())
        return lengths.tolist(), (f"FineWeb val {facts.FINEWEB_VAL_TOKENS} tokens ({facts.FINEWEB_VAL_SOURCE}) in "
                                  f"{docs} documents of assumed log-normal length (sigma {SYNTHETIC_DOC_SIGMA})")


def eval_rates(ns, cfg, attention_fn) -> tuple[float, float]:
    """(scoring FLOP/s, TTT training FLOP/s) of ONE H100, from a published record's 8-GPU sliding-window and TTT
    times."""
    rec = facts.EVAL_RECORD
    record_cfg = dataclasses.replace(cfg, **facts.RECORD_SHAPE, sw_seq_len=rec["seq_len"], sw_stride=rec["stride"],
                                     ttt_enabled=False)
    windows = len(ns.window_plan(rec["val_tokens"] - 1, rec["seq_len"], rec["stride"]))
    score_rate = windows * eval_flops_per_row(ns, record_cfg, attention_fn) / rec["sliding_seconds"]
    ttt_score_s = (windows + rec["ttt_chunks"] - 1) / windows * rec["sliding_seconds"]  # chunk cuts add rows
    train_row = train_flops_per_row(ns, dataclasses.replace(record_cfg, train_seq_len=rec["seq_len"]), attention_fn)
    ttt_train_flops = (rec["ttt_chunks"] - 1) * rec["ttt_epochs"] * (rec["ttt_chunk_tokens"] // rec["seq_len"]) * train_row
    return score_rate / 8, ttt_train_flops / (rec["ttt_seconds"] - ttt_score_s) / 8


def check_eval(ns, cfg, attention_fn, world_size: int, out: dict) -> list[dict]:
    """Every pass of the file's eval_passes() (tokens on the busiest rank) at one H100's record-measured rates,
    plus the artifact's decode as timed here when the size check ran (it happens inside the timed eval)."""
    lengths, source = val_doc_lengths(ns, cfg)
    passes = ns.eval_passes(cfg, lengths, world_size)
    score_rate, ttt_rate = eval_rates(ns, cfg, attention_fn)
    score_flops_token = eval_flops_per_row(ns, cfg, attention_fn) / cfg.sw_seq_len
    train_flops_token = train_flops_per_row(ns, dataclasses.replace(cfg, train_seq_len=cfg.sw_seq_len),
                                            attention_fn) / cfg.sw_seq_len
    lines, timed = [], 0.0
    for p in passes:
        flops_score = p.score_tokens * score_flops_token
        flops_train = (p.adapt_tokens + p.phase_tokens) * train_flops_token  # LoRA backward counted as a full one
        seconds = flops_score / score_rate + flops_train / ttt_rate
        timed += seconds if p.timed else 0.0
        train = (f", {p.adapt_tokens + p.phase_tokens} tokens fwd+bwd in {p.steps} steps "
                 f"({flops_train / 1e15:.1f} PFLOP)" if p.steps or p.adapt_tokens else "")
        lines.append(line("PASS", f"eval.{p.name}", f"{seconds:.4g}s predicted",
                          "timed" if p.timed else "uncounted", "-",
                          f"busiest rank of {world_size}: {p.score_tokens} tokens scored "
                          f"({flops_score / 1e15:.1f} PFLOP){train}; {p.what}"))
    if "decode_s" in out:
        timed += out["decode_s"]
        lines.append(line("PASS", "eval.decode", f"{out['decode_s']:.3g}s here", "timed", "-",
                          f"artifact decode of the size check's artifact on this CPU (codec {cfg.codec}); trained "
                          f"rows can take the context mode, measured up to 6.8s at record size here"))
    limit = cfg.eval_max_seconds
    rec = facts.EVAL_RECORD
    lines.append(line(time_status(timed, limit), "eval", f"{timed:.4g}s predicted", f"{limit:.1f}s",
                      f"{(limit - timed) / limit:.0%}",
                      f"timed passes over {sum(lengths)} targets ({source}); rates per H100 from {rec['source']}: "
                      f"scoring {score_rate / 1e15:.3f} PFLOP/s (sliding {rec['sliding_seconds']}s on 8), "
                      f"TTT training {ttt_rate / 1e15:.3f} PFLOP/s (TTT {rec['ttt_seconds']}s on 8)"))
    return lines


def run_checks(ns, path: Path, wanted: tuple[str, ...], world_size: int) -> list[dict]:
    cfg = ns.from_env()
    _, attention_fn = ns.select_attention("cpu", "sdpa")
    out: dict = {"code_bytes": path.stat().st_size}  # the bytes of the file as loaded, not as it may be later
    results = []
    if {"model", "memory", "size"} & set(wanted):
        build_model(ns, cfg, attention_fn, out)
    if {"model", "memory"} & set(wanted):
        model_line = check_model(ns, cfg, attention_fn, out)  # memory steps the optimisers on its gradients
        if "model" in wanted:
            results.append(model_line)
    if "memory" in wanted:
        results.append(check_memory(ns, cfg, attention_fn, world_size, out))
    if "size" in wanted:
        results.append(check_size(ns, cfg, path, out))
    if "train" in wanted:
        results.append(check_train(ns, cfg, attention_fn, out))
    if "reserve" in wanted:
        results += check_reserve(ns, cfg, attention_fn, world_size, out)
    if "eval" in wanted:
        results += check_eval(ns, cfg, attention_fn, world_size, out)
    return results


TIME_CHECKS = ("train", "reserve", "eval")  # lines whose verdict is a time budget (module doc, --track)


def apply_track(results: list[dict], cfg, track, wanted: tuple[str, ...]) -> list[dict]:
    """The track's time limits: its lines `track.train` / `track.eval` (the run's settings against the track's
    limits, or reported where it has none); off the record track a time line's FAIL becomes a WARN."""
    if track.train_seconds is None:
        results = [dict(r, status="WARN", detail=r["detail"] + f"; over the run's own setting, no limit on the "
                                                               f"{track.name} track")
                   if r["check"] in TIME_CHECKS and r["status"] == "FAIL" else r for r in results]
    for check, what, env, setting, limit in (
            ("train", "training + GPTQ calibration", "MAX_WALLCLOCK_SECONDS", cfg.max_wallclock_seconds,
             track.train_seconds),
            ("eval", "evaluation (TTT included)", "EVAL_MAX_SECONDS", cfg.eval_max_seconds, track.eval_seconds)):
        if check not in wanted:
            continue
        if limit is None:
            results.append(line("PASS", f"track.{check}", f"{env}={setting:.0f}s", f"none ({track.name} track)", "-",
                                f"{what}: reported, no limit on this track (golf/budget.py TRACKS)"))
        else:
            results.append(line("PASS" if setting <= limit else "FAIL", f"track.{check}", f"{env}={setting:.0f}s",
                                f"{limit:.0f}s ({track.name} track)", f"{limit - setting:+.0f}s",
                                f"{what} may take at most {limit:.0f}s on the {track.name} track (golf/budget.py TRACKS)"))
    return results


def format_line(r: dict) -> str:
    return (f"{r['status']} {r['check']}: {r['figure']} limit:{r['limit']} margin:{r['margin']}"
            + (f" | {r['detail']}" if r["detail"] else ""))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train_file", nargs="?", default=str(ROOT / "train_gpt.py"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
    ap.add_argument("--world-size", type=int, default=8, help="GPUs of the target machine")
    ap.add_argument("--track", default="record", help="record (default), non-record or unlimited (module doc)")
    args = ap.parse_args(argv)
    wanted = tuple(c.strip() for c in args.checks.split(",") if c.strip())
    unknown = [c for c in wanted if c not in CHECKS]
    track = facts.track_named(args.track)
    t0 = time.perf_counter()
    try:
        if unknown:
            raise PreflightError(f"--checks: unknown check(s) {', '.join(unknown)} (choices: {', '.join(CHECKS)})")
        if track is None:
            raise PreflightError(f"--track: {args.track!r} names no track (choices: {', '.join(facts.TRACKS)})")
        ns = load_training_file(Path(args.train_file))
    except PreflightError as e:
        print(f"preflight: {e}", file=sys.stderr)
        return 2
    try:
        results = apply_track(run_checks(ns, Path(args.train_file), wanted, args.world_size), ns.from_env(), track,
                              wanted)
    except ns.GolfError as e:  # the file's own bad-input error: a bad env value, an unknown piece
        print(f"preflight: {args.train_file}: {e}", file=sys.stderr)
        return 2
    failed = [r for r in results if r["status"] == "FAIL"]
    verdict = "FAIL" if failed else "PASS"
    seconds = time.perf_counter() - t0
    if args.json:
        print(json.dumps({"file": args.train_file, "verdict": verdict, "seconds": round(seconds, 1),
                          "checks": results}, indent=1))
    else:
        for r in results:
            print(format_line(r))
        names = ", ".join(r["check"] for r in failed)
        print(f"preflight {verdict}: {args.train_file} ({len(results)} checks{', failed: ' + names if failed else ''}; "
              f"{seconds:.0f}s on {torch.get_num_threads()} CPU threads)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
