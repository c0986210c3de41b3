"""Optimisers and schedules: Muon / MuonEq-R for matrices, AdamW or Lion for embeddings and scalars, weight EMA,
time-based warmdown."""

import torch
import torch.distributed as dist

from golf.config import packed_when, pick
from golf.params import ParamRule

# Quintic Newton-Schulz coefficients (Keller Jordan's Muon): pushes singular values towards ~1 in 5 steps.
NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: torch.Tensor, steps: int, eps: float = 1e-7) -> torch.Tensor:
    """Approximate the orthogonal factor U V^T of g (rows, cols), in bf16 on CUDA, fp32 elsewhere."""
    a, b, c = NS_COEFFS
    x = g.to(torch.bfloat16 if g.is_cuda else torch.float32)
    transposed = x.size(0) > x.size(1)
    if transposed:
        x = x.T  # iterate on the wide side: X X^T is the smaller Gram matrix
    x = x / (x.norm() + eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if transposed else x).to(g.dtype)


# Polar Express degree-5 coefficients, one triple per iteration, exactly the record's (R:1720-1726, from
# modded-nanogpt). They are a Polar Express composition (Amsel et al. 2025, arXiv 2505.16932): the composed map
# equioscillates about 1, sending singular values in [1e-3, 1] into [0.8589, 1.1411] (min + max = 2). The paper's
# own list (its Appendix G code: l=1e-3, cushion 0.0241, safety 1.01) sends them into [0.8524, 1.1236]: a
# different design point; tests/test_optim.py checks both on random matrices. Iterations past the list repeat
# the last triple (the record runs exactly 5).
POLAR_EXPRESS_COEFFS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


def polar_express(g: torch.Tensor, steps: int, eps: float = 1e-7, coeffs=POLAR_EXPRESS_COEFFS) -> torch.Tensor:
    """Like newton_schulz, with a different odd quintic per iteration; input scaled by 1/|g|_F as the record.
    A bf16 or fp64 g is iterated in its own dtype (the record: bf16 always, R:1733); fp32 in bf16 on CUDA.
    The matrix is iterated as a batch of one, as the record's (R:1731-1732): batched and plain matmuls round bf16
    differently, and the record's update is the batched one."""
    x = g if g.dtype in (torch.bfloat16, torch.float64) else g.to(torch.bfloat16 if g.is_cuda else torch.float32)
    transposed = x.size(0) > x.size(1)
    x = (x.T if transposed else x)[None]
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)
    for i in range(steps):
        a, b, c = coeffs[min(i, len(coeffs) - 1)]
        gram = x @ x.mT
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return (x[0].T if transposed else x[0]).to(g.dtype)


ORTHOGONALIZERS = {"newton_schulz": newton_schulz, "polar_express": polar_express}


