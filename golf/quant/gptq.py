"""GPTQ (Frantar et al. 2022, arXiv:2210.17323): quantise a linear layer's weight one column at a
time and push each column's rounding error onto the columns not yet quantised, weighted by the
inverse Hessian of the layer's output error, so that ||X W^T - X Q^T|| stays small.

The Hessian of a layer y = x W^T is H = X^T X over calibration inputs X (N, cols). Calibration
inputs must come from TRAINING tokens only (never val: the challenge forbids val in calibration),
and calibration time counts as training time. `collect_hessians` gathers H with forward pre-hooks.
"""
import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from golf.config import GolfError, packed
from golf.quant.awq import AwqGroups
from golf.quant.rtn import QuantTensor, as_rows, qmax_for_bits, row_scales


def gptq_quantize(w: torch.Tensor, hessian: torch.Tensor, bits: int, clip_k: float | None,
                  block: int = 128, damp: float = 0.01, act_order: bool = True,
                  rule: str | None = None, protect: tuple | None = None) -> QuantTensor:
    """w (rows, cols), hessian (cols, cols) = X^T X -> QuantTensor with the same row scales as RTN.

    Scales come from the clip rule on the ORIGINAL rows (see golf.quant.rtn), so GPTQ changes
    which grid point each element takes, never the grid. H is dampened by damp * mean(diag H);
    columns whose diag is 0 (inputs always zero: "dead") are quantised to 0 and carry no error.
    act_order processes columns by descending diag(H) (the most active first) and restores the
    original order at the end. Updates are applied in blocks of `block` columns (lazy batch update).
    protect (AWQ-lite, golf/quant/awq.py): (group starts, group size, bits) of column groups quantised in the
    same solve at `bits` on their own per-row step, clip / qmax(bits); their rounding error propagates like any
    column's (PR #2101 train_gpt.py lines 2300-2347).
    """
    rows = as_rows(w)
    cols = rows.shape[1]
    if w.dim() != 2 or hessian.shape != (cols, cols):
        raise GolfError(f"gptq: weight {tuple(w.shape)} and Hessian {tuple(hessian.shape)} must be "
                        f"(rows, cols) and (cols, cols)")
    scale = row_scales(rows, bits, clip_k, rule)
    qmax = qmax_for_bits(bits)
    h = hessian.detach().to(device=rows.device, dtype=torch.float32).clone()
    weights = rows.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    weights[:, dead] = 0.0
    # dampen before permuting, by the mean of a contiguous copy of the diagonal, as the record (R:2152-2154): the
    # mean of the permuted diagonal, or of the strided diagonal view, can round differently in the last bit
    h.diagonal().add_(damp * torch.diag(h).mean())
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(cols, device=h.device)
    weights, h = weights[:, perm], h[perm][:, perm]
    hinv = upper_cholesky_of_inverse(h)
    q = torch.zeros_like(weights, dtype=torch.int8)
    step = scale.float()
    awq, hi = None, None
    if packed("awq_top_k") and protect is not None:  # only AWQ_TOP_K's plan protects groups
        starts, size, hi_bits = protect
        awq = AwqGroups(tuple(starts), size, hi_bits, row_scales(rows, hi_bits, clip_k, rule))
        mask = torch.zeros(cols, dtype=torch.bool, device=h.device)
        mask[awq.columns().to(h.device)] = True
        hi = (awq.scale.float(), qmax_for_bits(hi_bits), mask[perm].tolist())
    for start in range(0, cols, block):
        end = min(start + block, cols)
        block_err = quantize_block(weights, q, hinv, step, qmax, start, end, hi)
        # Lazy batch update: the whole block's error reaches the later columns in one matmul.
        weights[:, end:] -= block_err @ hinv[start:end, end:]
    q = q[:, torch.argsort(perm)]
    return QuantTensor(q, scale, bits, tuple(w.shape), w.dtype, awq=awq)


def output_error(w: torch.Tensor, approx: torch.Tensor, hessian: torch.Tensor) -> float:
    """||X W^T - X A^T||_F from H = X^T X alone: sqrt(trace(D H D^T)), D = W - A."""
    diff = as_rows(w) - as_rows(approx)
    return math.sqrt(max(((diff @ hessian.float()) * diff).sum().item(), 0.0))


