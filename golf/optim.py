"""Optimisers and schedules: Muon / MuonEq-R for matrices, AdamW or Lion for embeddings and scalars, weight EMA,
time-based warmdown."""

import torch

from golf.config import pick
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


# Polar Express degree-5 coefficients, one triple per iteration (Amsel et al. 2025, arXiv 2505.16932, Algorithm 1);
# iterations past the list repeat the last triple.
POLAR_EXPRESS_COEFFS = (
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
)


def polar_express(g: torch.Tensor, steps: int, eps: float = 1e-7) -> torch.Tensor:
    """Like newton_schulz, with the per-iteration optimal polynomials. As in the paper, every triple but the last
    is damped by a 1.01 safety factor and the input is scaled by 1/(1.01 |g|_F), for bf16 round-off."""
    x = g.to(torch.bfloat16 if g.is_cuda else torch.float32)
    transposed = x.size(0) > x.size(1)
    if transposed:
        x = x.T
    x = x / (x.norm() * 1.01 + eps)
    last = len(POLAR_EXPRESS_COEFFS) - 1
    for i in range(steps):
        a, b, c = POLAR_EXPRESS_COEFFS[min(i, last)]
        if i < last:
            a, b, c = a / 1.01, b / 1.01**3, c / 1.01**5
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if transposed else x).to(g.dtype)


ORTHOGONALIZERS = {"newton_schulz": newton_schulz, "polar_express": polar_express}


def row_normalize(update: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Scale each row of (rows, cols) to unit RMS."""
    return update / (update.float().square().mean(dim=1, keepdim=True).sqrt() + eps).to(update.dtype)


class Muon(torch.optim.Optimizer):
    """Nesterov momentum, then orthogonalise the update; shape-aware scale and decoupled weight decay."""

    def __init__(self, params, lr: float, momentum: float, ns_steps: int, weight_decay: float,
                 orthogonalize=newton_schulz):
        super().__init__(params, dict(lr=lr, momentum=momentum, ns_steps=ns_steps, weight_decay=weight_decay))
        self.orthogonalize = orthogonalize

    def precondition(self, update: torch.Tensor) -> torch.Tensor:
        return update

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad)
                update = p.grad.add(buf, alpha=group["momentum"])
                update = self.orthogonalize(self.precondition(update), group["ns_steps"])
                # Orthogonal updates have unit spectral norm; scale so tall matrices move as fast as square ones.
                scale = max(1.0, p.size(0) / p.size(1)) ** 0.5
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-group["lr"] * scale)


class MuonEqR(Muon):
    """MuonEq-R (2026 records, MUON_ROW_NORMALIZE=1): equalise the rows of the momentum update (unit RMS each)
    before orthogonalising, so a few large-gradient rows do not dominate the polar factor."""

    def precondition(self, update: torch.Tensor) -> torch.Tensor:
        return row_normalize(update)


MATRIX_OPTIMIZERS = {"muon": Muon, "muoneq_r": MuonEqR}


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


def build_adamw(groups: list[dict], cfg, fused: bool) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=1e-8, fused=fused)


def build_lion(groups: list[dict], cfg, fused: bool) -> torch.optim.Optimizer:
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
                               weight_decay=cfg.muon_wd,
                               orthogonalize=pick(ORTHOGONALIZERS, cfg.orthogonalizer, "ORTHOGONALIZER")))
    if adam:
        build = pick(EMBED_SCALAR_OPTIMIZERS, cfg.embed_scalar_optimizer, "EMBED_SCALAR_OPTIMIZER")
        opts.append(build(adam, cfg, next(model.parameters()).is_cuda))
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
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params], 1 - self.decay)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        for p, s in zip(self.params, self.shadow):
            p.copy_(s)


def lr_multiplier(step: int, elapsed_s: float, budget_s: float, warmup_steps: int, warmdown_frac: float) -> float:
    """Linear warm-up over steps, flat, then linear decay to 0 over the last warmdown_frac of the time budget."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    left = max(0.0, budget_s - elapsed_s)
    down = min(1.0, left / (warmdown_frac * budget_s)) if warmdown_frac > 0 else 1.0
    return warm * down


def set_lr(opts: list[torch.optim.Optimizer], multiplier: float) -> None:
    for opt in opts:
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * multiplier
