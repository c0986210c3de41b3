"""Optimiser pieces: golf's optimisers, schedules and EMA against the record's own code on the same weights and
gradients.

- optim.muon / optim.adam.embed / optim.adam.scalars: two steps of golf's build_optimizers against the record's
  Optimizers groups (its Muon, its fused AdamW for the tied embedding and for the scalars), one process, on golf's
  GPT at small dims copied into the record's GPT (golf/equiv/model.py's name map), the record's model in its own
  dtypes (GPT(h).bfloat16() then restore_fp32_params, R:3332-3333). Matrix gradients are at post-clip scale with
  rows two decades apart, where MuonEq-R's epsilon shows. Optimiser-state dtypes are compared too.
- optim.lr_schedule.progress / .wallclock, optim.momentum_ramp, optim.ema: the record's own statements, lifted
  from its train_model by name (training_frac, lr_mul, the momentum warm-up block of step_fn, the EMA update),
  run beside golf's lr_multiplier / WallclockBudget, muon_momentum_at and WeightEMA.
- optim.clip_average and optim.warmup_state: 2 gloo processes (golf/equiv/optim_ranks.py).
"""

import ast
import contextlib
import dataclasses
import types

import torch

from golf.equiv.model import load_shared_weights, name_map, randomise_, record_view
from golf.equiv.record import record_hparams
from golf.equiv.report import Piece, compare, verdict
from golf.recipes import DEVIATIONS

STEPS = 2
# Small dims for the steps: 8 heads x 16 = 128 wide (bf16 Newton-Schulz on CPU is slow), vocab 128; no forward runs.
HEAD_DIM, VOCAB = 16, 128
# The record's Muon runs its bank (L, rows, cols) through one batched bf16 Newton-Schulz, golf each matrix alone:
# the same bf16 ops, so the steps agree to a few bf16 roundings of the update (lr * |update| ~ lr).
MUON_RTOL = 1e-2  # max |golf - record| / max |record's parameter change|
SCHEDULE_ATOL = 1e-12


@contextlib.contextmanager
def no_cuda_stream():
    """The record's Optimizers makes a CUDA side stream (R:1966) that its CPU-run steps never use."""
    saved = torch.cuda.Stream
    torch.cuda.Stream = lambda *args, **kwargs: None
    try:
        yield
    finally:
        torch.cuda.Stream = saved


def small_dims(cfg) -> dict:
    return dict(vocab_size=VOCAB, model_dim=cfg.num_heads * HEAD_DIM)


def record_model_in_its_dtypes(rec, h):
    model = rec.module.GPT(h).bfloat16()
    rec.module.restore_fp32_params(model)
    return model


