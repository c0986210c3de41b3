"""LQER (Zhang et al. 2024, arXiv:2402.02446), asymmetric as in the merged record (PR #1855, from PR #1797):
a rank-r correction of the quantisation error E = W - dequant(Q(W)) of the few tensors where it is largest.

E ~= A B with A = U_r S_r (rows, r) and B = V_r^T (r, cols) from the SVD of E. A is stored at int-a_bits
with ONE fp16 scale for the whole matrix (record: int2, levels -2..1, scale max|A| / 1.5); B at int-b_bits
in groups of `group` consecutive elements of B flattened, one fp16 scale per group (record: int4, levels
-8..7, scale max|group| / 7.5, group 64). The loader adds A B to the dequantised weight.

`weighting="hessian"` fits the correction in the layer's output metric instead: with H = X^T X = L L^T,
||X (E - A B)^T||_F = ||(E - A B) L||_F, so A B = SVD_r(E L) L^-1 is the best rank-r output correction.
"""
from dataclasses import dataclass

import torch

from golf.config import GolfError
from golf.quant.rtn import FP16_SCALE_MIN, QuantTensor, as_rows, dequantize_rows


@dataclass(frozen=True, eq=False)
class LqerFactors:
    qa: torch.Tensor  # (rows, r) int8 in [-2^(a_bits-1), 2^(a_bits-1) - 1]
    a_scale: torch.Tensor  # (1,) fp16: one step for all of A
    qb: torch.Tensor  # (r, cols) int8 in [-2^(b_bits-1), 2^(b_bits-1) - 1]
    b_scale: torch.Tensor  # (r * cols / group,) fp16: one step per group of B flattened
    a_bits: int
    b_bits: int
    group: int

    def product(self) -> torch.Tensor:
        """(rows, cols) fp32 correction A B."""
        a = self.qa.float() * self.a_scale.float()
        b = (self.qb.float().reshape(-1, self.group) * self.b_scale.float()[:, None]).reshape(self.qb.shape)
        return a @ b


def asymmetric_levels(bits: int) -> tuple[int, int, float]:
    """(lowest, highest level, max / step): two's-complement int-b, the step putting +-max half a level
    inside the end levels (int2: -2..1, max / 1.5; int4: -8..7, max / 7.5)."""
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        raise GolfError(f"lqer factor bits={bits!r}: expected an integer 2..8")
    return -2 ** (bits - 1), 2 ** (bits - 1) - 1, 2 ** (bits - 1) - 0.5


def quantize_factor(x: torch.Tensor, bits: int, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (r, c) fp32 -> (int8 symbols of x's shape, fp16 steps, one per `group` elements of x flattened)."""
    low, high, half_range = asymmetric_levels(bits)
    grouped = x.reshape(-1, group)
    step = (grouped.abs().amax(dim=1) / half_range).clamp_min(FP16_SCALE_MIN).to(torch.float16)
    q = torch.clamp(torch.round(grouped / step.float()[:, None]), low, high).to(torch.int8)
    return q.reshape(x.shape), step


def lqer_factors(w: torch.Tensor, qt: QuantTensor, rank: int, a_bits: int = 2, b_bits: int = 4, group: int = 64,
                 hessian: torch.Tensor | None = None) -> LqerFactors:
    """Rank-`rank` quantised factors of w's quantisation error; Hessian-weighted when a Hessian is given.
    A group that does not divide B's size falls back to one group per row of B."""
    err = as_rows(w) - as_rows(dequantize_rows(qt))
    rows, cols = err.shape
    r = min(rank, rows, cols)
    if r < 1:
        raise GolfError(f"lqer rank={rank!r}: needs at least 1")
    if hessian is None:
        u, s, vh = torch.linalg.svd(err, full_matrices=False)
        a, b = u[:, :r] * s[:r], vh[:r]
    else:
        chol = hessian_cholesky(hessian.float())
        u, s, vh = torch.linalg.svd(err @ chol, full_matrices=False)
        a = u[:, :r] * s[:r]
        b = torch.linalg.solve_triangular(chol, vh[:r], upper=False, left=False)  # vh L^-1
    group = group if (r * cols) % group == 0 else cols
    qa, a_scale = quantize_factor(a, a_bits, a.numel())
    qb, b_scale = quantize_factor(b, b_bits, group)
    return LqerFactors(qa, a_scale, qb, b_scale, a_bits, b_bits, group)


def hessian_cholesky(h: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """Lower L with L L^T = H + damp * mean(diag H) I (the dampening GPTQ uses, so L is invertible)."""
    cols = h.shape[0]
    eye = torch.eye(cols, dtype=h.dtype)
    chol, info = torch.linalg.cholesky_ex(h + damp * torch.diag(h).mean().clamp_min(1e-12) * eye)
    if info.item() != 0:
        raise GolfError("lqer: Hessian is not positive definite after dampening")
    return chol


def factor_bytes(f: LqerFactors) -> float:
    """Raw bytes of the factors at their nominal widths (symbols bit-packed, fp16 scales)."""
    return (f.qa.numel() * f.a_bits + f.qb.numel() * f.b_bits) / 8 + 2 * (f.a_scale.numel() + f.b_scale.numel())
