"""Optimisers and schedules: Muon for matrices, Adam for embeddings and scalars, time-based warmdown."""

import torch

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


class Muon(torch.optim.Optimizer):
    """Nesterov momentum, then orthogonalise the update; shape-aware scale and decoupled weight decay."""

    def __init__(self, params, lr: float, momentum: float, ns_steps: int, weight_decay: float):
        super().__init__(params, dict(lr=lr, momentum=momentum, ns_steps=ns_steps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad)
                update = p.grad.add(buf, alpha=group["momentum"])
                update = newton_schulz(update, group["ns_steps"])
                # Orthogonal updates have unit spectral norm; scale so tall matrices move as fast as square ones.
                scale = max(1.0, p.size(0) / p.size(1)) ** 0.5
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-group["lr"] * scale)


def build_optimizers(model: torch.nn.Module, rules: dict[str, ParamRule], cfg) -> list[torch.optim.Optimizer]:
    """One Muon over the matrix rows of the policy table, one Adam over the rest; a group per rule."""
    groups: dict[tuple, list] = {}
    for name, p in model.named_parameters():
        r = rules[name]
        groups.setdefault((r.optim, r.lr, r.weight_decay), []).append(p)
    muon = [dict(params=ps, lr=lr, weight_decay=wd) for (o, lr, wd), ps in groups.items() if o == "muon"]
    adam = [dict(params=ps, lr=lr, weight_decay=wd) for (o, lr, wd), ps in groups.items() if o == "adam"]
    opts = []
    if muon:
        opts.append(Muon(muon, lr=cfg.matrix_lr, momentum=cfg.muon_momentum, ns_steps=cfg.muon_steps,
                         weight_decay=cfg.muon_wd))
    if adam:
        fused = next(model.parameters()).is_cuda
        opts.append(torch.optim.AdamW(adam, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=1e-8, fused=fused))
    for opt in opts:
        for g in opt.param_groups:
            g["base_lr"] = g["lr"]
    return opts


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