def row_normalize(update: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Scale each row of (rows, cols) to unit L2 norm, the norm (fp32) clamped below at eps, then divided in the
    update's dtype (the record, R:1852-1853). Only the eps sees the norm-vs-RMS scale: the orthogonaliser
    divides by the Frobenius norm next."""
    return update / update.float().norm(dim=-1, keepdim=True).clamp_min(eps).to(update.dtype)


def row_normalize_rms(update: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Scale each row of (rows, cols) to unit RMS, eps added to the RMS (golf before issue 23: next to the
    record's rule the eps weighs sqrt(cols) times more, 5e-3 of the update at post-clip gradient scale)."""
    return update / (update.float().square().mean(dim=1, keepdim=True).sqrt() + eps).to(update.dtype)


class Muon(torch.optim.Optimizer):
    """Nesterov momentum, then orthogonalise the update; shape-aware scale and decoupled weight decay.

    sharded (with a process group of world_size > 1): the matrices of each shape are dealt out in turns of
    world_size, rank r orthogonalises the r-th of each turn (and keeps only its momentum), and an all_gather
    hands every rank all the updates, as the records do (R:1800-1880). Gradients are identical on every rank
    (averaged before the step), so each update is computed exactly as one process would compute it.

    work_dtype: the gradient, momentum and update in this dtype (bf16: the record's, R:1788-1791, 1839-1845);
    None: the gradient's own (fp32)."""

    def __init__(self, params, lr: float, momentum: float, ns_steps: int, weight_decay: float,
                 orthogonalize=newton_schulz, sharded: bool = True, work_dtype: torch.dtype | None = None):
        super().__init__(params, dict(lr=lr, momentum=momentum, ns_steps=ns_steps, weight_decay=weight_decay))
        self.orthogonalize = orthogonalize
        self.sharded = sharded
        self.work_dtype = work_dtype

    def precondition(self, update: torch.Tensor) -> torch.Tensor:
        return update

    @packed_when("checkpointing", "on")
    def load_state_dict(self, state_dict: dict) -> None:
        """torch's load casts each state tensor to its parameter's dtype (fp32); the momentum goes back to work_dtype
        (bf16, as the record keeps it), exactly: a resumed rank's updates must match the other ranks' dtype in the
        all-gather, and the run its uninterrupted twin."""
        super().load_state_dict(state_dict)
        for state in self.state.values():
            if self.work_dtype is not None and "momentum" in state:
                state["momentum"] = state["momentum"].to(self.work_dtype)

    def update(self, p: torch.Tensor, group: dict) -> torch.Tensor:
        """The orthogonalised Nesterov step of p (its momentum buffer advances)."""
        grad = p.grad.to(self.work_dtype or p.grad.dtype)
        buf = self.state[p].setdefault("momentum", torch.zeros_like(grad))
        buf.mul_(group["momentum"]).add_(grad)
        update = grad.add(buf, alpha=group["momentum"])
        return self.orthogonalize(self.precondition(update), group["ns_steps"])

    @staticmethod
    def apply(p: torch.Tensor, update: torch.Tensor, group: dict) -> None:
        # Orthogonal updates have unit spectral norm; scale so tall matrices move as fast as square ones.
        scale = max(1.0, p.size(0) / p.size(1)) ** 0.5
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.add_(update, alpha=-group["lr"] * scale)

    @torch.no_grad()
    def step(self):
        world = dist.get_world_size() if self.sharded and dist.is_available() and dist.is_initialized() else 1
        for group in self.param_groups:
            if world == 1:
                for p in group["params"]:
                    if p.grad is not None:
                        self.apply(p, self.update(p, group), group)
                continue
            rank = dist.get_rank()
            by_shape: dict[tuple, list] = {}
            for p in group["params"]:
                by_shape.setdefault(tuple(p.shape), []).append(p)
            for same_shape in by_shape.values():
                for turn in range(0, len(same_shape), world):
                    chunk = same_shape[turn : turn + world]
                    mine = chunk[rank] if rank < len(chunk) else None
                    # grad is None on every rank alike (a parameter unused this step): send zeros, apply nothing.
                    own = self.update(mine, group) if mine is not None and mine.grad is not None \
                        else torch.zeros_like(chunk[0], dtype=self.work_dtype or chunk[0].dtype)
                    gathered = [torch.empty_like(own) for _ in range(world)]
                    dist.all_gather(gathered, own.contiguous())
                    for p, update in zip(chunk, gathered):
                        if p.grad is not None:
                            self.apply(p, update, group)


class MuonEqR(Muon):
    """MuonEq-R (2026 records, MUON_ROW_NORMALIZE=1): equalise the rows of the momentum update before
    orthogonalising, so a few large-gradient rows do not dominate the polar factor."""

    def precondition(self, update: torch.Tensor) -> torch.Tensor:
        return row_normalize(update)


class MuonEqRms(MuonEqR):
    """MuonEq-R with golf's earlier epsilon (row RMS + 1e-7, row_normalize_rms), kept for a GPU comparison."""

    def precondition(self, update: torch.Tensor) -> torch.Tensor:
        return row_normalize_rms(update)


MATRIX_OPTIMIZERS = {"muon": Muon, "muoneq_r": MuonEqR, "muoneq_r_rms": MuonEqRms}


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023): p -= lr * (sign(b1*m + (1-b1)*g) + wd*p); m = b2*m + (1-b2)*g.
    Every coordinate moves by exactly lr, so Lion wants lrs ~3-10x below AdamW's."""

    def __init__(self, params, betas: tuple[float, float] = (0.9, 0.99)):
        super().__init__(params, dict(lr=0.0, betas=betas, weight_decay=0.0))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(m * b1 + p.grad * (1 - b1)), alpha=-group["lr"])
                m.mul_(b2).add_(p.grad, alpha=1 - b2)


def build_adamw(groups: list[dict], cfg) -> torch.optim.Optimizer:
    # fused on every device, as the record (R:1935, 1950): a bf16 parameter's update is then computed in fp32
    # and its bf16 moments rounded once per step (torch's fused AdamW runs on CPU too).
    return torch.optim.AdamW(groups, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps, fused=True)


def build_lion(groups: list[dict], cfg) -> torch.optim.Optimizer:
    return Lion(groups)


EMBED_SCALAR_OPTIMIZERS = {"adamw": build_adamw, "lion": build_lion}


