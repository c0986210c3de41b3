"""The optimiser pieces that need ranks: 2 gloo processes on CPU, each loading the record itself.

- optim.clip_average: each rank's gradient differs (rank 0's norm 1.0, over the 0.3 clip; rank 1's 0.1, under it).
  golf: its train_step on a model whose gradient is the rank's data, through train.across_ranks (DDP or not, as
  the run decides) and an SGD(lr=1) step, so the parameter change is the gradient the optimisers see. record: the
  clip statement of its step_fn (R:3399-3400) on the same gradient, then its Optimizers._all_reduce_packed_grads
  (R:1970-1990, the all-reduce AVG of its replicated parameters); its step_fn must clip before optimizers.step.
- optim.warmup_state: two Muon steps on 5 matrices (two shapes) with per-rank gradients, then the warm-up reset.
  golf: average_grads, its sharded Muon, train.reset_after_warmup; record: its Muon over the same matrices as
  two banks (launch_reduce_scatters, step), then load_state_dict of the state before the steps (R:3471-3473).
  The momentum left afterwards, gathered over both ranks, is compared matrix by matrix.
"""

import ast
import os
import socket
import tempfile
import types
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from golf.equiv.report import Piece, compare, verdict

WORLD = 2
BANK_SHAPES = ((3, 16, 8), (2, 8, 24))  # the record's banks; golf gets their matrices one by one
# golf averages fp32 gradients and rounds once to bf16; the record's reduce-scatter averages bf16 copies in bf16
# (R:1808-1816): the momenta may differ by a bf16 rounding (2^-8 relative).
MOMENTUM_RTOL = 2 ** -7


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step_fn_order(rec) -> tuple[bool, str]:
    """Whether the record's step_fn clips before optimizers.step and train_model never wraps DDP."""
    source = rec.path.read_text(encoding="utf-8")
    train = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "train_model")
    step_fn = next(n for n in ast.walk(train) if isinstance(n, ast.FunctionDef) and n.name == "step_fn")
    texts = [ast.get_source_segment(source, n) for n in step_fn.body]
    clip = next((i for i, t in enumerate(texts) if "clip_grad_norm_" in t), None)
    step = next((i for i, t in enumerate(texts) if "optimizers.step(" in t), None)
    ddp = "DistributedDataParallel" in ast.get_source_segment(source, train)
    ok = clip is not None and step is not None and clip < step and not ddp
    return ok, f"step_fn clip at statement {clip}, optimizers.step at {step}; DDP in train_model: {ddp}"


def clip_statement(rec):
    source = rec.path.read_text(encoding="utf-8")
    train = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "train_model")
    node = next(n for n in ast.walk(train) if isinstance(n, ast.If)
                and "clip_grad_norm_" in ast.get_source_segment(source, n))
    return compile(ast.Module(body=[node], type_ignores=[]), str(rec.path), "exec")


class GradIsData(torch.nn.Module):
    """loss = sum(p * data): each parameter's gradient is the rank's data."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(6, 4))
        self.b = torch.nn.Parameter(torch.zeros(5))

    def forward(self, x, y):
        return (self.w * x[:24].view(6, 4)).sum() + (self.b * x[24:]).sum()


class OneBatch:
    def __init__(self, x):
        self.x = x

    def next_batch(self, *args):
        return self.x, self.x


def rank_data(rank: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 + rank)
    x = torch.randn(29, generator=g)
    return x / x.norm() * (1.0 if rank == 0 else 0.1)


def golf_clip_average(cfg, rank: int) -> torch.Tensor:
    from golf.dist import DistEnv
    from golf.step import train_step
    from golf.train import across_ranks

    model = GradIsData()
    net = across_ranks(model, cfg, DistEnv(rank, WORLD, rank, torch.device("cpu")))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    train_step(net, OneBatch(rank_data(rank)), [opt], cfg, 1, torch.device("cpu"))
    return -torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def record_clip_average(rec, h, rank: int) -> torch.Tensor:
    model = GradIsData()
    data = rank_data(rank)
    model.w.grad, model.b.grad = data[:24].view(6, 4).clone(), data[24:].clone()
    params = list(model.parameters())
    exec(clip_statement(rec), {"torch": torch, "h": h, "_clip_params": params})
    rec.module.Optimizers._all_reduce_packed_grads(types.SimpleNamespace(replicated_packed_params=params))
    return torch.cat([p.grad.reshape(-1) for p in params])


def bank_grads(step: int, rank: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + rank)
    return [torch.randn(shape, generator=g) * 1e-3 for shape in BANK_SHAPES]


def initial_banks() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return [torch.randn(shape, generator=g) * 0.1 for shape in BANK_SHAPES]


def golf_warmup_momenta(cfg, rank: int) -> dict[str, torch.Tensor]:
    """golf's sharded Muon, two steps, then its warm-up reset; {"b{bank}.{i}": momentum} this rank kept."""
    import copy

    from golf.dist import average_grads
    from golf.optim import build_optimizers
    from golf.params import ParamRule
    from golf.train import reset_after_warmup

    model = torch.nn.Module()
    model.mats = torch.nn.ParameterList([torch.nn.Parameter(m.clone()) for bank in initial_banks() for m in bank])
    rules = {n: ParamRule(n, "muon", cfg.matrix_lr, cfg.muon_wd, None, None, "mlp")
             for n, _ in model.named_parameters()}
    opts = build_optimizers(model, rules, cfg)
    init_model, init_opts = copy.deepcopy(model.state_dict()), [copy.deepcopy(o.state_dict()) for o in opts]
    for step in range(2):
        for p, g in zip(model.mats, [m for bank in bank_grads(step, rank) for m in bank]):
            p.grad = g.clone()
        average_grads(list(model.parameters()))
        for opt in opts:
            opt.step()
    reset_after_warmup(cfg, WORLD, model, opts, init_model, init_opts)
    names = [f"b{b}.{i}" for b, shape in enumerate(BANK_SHAPES) for i in range(shape[0])]
    state = opts[0].state
    return {n: state[p]["momentum"].float() for n, p in zip(names, model.mats) if p in state}