def upper_cholesky_of_inverse(h: torch.Tensor) -> torch.Tensor:
    """(cols, cols) positive definite H -> upper U with U^T U = H^-1 (GPTQ's error propagator)."""
    chol, info = torch.linalg.cholesky_ex(h)
    if info.item() != 0:
        raise GolfError("gptq: Hessian is not positive definite after dampening; raise damp or "
                        "calibrate on more tokens")
    return torch.linalg.cholesky(torch.cholesky_inverse(chol), upper=True)


def quantize_block(weights: torch.Tensor, q: torch.Tensor, hinv: torch.Tensor, step: torch.Tensor,
                   qmax: int, start: int, end: int, hi: tuple | None = None) -> torch.Tensor:
    """Quantise columns start..end-1 in place (q, and weights inside the block); return the block's
    scaled errors (rows, end - start), err_i = (w_i - q_i * step) / U_ii. hi: (step, qmax, column mask) of the
    AWQ-protected columns (in the solve's column order), which use that step and qmax instead."""
    errs = torch.zeros(weights.shape[0], end - start, device=weights.device)
    for i in range(start, end):
        col = weights[:, i]
        s, m = (hi[0], hi[1]) if packed("awq_top_k") and hi is not None and hi[2][i] else (step, qmax)
        qi = torch.clamp(torch.round(col / s), -m, m)
        q[:, i] = qi.to(torch.int8)
        err = (col - qi * s) / hinv[i, i]
        weights[:, i:end] -= err[:, None] * hinv[i, i:end][None, :]
        errs[:, i - start] = err
    return errs


class HessianCollector:
    """Forward pre-hooks that add X^T X (fp32, (cols, cols)) of each chosen Linear's input.

    Inputs (..., cols) are flattened to (N, cols). A module called several times in one forward (a
    looped or shared block) adds every call. Use as a context manager so the hooks always go.
    `hessians[name]` is the running sum, `rows_seen[name]` the number of input rows N behind it.
    """

    def __init__(self, modules: dict[str, nn.Module]):
        self.hessians: dict[str, torch.Tensor] = {}
        self.rows_seen: dict[str, int] = {}
        self.handles = [m.register_forward_pre_hook(self.hook_for(name)) for name, m in modules.items()]

    def hook_for(self, name: str):
        def add_input(module, args):
            self.add(name, args[0])
        return add_input

    def add(self, name: str, x: torch.Tensor):
        """Add the inputs x (..., cols) of weight `name` (also for inputs no module hook sees)."""
        x = x.detach().reshape(-1, x.shape[-1]).float()
        if name not in self.hessians:
            self.hessians[name] = torch.zeros(x.shape[1], x.shape[1], device=x.device)
            self.rows_seen[name] = 0
        self.hessians[name].addmm_(x.T, x)
        self.rows_seen[name] += x.shape[0]

    def remove(self):
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def collect_hessians(model: nn.Module, modules: dict[str, nn.Module], batches: Iterable,
                     forward: Callable, rows_seen: dict | None = None) -> dict[str, torch.Tensor]:
    """Run forward(model, batch) for each batch under no_grad; return {name: X^T X} per module.

    forward may return {name: inputs (..., cols)} for weights that no module hook sees, e.g. the tied
    embedding, whose head input is the final-norm output (logits = hidden @ tok_emb.weight^T).
    Batches must be TRAINING tokens (never val). A module that never ran has no entry (the caller's
    quantize_state then falls back to RTN for it). Hooks are removed even if a forward raises. With
    several ranks, all-reduce the sums afterwards: each rank sees only its own batches. rows_seen, when given,
    receives each sum's input row count (AWQ-lite's activation RMS, golf/quant/awq.py, needs it).
    """
    with torch.no_grad(), HessianCollector(modules) as collector:
        for batch in batches:
            extra = forward(model, batch)
            for name, x in (extra if isinstance(extra, dict) else {}).items():
                collector.add(name, x)
    if rows_seen is not None:
        rows_seen.update(collector.rows_seen)
    return collector.hessians