def build_optimizers(model: torch.nn.Module, rules: dict[str, ParamRule], cfg) -> list[torch.optim.Optimizer]:
    """One matrix optimiser over the muon rows of the policy table, one AdamW/Lion over the rest; a group per rule."""
    groups: dict[tuple, list] = {}
    for name, p in model.named_parameters():
        r = rules[name]
        groups.setdefault((r.optim, r.lr, r.weight_decay), []).append(p)
    muon = [dict(params=ps, lr=lr, weight_decay=wd) for (o, lr, wd), ps in groups.items() if o == "muon"]
    adam = [dict(params=ps, lr=lr, weight_decay=wd) for (o, lr, wd), ps in groups.items() if o == "adam"]
    opts = []
    if muon:
        matrix_opt = pick(MATRIX_OPTIMIZERS, cfg.matrix_optimizer, "MATRIX_OPTIMIZER")
        opts.append(matrix_opt(muon, lr=cfg.matrix_lr, momentum=cfg.muon_momentum, ns_steps=cfg.muon_steps,
                               weight_decay=cfg.muon_wd, sharded=cfg.muon_sharded,
                               orthogonalize=pick(ORTHOGONALIZERS, cfg.orthogonalizer, "ORTHOGONALIZER"),
                               work_dtype=torch.bfloat16 if cfg.muon_bf16 else None))
    if adam:
        build = pick(EMBED_SCALAR_OPTIMIZERS, cfg.embed_scalar_optimizer, "EMBED_SCALAR_OPTIMIZER")
        opts.append(build(adam, cfg))
    for opt in opts:
        for g in opt.param_groups:
            g["base_lr"] = g["lr"]
    return opts


class WeightEMA:
    """Exponential moving average of the parameters (fp32): ema = decay*ema + (1-decay)*p after every step.
    The run evaluates and exports the average instead of the raw weights (record: decay 0.9965)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.params = [p for p in model.parameters()]
        self.shadow = [p.detach().float().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        # decay * ema + (1 - decay) * p, in the record's op order (R:3512): a lerp rounds differently
        torch._foreach_mul_(self.shadow, self.decay)
        torch._foreach_add_(self.shadow, [p.detach().float() for p in self.params], alpha=1 - self.decay)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        for p, s in zip(self.params, self.shadow):
            p.copy_(s)


def lr_multiplier(step: int, elapsed_s: float, budget_s: float, warmup_steps: int, warmdown_frac: float,
                  min_lr: float = 0.0) -> float:
    """Linear warm-up over steps, flat, then linear decay over the last warmdown_frac of the time budget,
    floored at min_lr (the record: max((1 - frac) / warmdown_frac, MIN_LR), R:3356-3361)."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    left = max(0.0, budget_s - elapsed_s)
    down = max(min_lr, min(1.0, left / (warmdown_frac * budget_s))) if warmdown_frac > 0 else 1.0
    return warm * down


def muon_momentum_at(step: int, cfg) -> float:
    """Muon momentum at `step`: linear from muon_momentum_warmup_start to muon_momentum over
    muon_momentum_warmup_steps, then flat (the record: 0.92 -> 0.97 over 1500 steps, R:3375-3393)."""
    if cfg.muon_momentum_warmup_steps <= 0:
        return cfg.muon_momentum
    frac = min(step / cfg.muon_momentum_warmup_steps, 1.0)
    return (1 - frac) * cfg.muon_momentum_warmup_start + frac * cfg.muon_momentum


def set_muon_momentum(opts: list[torch.optim.Optimizer], momentum: float) -> None:
    for opt in opts:
        if isinstance(opt, Muon):
            for g in opt.param_groups:
                g["momentum"] = momentum


def muon_momenta(opts: list[torch.optim.Optimizer]) -> dict[torch.Tensor, torch.Tensor]:
    """{parameter: its Muon momentum buffer} of every Muon optimiser (a rank keeps only its shard's)."""
    return {p: st["momentum"] for opt in opts if isinstance(opt, Muon) for p, st in opt.state.items()}


def restore_muon_momenta(opts: list[torch.optim.Optimizer], momenta: dict[torch.Tensor, torch.Tensor]) -> None:
    """Put momentum buffers back after an optimiser state reset (load_state_dict dropped them)."""
    for opt in opts:
        if isinstance(opt, Muon):
            for p in [q for g in opt.param_groups for q in g["params"]]:
                if p in momenta:
                    opt.state[p]["momentum"] = momenta[p]


def set_lr(opts: list[torch.optim.Optimizer], multiplier: float) -> None:
    for opt in opts:
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * multiplier