def record_warmup_momenta(rec, h) -> dict[str, torch.Tensor]:
    """The record's Muon, two distributed steps, then load_state_dict of its state before them; the momentum it
    keeps (shard_mom, outside state_dict) gathered over the ranks: {"b{bank}.{i}": momentum}."""
    banks = [torch.nn.Parameter(b.clone()) for b in initial_banks()]
    opt = rec.module.Muon(banks, lr=h.matrix_lr, momentum=h.muon_momentum, backend_steps=h.muon_backend_steps,
                          weight_decay=h.muon_wd, row_normalize=h.muon_row_normalize)
    initial = __import__("copy").deepcopy(opt.state_dict())
    for step in range(2):
        for p, g in zip(banks, bank_grads(step, dist.get_rank())):
            p.grad = g.clone()
        opt.launch_reduce_scatters()
        opt.step()
    opt.load_state_dict(initial)
    out = {}
    for b, p in enumerate(banks):
        meta = next(m for m in opt._bank_meta if m["p"] is p)
        full = torch.empty(meta["shard"].shape[0] * WORLD, *p.shape[1:], dtype=torch.bfloat16)
        dist.all_gather_into_tensor(full, meta["shard_mom"].contiguous())
        out.update({f"b{b}.{i}": full[i].float() for i in range(p.shape[0])})
    return out


def worker(rank: int, port: int, record: str, log: str, cfg, out: str) -> None:
    from golf.equiv.record import load_record, record_hparams

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    rec = load_record(Path(record), Path(log))
    h = record_hparams(rec)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        result = {"golf_clip": golf_clip_average(cfg, rank), "record_clip": record_clip_average(rec, h, rank),
                  "record_momenta": record_warmup_momenta(rec, h)}
        kept = [None] * WORLD
        dist.all_gather_object(kept, golf_warmup_momenta(cfg, rank))
        result["golf_momenta"] = {k: v for part in kept for k, v in part.items()}
        torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.barrier()
        dist.destroy_process_group()
    # Its result saved and the group torn down, a rank can still abort at interpreter exit (a gloo thread destroyed
    # then: SIGABRT once in a 2026-12-05 suite run, as tests/test_distributed.py's workers did): leave without the
    # C++ destructors. An exception above propagates first, so a failure is never hidden.
    os._exit(0)


def rank_pieces(rec, cfg) -> list[Piece]:
    with tempfile.TemporaryDirectory(prefix="golf-equiv-ranks-") as tmp:
        mp.spawn(worker, args=(free_port(), str(rec.path), str(rec.log), cfg, tmp), nprocs=WORLD, join=True)
        results = [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(WORLD)]
    order_ok, order = step_fn_order(rec)
    ours = torch.stack([r["golf_clip"] for r in results])
    theirs = torch.stack([r["record_clip"] for r in results])
    clip = compare("optim.clip_average", ours, theirs, 1e-7, 0.0, detail=f"2 gloo ranks, gradient norms 1.0 and "
                   f"0.1, clip {cfg.grad_clip_norm}; record {order}")
    if not order_ok:
        clip = verdict("optim.clip_average", False, clip.max_abs, clip.max_rel, clip.detail)
    golf_m, record_m = results[0]["golf_momenta"], results[0]["record_momenta"]
    names = sorted(record_m)
    ours = torch.cat([golf_m.get(n, torch.zeros_like(record_m[n])).reshape(-1) for n in names])
    theirs = torch.cat([record_m[n].reshape(-1) for n in names])
    scale = float(theirs.abs().max())
    warm = compare("optim.warmup_state", ours, theirs, MOMENTUM_RTOL * scale, 0.0,
                   detail=f"Muon momentum left by the reset on 2 gloo ranks: golf keeps {len(golf_m)} of "
                          f"{len(names)} matrices' (record: all, in shard_mom); tolerance one bf16 rounding "
                          f"of the largest")
    return [clip, warm]