def random_grads(golf_model, seed: int) -> dict[str, torch.Tensor]:
    """Matrices: N(0, 1) rows scaled 1e-6 .. 1e-4 (post-clip scale at the real dims is ~5e-5 per element);
    others N(0, 1e-3^2)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, p in golf_model.named_parameters():
        noise = torch.randn(p.shape, generator=g)
        if p.ndim == 2 and min(p.shape) > 16 and name != "tok_emb.weight":
            noise = noise * torch.logspace(-6, -4, p.shape[0])[torch.randperm(p.shape[0], generator=g)][:, None]
        else:
            noise = noise * 1e-3
        out[name] = noise
    return out


def set_grads(golf_model, record_model, grads: dict[str, torch.Tensor]) -> None:
    record_params = dict(record_model.named_parameters())
    record_grads = {n: torch.zeros_like(p) for n, p in record_params.items()}
    mapped = set()
    for golf_name, p in golf_model.named_parameters():
        p.grad = grads[golf_name].to(p.dtype)
    for golf_name, record_name, index in name_map(golf_model, record_model):
        record_view(record_grads, record_name, index).copy_(grads[golf_name])
        mapped.add(record_name)
    for name, p in record_params.items():
        p.grad = record_grads[name] if name in mapped else None


def step_pieces(rec, cfg) -> list[Piece]:
    from golf.model.gpt import GPT
    from golf.optim import Muon, build_optimizers
    from golf.params import assign_rules, param_rules

    golf_cfg = dataclasses.replace(cfg, **small_dims(cfg))
    h = record_hparams(rec, **small_dims(cfg))
    torch.manual_seed(0)
    golf_model = GPT(golf_cfg)
    randomise_(golf_model)
    record_model = record_model_in_its_dtypes(rec, h)
    load_shared_weights(golf_model, record_model)
    rules = assign_rules(golf_model.named_parameters(), param_rules(golf_cfg))
    opts = build_optimizers(golf_model, rules, golf_cfg)
    with no_cuda_stream():
        record_opts = rec.module.Optimizers(h, record_model)
    before = {n: p.detach().float().clone() for n, p in golf_model.named_parameters()}
    for step in range(STEPS):
        set_grads(golf_model, record_model, random_grads(golf_model, 10 + step))
        for opt in opts:
            opt.step()
        for opt in (record_opts.optimizer_tok, record_opts.optimizer_scalar, record_opts.optimizer_muon):
            opt.step()
    record_params = dict(record_model.named_parameters())
    groups = {"optim.muon": [], "optim.adam.embed": [], "optim.adam.scalars": []}
    for golf_name, record_name, index in name_map(golf_model, record_model):
        group = ("optim.muon" if rules[golf_name].optim == "muon" else
                 "optim.adam.embed" if golf_name == "tok_emb.weight" else "optim.adam.scalars")
        ours = dict(golf_model.named_parameters())[golf_name]
        theirs = record_view(record_params, record_name, index)
        groups[group].append((golf_name, ours.detach(), theirs.detach(), before[golf_name]))
    muon = next(o for o in opts if isinstance(o, Muon))
    golf_mom = {next(iter(muon.state.values()))["momentum"].dtype}
    record_mom = {s["momentum_buffer"].dtype for s in record_opts.optimizer_muon.state.values()}
    adam = next(o for o in opts if not isinstance(o, Muon))
    emb = dict(golf_model.named_parameters())["tok_emb.weight"]
    golf_emb = (emb.dtype, adam.state[emb]["exp_avg"].dtype)
    record_emb_p = record_model.tok_emb.weight
    record_emb = (record_emb_p.dtype, record_opts.optimizer_tok.state[record_emb_p]["exp_avg"].dtype)
    pieces = []
    for name, members in groups.items():
        worst, worst_name, worst_abs = 0.0, "", 0.0
        for golf_name, ours, theirs, start in members:
            diff = float((ours.float() - theirs.float()).abs().max())
            moved = float((theirs.float() - start).abs().max())
            rel = diff / max(moved, 1e-30)
            if rel >= worst:
                worst, worst_name, worst_abs = rel, golf_name, diff
        tol = MUON_RTOL if name == "optim.muon" else 0.0
        extra, same_dtype = "", True
        if name == "optim.muon":
            same_dtype = golf_mom == record_mom
            extra = f"; momentum golf {sorted(map(str, golf_mom))} record {sorted(map(str, record_mom))}"
        elif name == "optim.adam.embed":
            same_dtype = golf_emb == record_emb
            extra = f"; weight, exp_avg golf {golf_emb} record {record_emb}"
        pieces.append(verdict(name, worst <= tol and same_dtype, worst_abs, worst,
                              f"{STEPS} steps, {len(members)} tensors, worst {worst_name} "
                              f"(max |diff| / max |record's change| <= {tol:g}){extra}"))
    return pieces


def train_model_nodes(rec) -> list[ast.stmt]:
    source = rec.path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train_model"), None)
    if fn is None:
        raise LookupError("no train_model")
    return fn.body


def lifted(rec, pick, env: dict) -> dict:
    """Run the top-level statements of the record's train_model that `pick(node, source)` selects, in order, in
    namespace `env` (its log calls silenced)."""
    source = rec.path.read_text(encoding="utf-8")
    nodes = [n for n in train_model_nodes(rec) if pick(n, source)]
    if not nodes:
        raise LookupError("statements not found in train_model")
    namespace = {"torch": torch, "log": lambda *a, **k: None, **env}
    module = ast.Module(body=nodes, type_ignores=[])
    exec(compile(module, str(rec.path), "exec"), namespace)
    return namespace


def schedule_functions(rec, h) -> dict:
    """The record's max_wallclock_ms arithmetic (R:3342-3349), training_frac and lr_mul (R:3351-3361)."""
    def pick(node, source):
        text = ast.get_source_segment(source, node) or ""
        is_budget = isinstance(node, (ast.Assign, ast.If)) and text.startswith(("max_wallclock_ms =", "if max_wall"))
        return is_budget or isinstance(node, ast.FunctionDef) and node.name in ("training_frac", "lr_mul")
    return lifted(rec, pick, {"h": h})


