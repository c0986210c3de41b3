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
- memory: peak bytes allocated per GPU at the real micro-batch: params + grads + optimiser state (the file's
  optimisers, stepped once, measured) + EMA + DDP buckets + what the compiled bf16 forward keeps for backward
  (counted on meta tensors: FA3, the fused MLP activation, cross-entropy and RMSNorm kernels save what they save;
  compile recomputes cheap ops next to their inputs) + the logits' gradient, vs 80 GB. Calibrated on the 1.0611
  record's `peak memory allocated` (within 5%: tests/test_preflight_calibration.py).
- size: the file's own quantize_and_write (its GPTQ on Hessians from one random-token calibration pass, its
  codec) applied to the real-dims model with every quantised matrix redrawn as Gaussian rows (std spread
  log-normal 0.3 across rows), plus the file's exact bytes. Two bounds: the upper bound (Gaussian rows + the size
  predictor's largest error on published records) and the record-relative prediction, which decides: the 1.0611
  record's logged artifact x golf/record bytes on the same symbols (measured by `python -m golf.bench quant
  --vs-record`) x this Config's bytes over the record's quant settings' on the same weights, with its error.
- train: FLOPs per step (counted on meta tensors, full loop depth), predicted ms/step and steps on 8xH100 from
  the rate of a published record.
- reserve: GPTQ calibration (the part of the reserve that counts; golf/budget.py) predicted from its FLOPs at a
  published record's calibration rate, vs QUANT_RESERVE_SECONDS; serialise (quantise + encode + write, uncounted
  by the rules) timed here at real size, scaled by SERIALISE_FACTOR.
- eval: every pass the file's eval_passes() (golf/ttt.py, the one declaration of the eval phase) declares, on
  the busiest rank: tokens scored and tokens through forward+backward (per-document LoRA, global phases), FLOPs
  and predicted seconds at one H100's share of record-measured rates (phased per-document TTT: the 1.0611
  record's own, from its replayed schedule; scoring and stream TTT: the 04-09 record's), the timed ones vs
  EVAL_MAX_SECONDS, plus the size check's artifact decode timed here (it runs inside the timed eval). Document
  lengths: the val split's when it is here, else the 1.0611 record's val documents (its logs) scaled to the
  dataset's val tokens.
"""

import argparse
import contextlib
import dataclasses
import functools
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
from golf.size_predict import (RECORD_GAUSSIAN_BYTES, RECORD_MODEL_BYTES, RECORD_RELATIVE_ERROR,  # noqa: E402
                               RECORD_RELATIVE_ERROR_SOURCE, SIZE_PREDICTOR_ERROR, nearest_anchor)

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
              "window_plan", "load_val_tokens", "doc_spans", "read_artifact", "MLP_ACTIVATIONS",
              "softcap_cross_entropy")  # the last two: gpu_kernels_saved patches them while counting memory
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


class KernelSaved(torch.autograd.Function):
    """fn(x, *args) run without autograd, saving what a fused GPU kernel saves: its input x plus `extra` fp32
    values per row of x (a row statistic: rms_norm's rstd, cross-entropy's lse). Only counts memory."""

    @staticmethod
    def forward(ctx, x, fn, extra, *args):
        with torch.no_grad():
            out = fn(x, *args)
        ctx.save_for_backward(x, *([x.new_empty(x.shape[:-1], dtype=torch.float32)] if extra else []))
        return out

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("KernelSaved only counts memory")


def kernel_saved(fn, row_stat: bool):
    """fn(x, *args) as a fused kernel that saves x (+ an fp32 statistic per row when row_stat)."""
    return lambda x, *args: KernelSaved.apply(x, fn, row_stat, *args)


@contextlib.contextmanager
def gpu_kernels_saved(ns):
    """While counting: each op with a fused CUDA kernel in the GPU run saves what that kernel saves, not what its
    CPU twin's autograd graph keeps: the MLP activations (golf/kernels/mlp_act.py: leaky_relu2's Triton kernel
    saves only its input; the record's fused MLP saves the same pre-activation), the softcapped cross-entropy
    (golf/kernels/softcap_ce.py: the bf16 logits and the fp32 lse, never the fp32 softmax; the record's
    fused_ce_enabled kernel saves the same) and F.rms_norm (one CUDA kernel: its input and the fp32 rstd). Patched
    where the file's model looks them up: the file's namespace (a packed file) or golf's model modules."""
    modules = [ns] + [m for n, m in list(sys.modules.items()) if n.startswith(("golf.model", "golf.kernels"))]
    undo = []
    for mod in modules:
        for key, fn in list(getattr(mod, "MLP_ACTIVATIONS", {}).items()):
            undo.append((mod.MLP_ACTIVATIONS.__setitem__, key, fn))
            mod.MLP_ACTIVATIONS[key] = kernel_saved(fn, False)
        if callable(getattr(mod, "softcap_cross_entropy", None)):
            undo.append((functools.partial(setattr, mod), "softcap_cross_entropy", mod.softcap_cross_entropy))
            mod.softcap_cross_entropy = kernel_saved(mod.softcap_cross_entropy, True)
    rms_norm = torch.nn.functional.rms_norm
    undo.append((functools.partial(setattr, torch.nn.functional), "rms_norm", rms_norm))
    torch.nn.functional.rms_norm = lambda x, shape, *a, **k: KernelSaved.apply(
        x, lambda t: rms_norm(t, shape, *a, **k), True)
    try:
        yield
    finally:
        for put, key, value in reversed(undo):
            put(key, value)


# Autograd nodes whose outputs torch.compile keeps rather than recomputes in backward: matmuls, the fused kernels
# (FlashSaved, KernelSaved stand-ins) and the embedding lookup. Every other op is pointwise, a view or a cheap
# reduction, which compile's partitioner recomputes from its inputs when those are kept anyway.
KEPT_OPS = {"MmBackward0", "AddmmBackward0", "BmmBackward0", "UnsafeViewBackward0", "FlashSavedBackward",
            "KernelSavedBackward", "EmbeddingBackward0"}


def saved_bytes(ns, cfg, attention_fn, rows: int) -> int:
    """Bytes a compiled bf16 training forward of `rows` rows keeps for backward, counted on meta tensors:
    - the GPU run's kernels save what they save (FlashSaved, gpu_kernels_saved);
    - each storage once (views of one tensor, e.g. the q/k/v projections' shared input, are one tensor);
    - every floating tensor at 2 bytes an element: the record trains in bf16 (weights .bfloat16(), autocast), and
      compile recomputes fp32 upcasts from their bf16 inputs;
    - a tensor made by a pointwise op (not in KEPT_OPS) whose inputs are all kept anyway (or are weights) is
      recomputed, not kept: one hop, as torch.compile's min-cut partitioner does for cheap ops next to their
      inputs (longer recompute chains, e.g. the residual stream back to the embedding, are kept).
    Calibrated on the 1.0611 record's peak memory (check_memory)."""
    x = torch.zeros(rows, cfg.train_seq_len, dtype=torch.int64, device="meta")
    size: dict[int, int] = {}
    node: dict[int, object] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage._cdata not in size:
            size[storage._cdata] = storage.nbytes() // t.element_size() * (2 if t.is_floating_point()
                                                                            else t.element_size())
            node[storage._cdata] = t.grad_fn
        return t

    with gpu_kernels_saved(ns):  # the model picks its MLP activation when built
        model = meta_model(ns, cfg, flash_saved(attention_fn), train=True).to(torch.bfloat16)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x, x)
    kept_nodes = {n for n in node.values() if n is not None}

    def recomputed(n) -> bool:
        return n is not None and type(n).__name__ not in KEPT_OPS and all(
            m is None or type(m).__name__ == "AccumulateGrad" or m in kept_nodes for m, _ in n.next_functions)

    return sum(b for key, b in size.items() if not recomputed(node[key]))


def saved_bytes_per_row(ns, cfg, attention_fn) -> tuple[int, int]:
    """(bytes per training row, bytes independent of the rows): the weights' bf16 copies a forward keeps are
    kept once per step, not once per row, so two counts separate the two. Counted at 2 and 3 rows: a single row
    differs a little (shape-1 dimensions make some reshapes views)."""
    two, three = saved_bytes(ns, cfg, attention_fn, 2), saved_bytes(ns, cfg, attention_fn, 3)
    return three - two, 3 * two - 2 * three


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
    """Peak bytes allocated per GPU in a training step: the states, plus what the forward saves for backward (per
    row, counted as the GPU run's kernels save it: saved_bytes), plus the logits' gradient that backward
    allocates first while all of that is alive (rows x seq x vocab, bf16). Calibrated on the 1.0611 record
    (golf/budget.py RECORD_PEAK_MEMORY_MIB, `peak memory allocated` on its shape; tests/test_preflight_calibration.py
    holds the prediction for the record's Config within 5% of it)."""
    model = out["model"]
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    opt_state = optimizer_state_bytes(ns, cfg, model)
    ema = params if cfg.ema_decay > 0 else 0
    ddp = grads if world_size > 1 else 0  # DDP's gradient buckets
    rows = micro_batch_rows(cfg, world_size)
    per_row, weights = saved_bytes_per_row(ns, cfg, attention_fn)
    logits_grad = rows * cfg.train_seq_len * cfg.vocab_size * 2
    states = params + grads + opt_state + ema + ddp
    total = states + weights + rows * per_row + logits_grad
    gb, mib = 1e9, 2**20
    detail = (f"params {params / gb:.2f} + grads {grads / gb:.2f} + optimiser {opt_state / gb:.2f} + ema {ema / gb:.2f} "
              f"+ ddp {ddp / gb:.2f} + bf16 weight copies {weights / gb:.2f} + activations {rows * per_row / gb:.2f} "
              f"({rows} rows/GPU x {per_row / 2**20:.0f} MiB, bf16, as FA3 / fused MLP, CE and RMSNorm kernels save) + "
              f"logits grad {logits_grad / gb:.2f} GB = {total / mib:.0f} MiB; record 1.0611 measured "
              f"{facts.RECORD_PEAK_MEMORY_MIB} MiB peak allocated on its shape")
    status = "FAIL" if total > GPU_MEMORY_BYTES else "PASS"
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


def gaussian_artifact(ns, cfg, model, rules, path: str) -> tuple[int, dict, float]:
    """(bytes, Hessians, seconds) of the file's quantize_and_write to `path` on `model` with its quantised matrices
    redrawn as Gaussian rows (trained_like_weights) and Hessians from one random-token calibration pass."""
    trained_like_weights(model, rules, cfg.seed)
    env = ns.DistEnv(0, 1, 0, torch.device("cpu"))
    calib_cfg = dataclasses.replace(cfg, gptq_calib_batches=min(cfg.gptq_calib_batches, 1),
                                    gptq_calib_tokens=LOCAL_CALIBRATION_ROWS * cfg.train_seq_len)
    rows: dict = {}  # calibration rows per Hessian: AWQ-lite ranks its groups by activation RMS (AWQ_TOP_K)
    hessians = ns.calibrate_hessians(calib_cfg, env, model, rules, RandomTokens(cfg.vocab_size), rows)
    t0 = time.perf_counter()
    size = ns.quantize_and_write(cfg, model, rules, hessians, path, rows)
    return size, (hessians, rows), time.perf_counter() - t0


def record_relative_bytes(ns, cfg, model, calibration: tuple, artifact_bytes: int) -> tuple[int | None, str]:
    """(predicted artifact bytes, how): a published run's logged artifact (nearest_anchor: the 1.0611 record, or PR
    #2101 for a Config with AWQ-lite) x golf's bytes over that run's own serializer's on the same symbols at its
    Config (anchor.golf_over, measured by `python -m golf.bench quant --vs-record`) x golf's artifact for this Config
    over golf's for the anchor's quant settings, both on these Gaussian-row weights and Hessians (the second is the
    first when the settings agree). What Gaussian rows get wrong about trained ones divides out of both ratios.
    Anchored on the record's shape: (None, why) for another shape (extrapolating would take a second real-size
    model)."""
    differs = [k for k, v in facts.RECORD_SHAPE.items() if getattr(cfg, k) != v]
    if differs:
        return None, f"anchored on the record's shape; this Config's {', '.join(differs)} differ"
    anchor = nearest_anchor(cfg)
    anchor_cfg = dataclasses.replace(cfg, **anchor.quant)
    if anchor_cfg == cfg:
        at_anchor = artifact_bytes
    else:
        rules = ns.assign_rules(model.named_parameters(), ns.param_rules(anchor_cfg))
        with tempfile.TemporaryDirectory() as tmp:
            at_anchor = ns.quantize_and_write(anchor_cfg, model, rules, calibration[0], os.path.join(tmp, "a.golf"),
                                              calibration[1])
    predicted = round(anchor.model_bytes * anchor.golf_over * artifact_bytes / at_anchor)
    changed = ", ".join(f"{k} {v}" for k, v in anchor.quant.items() if getattr(cfg, k) != v) or "none"
    return predicted, (f"{anchor.model_bytes} ({anchor.name}'s artifact, train_seed42.log) x {anchor.golf_over} (golf "
                       f"/ its serializer on the same symbols, bench quant --vs-record) x {artifact_bytes} / "
                       f"{at_anchor} (this Config / its quant settings on the same weights; its values where this "
                       f"differs: {changed}) = {predicted}")


def check_size(ns, cfg, path: Path, out: dict) -> dict:
    """Two bounds on code + artifact. The upper bound: the artifact of Gaussian rows (+ the size predictor's largest
    error on published records); Gaussian rows compress worse than trained ones, so it overstates. The
    record-relative prediction (record_relative_bytes, + RECORD_RELATIVE_ERROR): anchored on a measured artifact,
    it decides the verdict at the record's shape; the upper bound is reported beside it, and decides alone at any
    other shape."""
    model = out["model"]
    rules = ns.assign_rules(model.named_parameters(), ns.param_rules(cfg))
    with tempfile.TemporaryDirectory() as tmp:
        artifact = os.path.join(tmp, "final_model.golf")
        artifact_bytes, calibration, out["serialise_s"] = gaussian_artifact(ns, cfg, model, rules, artifact)
        t0 = time.perf_counter()
        ns.read_artifact(artifact)  # the decode every rank runs inside the timed eval (load_artifact_model)
        out["decode_s"] = time.perf_counter() - t0
    code_bytes = out["code_bytes"]
    upper = math.ceil(artifact_bytes * (1 + SIZE_PREDICTOR_ERROR)) + code_bytes
    predicted, how = record_relative_bytes(ns, cfg, model, calibration, artifact_bytes)
    detail = (f"upper bound: artifact {artifact_bytes} (quant {cfg.quant_method}, codec {cfg.codec}, "
              f"{len(calibration[0])} Hessians, Gaussian rows) +{SIZE_PREDICTOR_ERROR:.2%} (size predictor's largest error on published "
              f"records) + code {code_bytes} ({path.name} as shipped) = {upper}")
    if predicted is None:
        status = "FAIL" if upper > SIZE_LIMIT else "WARN" if upper > SIZE_TARGET else "PASS"
        return line(status, "size", f"{upper} bytes (upper bound)", f"{SIZE_LIMIT}", f"{SIZE_LIMIT - upper:+d} bytes",
                    f"{detail}; no record-relative prediction ({how}): the upper bound decides")
    total = predicted + code_bytes
    bound = math.ceil(predicted * (1 + RECORD_RELATIVE_ERROR)) + code_bytes
    status = "FAIL" if bound > SIZE_LIMIT else "WARN" if bound > SIZE_TARGET else "PASS"
    margin = SIZE_LIMIT - bound
    fallback = ""
    if bound > SIZE_LIMIT and getattr(cfg, "size_fallback", False) and getattr(cfg, "awq_top_k", 0) > 0:
        # The run rewrites an artifact that does not fit without AWQ-lite's groups (golf/train.py fit_artifact).
        fb_cfg = dataclasses.replace(cfg, awq_top_k=0)
        fb_rules = ns.assign_rules(model.named_parameters(), ns.param_rules(fb_cfg))
        with tempfile.TemporaryDirectory() as tmp:
            fb_bytes = ns.quantize_and_write(fb_cfg, model, fb_rules, calibration[0], os.path.join(tmp, "f.golf"))
        fb_predicted, fb_how = record_relative_bytes(ns, fb_cfg, model, calibration, fb_bytes)
        fb_bound = math.ceil(fb_predicted * (1 + RECORD_RELATIVE_ERROR)) + code_bytes
        status, margin = ("FAIL" if fb_bound > SIZE_LIMIT else "WARN"), SIZE_LIMIT - fb_bound
        fallback = (f"; at most {bound} is over the limit, and SIZE_FALLBACK rewrites an artifact that does not fit "
                    f"without AWQ-lite's groups: {fb_how} + code {code_bytes}, error +-{RECORD_RELATIVE_ERROR:.2%} "
                    f"-> at most {fb_bound}, which the margin is of")
    return line(status, "size", f"{total} bytes predicted", f"{SIZE_LIMIT}", f"{margin:+d} bytes",
                f"predicted: {how} + code {code_bytes} = {total}, error +-{RECORD_RELATIVE_ERROR:.2%} "
                f"({RECORD_RELATIVE_ERROR_SOURCE}) -> at most {bound}{fallback}; the prediction decides: it is "
                f"anchored on a measured artifact, while Gaussian rows overstate trained ones (the record's own "
                f"serializer: {RECORD_GAUSSIAN_BYTES} B on Gaussian rows against its logged {RECORD_MODEL_BYTES} B); "
                f"{detail}")


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


def val_doc_lengths(ns, cfg) -> tuple[list[int], str]:
    """(target count of each val document, where they come from): the val split's documents when it is here,
    else the 1.0611 record's val documents (golf/budget.py record_val_doc_lengths: the 50,000 FineWeb val
    documents as its logs bound them) scaled to the dataset's val tokens (VAL_TOKENS_BY_DATASET by the data
    path's last folder; an unknown one is taken as plain SP8192's)."""
    try:
        tokens = ns.load_val_tokens(cfg.data_path, cfg.val_max_tokens)
        return [n for _, n in ns.doc_spans(tokens)], cfg.data_path
    except ns.GolfError:
        dataset = Path(cfg.data_path).name
        n = facts.VAL_TOKENS_BY_DATASET.get(dataset, facts.FINEWEB_VAL_TOKENS)
        n = n if cfg.val_max_tokens <= 0 else min(cfg.val_max_tokens, n)
        known = "" if dataset in facts.VAL_TOKENS_BY_DATASET else f"; {dataset} unknown, plain SP8192's count taken"
        return facts.record_val_doc_lengths(n - 1), (f"{n} val tokens of {dataset}{known}, in the 1.0611 record's "
                                                     f"{facts.PHASED_TTT_RECORD['docs']} val documents (its logs)")


def eval_rates(ns, cfg, attention_fn) -> tuple[float, float]:
    """(scoring FLOP/s, TTT training FLOP/s) of ONE H100, from a published record's 8-GPU sliding-window and stream
    TTT times (the plain scoring passes and stream TTT)."""
    rec = facts.EVAL_RECORD
    record_cfg = dataclasses.replace(cfg, **facts.RECORD_SHAPE, sw_seq_len=rec["seq_len"], sw_stride=rec["stride"],
                                     ttt_enabled=False)
    windows = len(ns.window_plan(rec["val_tokens"] - 1, rec["seq_len"], rec["stride"]))
    score_rate = windows * eval_flops_per_row(ns, record_cfg, attention_fn) / rec["sliding_seconds"]
    ttt_score_s = (windows + rec["ttt_chunks"] - 1) / windows * rec["sliding_seconds"]  # chunk cuts add rows
    train_row = train_flops_per_row(ns, dataclasses.replace(record_cfg, train_seq_len=rec["seq_len"]), attention_fn)
    ttt_train_flops = (rec["ttt_chunks"] - 1) * rec["ttt_epochs"] * (rec["ttt_chunk_tokens"] // rec["seq_len"]) * train_row
    return score_rate / 8, ttt_train_flops / (rec["ttt_seconds"] - ttt_score_s) / 8


def record_batch_tokens(batch: list[int]) -> tuple[int, int]:
    """(tokens forward only, tokens forward + backward) of one batch in the 1.0611 record's per-document LoRA TTT:
    chunk ci runs every row of the batch (finished documents too) at a window of min((ci + 1) x 48, 2048) tokens,
    with a backward on every chunk but the batch's last (R:3128-3205)."""
    rec = facts.PHASED_TTT_RECORD
    chunks = max(math.ceil(n / rec["chunk"]) for n in batch)
    tokens = [len(batch) * min((ci + 1) * rec["chunk"], rec["seq_len"]) for ci in range(chunks)]
    return tokens[-1], sum(tokens[:-1])


def record_doc_ttt_schedule(lengths: list[int], cost) -> tuple[float, list[tuple[float, int]]]:
    """The 1.0611 record's phased TTT replayed on 8 ranks, in units of cost(fwd_tokens, bwd_tokens) per batch:
    batches of 64 in ascending length, claimed longest first from one queue by whichever rank is free (R:3108);
    a rank that finishes a batch before the last phase adds its documents to the prefix count and, once the count
    reaches the phase's boundary (833, 1666, 2500 documents), waits for every rank to finish its batch (R:3227);
    then the phase (a fixed time, added by the caller). Returns (per-document time of the slowest rank, phases
    excluded; [(time the phase starts, documents scored by then)] per phase)."""
    rec = facts.PHASED_TTT_RECORD
    asc = sorted(lengths)
    batches = [asc[i : i + rec["batch"]] for i in range(0, len(asc), rec["batch"])][::-1]
    bounds = list(rec["phase_docs"])
    free = [0.0] * rec["world_size"]
    holding: list[list[int] | None] = [None] * rec["world_size"]
    done, paused, phases, queue, finish = 0, set(), [], 0, 0.0
    while queue < len(batches) or any(h is not None for h in holding):
        r = min((i for i in range(len(free)) if i not in paused), key=lambda i: free[i])
        if holding[r] is not None and bounds:
            done += len(holding[r])
        holding[r] = None
        if bounds and done >= bounds[0]:
            paused.add(r)
            if len(paused) == len(free):  # every rank at the barrier: the phase starts
                start = max(free)
                phases.append((start, done))
                free, paused = [start] * len(free), set()
                bounds.pop(0)
            continue
        if queue == len(batches):
            finish, free[r] = max(finish, free[r]), math.inf
            continue
        holding[r] = batches[queue]
        queue += 1
        free[r] += cost(*record_batch_tokens(holding[r]))
    return finish, phases


def doc_ttt_rates(ns, cfg, attention_fn) -> tuple[float, float]:
    """(per-document LoRA FLOP/s, global-phase FLOP/s) of ONE H100, calibrated on the 1.0611 record's phased TTT
    (golf/budget.py PHASED_TTT_RECORD, means of its three seeds): the phases' SGD steps over their logged seconds;
    the per-document work of its slowest rank (record_doc_ttt_schedule on its val documents,
    record_val_doc_lengths) over the rest of its total_eval_time. FLOPs per token are those of a 2048 window (fwd;
    fwd + full bwd) at the record's shape, the measure check_eval charges golf's passes with."""
    rec = facts.PHASED_TTT_RECORD
    fwd_token, train_token = record_token_flops(ns, cfg, attention_fn)
    phase_s = sum(rec["phase_seconds"]) / len(rec["phase_seconds"])
    lora_s = sum(rec["eval_seconds"]) / len(rec["eval_seconds"]) - phase_s
    phase_rate = rec["phase_steps"] * rec["phase_rows_per_rank"] * rec["seq_len"] * train_token / phase_s
    flops, _ = record_doc_ttt_schedule(facts.record_val_doc_lengths(rec["val_tokens"] - 1),
                                       lambda fwd, bwd: fwd * fwd_token + bwd * train_token)
    return flops / lora_s, phase_rate


def token_flops(ns, cfg, attention_fn, seq_len: int) -> tuple[float, float]:
    """(forward, forward + backward) FLOPs per token of a seq_len-token row of this Config's model."""
    return (eval_flops_per_row(ns, dataclasses.replace(cfg, sw_seq_len=seq_len), attention_fn) / seq_len,
            train_flops_per_row(ns, dataclasses.replace(cfg, train_seq_len=seq_len), attention_fn) / seq_len)


def record_token_flops(ns, cfg, attention_fn) -> tuple[float, float]:
    """(forward, forward + backward) FLOPs per token of a 2048-token window at the record's shape."""
    return token_flops(ns, dataclasses.replace(cfg, **facts.RECORD_SHAPE), attention_fn,
                       facts.PHASED_TTT_RECORD["seq_len"])


def check_eval(ns, cfg, attention_fn, world_size: int, out: dict) -> list[dict]:
    """Every pass of the file's eval_passes() (tokens on the busiest rank) at one H100's record-measured rates
    (per-document phased TTT: the 1.0611 record's own, doc_ttt_rates; scoring and stream TTT: the 04-09 record's,
    eval_rates), plus the artifact's decode as timed here when the size check ran (it runs inside the timed eval)."""
    lengths, source = val_doc_lengths(ns, cfg)
    passes = ns.eval_passes(cfg, lengths, world_size)
    score_rate, ttt_rate = eval_rates(ns, cfg, attention_fn)
    lora_rate, phase_rate = doc_ttt_rates(ns, cfg, attention_fn)
    # Each pass's tokens are charged in its rates' measure. Scoring and stream TTT: a full window's FLOPs per token.
    # Phased per-document TTT's rates are FLOPs of a 2048-token row per token over seconds (doc_ttt_rates), so its
    # tokens are charged as this Config's model on a 2048-token row whatever the window: a longer window costs
    # through the tokens it adds (context re-read for long documents), not through a full row's attention on every
    # token. Charged at a full 2560 row instead, PR #2101's eval came to 589.5 s against its logged 508.0-520.0 s.
    window_token = token_flops(ns, cfg, attention_fn, cfg.sw_seq_len)
    doc_token = token_flops(ns, cfg, attention_fn, facts.PHASED_TTT_RECORD["seq_len"])
    lines, timed = [], 0.0
    for p in passes:
        doc = p.name == "ttt" and cfg.ttt_mode == "doc"
        fwd_token, train_token = doc_token if doc else window_token
        flops_score = p.score_tokens * fwd_token
        flops_adapt = p.adapt_tokens * train_token  # LoRA backward counted as a full one (so are the rates)
        flops_phase = p.phase_tokens * train_token
        if doc:
            seconds = (flops_score + flops_adapt) / lora_rate + flops_phase / phase_rate
        else:
            seconds = flops_score / score_rate + (flops_adapt + flops_phase) / ttt_rate
        timed += seconds if p.timed else 0.0
        train = (f", {p.adapt_tokens + p.phase_tokens} tokens fwd+bwd in {p.steps} steps "
                 f"({(flops_adapt + flops_phase) / 1e15:.1f} PFLOP)" if p.steps or p.adapt_tokens else "")
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
    rec, doc = facts.EVAL_RECORD, facts.PHASED_TTT_RECORD
    lines.append(line(time_status(timed, limit), "eval", f"{timed:.4g}s predicted", f"{limit:.1f}s",
                      f"{(limit - timed) / limit:.0%}",
                      f"timed passes over {sum(lengths)} targets ({source}); rates per H100: per-doc TTT "
                      f"{lora_rate / 1e15:.3f} PFLOP/s and its global phases {phase_rate / 1e15:.3f} PFLOP/s from "
                      f"{doc['source']} (total_eval_time {min(doc['eval_seconds'])}-{max(doc['eval_seconds'])}s); "
                      f"scoring {score_rate / 1e15:.3f} PFLOP/s and stream TTT {ttt_rate / 1e15:.3f} PFLOP/s from "
                      f"{rec['source']}"))
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