def schedule_pieces(rec, cfg) -> list[Piece]:
    from golf.budget import WallclockBudget
    from golf.optim import lr_multiplier

    h = record_hparams(rec)
    ns = schedule_functions(rec, h)
    record_budget_s = ns["max_wallclock_ms"] / 1000

    def golf_lr(c, step, elapsed):
        return lr_multiplier(step, elapsed, WallclockBudget(c, torch.device("cpu")).train_seconds, c.lr_warmup_steps,
                             c.warmdown_frac, c.min_lr)

    golf_budget_s = WallclockBudget(cfg, torch.device("cpu")).train_seconds
    fracs = [i / 400 for i in range(401)]
    steps = [round(f * h.iterations) for f in fracs]  # by progress the step never decides (wallclock set)
    ours = [golf_lr(cfg, s, f * golf_budget_s) for s, f in zip(steps, fracs)]
    theirs = [ns["lr_mul"](ns["training_frac"](s, f * ns["max_wallclock_ms"])) for s, f in zip(steps, fracs)]
    pieces = [compare("optim.lr_schedule.progress", ours, theirs, SCHEDULE_ATOL, 0.0,
                      detail=f"401 points of progress 0..1 (golf over {golf_budget_s:g} s, record over "
                             f"{record_budget_s:g} s)")]
    seconds = [i * 0.5 for i in range(1200)]  # the record's run, 0 .. 599.5 s
    ours = [golf_lr(cfg, 0, s) for s in seconds]
    theirs = [ns["lr_mul"](ns["training_frac"](0, s * 1000)) for s in seconds]
    with_reserve = dataclasses.replace(cfg, quant_reserve_seconds=h.gptq_reserve_seconds)
    same_rule = max(abs(golf_lr(with_reserve, 0, s) - t) for s, t in zip(seconds, theirs))
    reserve_only = same_rule <= SCHEDULE_ATOL and cfg.max_wallclock_seconds == h.max_wallclock_seconds
    pieces.append(compare("optim.lr_schedule.wallclock", ours, theirs, SCHEDULE_ATOL, 0.0,
                          DEVIATIONS.get("gptq_reserve_seconds") if reserve_only else None,
                          detail=f"every 0.5 s of 0..599.5 s: train clock golf {golf_budget_s:g} s, record "
                                 f"{record_budget_s:g} s; golf with QUANT_RESERVE_SECONDS={h.gptq_reserve_seconds:g}: "
                                 f"max diff {same_rule:.3g}"))
    return pieces


def momentum_piece(rec, cfg) -> Piece:
    """The record's momentum warm-up block of step_fn (R:3374-3393), run for steps 0..2000 on one param group."""
    from golf.optim import muon_momentum_at

    h = record_hparams(rec)
    source = rec.path.read_text(encoding="utf-8")
    step_fn = next(n for n in ast.walk(ast.Module(body=train_model_nodes(rec), type_ignores=[]))
                   if isinstance(n, ast.FunctionDef) and n.name == "step_fn")
    block = next(n for n in step_fn.body if isinstance(n, ast.If)
                 and "muon_momentum_warmup_steps" in ast.get_source_segment(source, n.test))
    code = compile(ast.Module(body=[block], type_ignores=[]), str(rec.path), "exec")
    group = {"momentum": h.muon_momentum}
    optimizers = types.SimpleNamespace(optimizer_muon=types.SimpleNamespace(param_groups=[group]))
    ours, theirs = [], []
    for step in range(2001):
        exec(code, {"h": h, "step": step, "optimizers": optimizers})
        theirs.append(group["momentum"])
        ours.append(muon_momentum_at(step, cfg))
    return compare("optim.momentum_ramp", ours, theirs, SCHEDULE_ATOL, 0.0, detail="steps 0..2000")


def ema_piece(rec, cfg) -> Piece:
    """The record's EMA update (R:3510-3512) and its cast back to each parameter's dtype (R:3546-3549) against
    golf's WeightEMA, over 5 updates of a bf16 and an fp32 parameter."""
    from golf.optim import WeightEMA

    h = record_hparams(rec)
    source = rec.path.read_text(encoding="utf-8")
    update = next(n for n in ast.walk(ast.Module(body=train_model_nodes(rec), type_ignores=[]))
                  if isinstance(n, ast.With) and "_ema_pairs" in (ast.get_source_segment(source, n) or ""))
    code = compile(ast.Module(body=[update], type_ignores=[]), str(rec.path), "exec")
    g = torch.Generator().manual_seed(3)
    model = torch.nn.Module()
    model.a = torch.nn.Parameter(torch.randn(4, 6, generator=g).bfloat16())
    model.b = torch.nn.Parameter(torch.randn(5, generator=g))
    ema = WeightEMA(model, cfg.ema_decay)
    live = model.state_dict(keep_vars=True)
    record_ema = {n: t.detach().float().clone() for n, t in live.items()}
    pairs = [(record_ema[n], t) for n, t in live.items()]
    for _ in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g).to(p.dtype))
        ema.update()
        exec(code, {"torch": torch, "_ema_pairs": pairs, "ema_decay": h.ema_decay})
    theirs = torch.cat([record_ema[n].to(live[n].dtype).float().reshape(-1) for n in live])
    ema.copy_to_model()
    ours = torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])
    return compare("optim.ema", ours, theirs, 0.0, 0.0, detail=f"decay golf {cfg.ema_decay} record {h.ema_decay}, "
                   "5 updates, applied in each parameter's dtype (bf16 and fp32)")


def check(rec, cfg) -> list[Piece]:
    from golf.equiv.optim_ranks import rank_pieces

    pieces = step_pieces(rec, cfg)
    pieces += schedule_pieces(rec, cfg)
    pieces.append(momentum_piece(rec, cfg))
    pieces.append(ema_piece(rec, cfg))
    pieces += rank_pieces(rec, cfg)
    return pieces
