"""Per-row symmetric round-to-nearest (RTN) quantisation to int-b, b = 2..8 (4..8 in practice).

A tensor w is viewed as rows (shape[0], prod(shape[1:])) and becomes q (rows, cols) int8 with
|q| <= qmax = 2^(b-1) - 1 plus one fp16 scale per row: w ~= q * scale[:, None]. The scale is
clip / qmax, where the clip rule decides the clip of each row:

- "sdclip" (the records' rule): clip = k * std(row). k ~ 11.5 for MLP matrices, ~13 for attention,
  ~14 for int7 embeddings. A k that large clips almost nothing of a trained row, but pins the grid
  step to the row's std instead of its largest outlier: the symbols then concentrate on a few
  levels and the entropy coder, not the bit width, sets the size.
- "capped" (our reading of the seed file's rule, k ~ 2.5; the seed file was not at hand when this
  was written, check against it): clip = min(max|row|, k * std(row)). The grid spans the clip, so
  with a small k up to a few % of a Gaussian row saturate at +-qmax in exchange for a finer step.
- "absmax": clip = max|row| (k unused): nothing is clipped, the step follows the outlier.

std(row) is torch's default (Bessel-corrected) std over the row. Scales are rounded to fp16
before quantising, so q and the stored scale agree exactly: inside the clip range every element
is off by at most scale/2. A scale is kept within fp16's normal range [2^-14, 65504]; an all-zero
row gets the smallest scale and q = 0.
"""
from dataclasses import dataclass

import torch

from golf.config import GolfError, packed

# fp16 normal range: below 2^-14 fp16 is subnormal and loses precision, above 65504 it is inf.
FP16_SCALE_MIN = 2.0 ** -14
FP16_SCALE_MAX = 65504.0


@dataclass(frozen=True, eq=False)
class QuantTensor:
    q: torch.Tensor  # (rows, cols) int8, |q| <= 2^(bits-1) - 1
    scale: torch.Tensor  # (rows,) fp16, one step size per row
    bits: int
    shape: tuple  # the original tensor's shape; rows = shape[0] (1 for 0-d/1-d), cols = the rest
    dtype: torch.dtype = torch.float32  # the original tensor's dtype
    lqer: object = None  # golf.quant.lowrank.LqerFactors: a low-rank correction added on dequantising
    awq: object = None  # golf.quant.awq.AwqGroups: column groups with more bits and their own step (AWQ-lite)


def qmax_for_bits(bits: int) -> int:
    """Largest symbol magnitude of symmetric int-b: 2^(b-1) - 1 (31 for int6)."""
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        raise GolfError(f"quant bits={bits!r}: expected an integer 2..8 (symbols are stored as int8)")
    return 2 ** (bits - 1) - 1


def as_rows(w: torch.Tensor) -> torch.Tensor:
    """View any tensor as fp32 rows (shape[0], prod(shape[1:])); 0-d and 1-d become one row."""
    if w.dim() <= 1:
        return w.detach().float().reshape(1, -1)
    return w.detach().float().reshape(w.shape[0], -1)


def sdclip_clip(rows: torch.Tensor, clip_k: float) -> torch.Tensor:
    """(rows, cols) -> (rows,): clip each row at clip_k standard deviations."""
    return clip_k * row_std(rows)


def capped_clip(rows: torch.Tensor, clip_k: float) -> torch.Tensor:
    """(rows, cols) -> (rows,): clip_k std, but never beyond the row's largest magnitude."""
    return torch.minimum(rows.abs().amax(dim=1), clip_k * row_std(rows))


def absmax_clip(rows: torch.Tensor, clip_k: float | None) -> torch.Tensor:
    """(rows, cols) -> (rows,): the row's largest magnitude; clip_k is ignored."""
    return rows.abs().amax(dim=1)


def row_std(rows: torch.Tensor) -> torch.Tensor:
    """(rows, cols) -> (rows,); a single-column row has std 0 rather than NaN."""
    if rows.shape[1] < 2:
        return torch.zeros(rows.shape[0], dtype=rows.dtype, device=rows.device)
    return rows.std(dim=1)


CLIP_RULES = {"sdclip": sdclip_clip, "capped": capped_clip, "absmax": absmax_clip}


def pick_clip_rule(clip_k: float | None, rule: str | None) -> str:
    """rule None means "sdclip" when a k is given, else "absmax"; a k-rule without k is an error."""
    rule = rule or ("absmax" if clip_k is None else "sdclip")
    if rule not in CLIP_RULES:
        raise GolfError(f"clip rule {rule!r}: unknown (choices: {', '.join(CLIP_RULES)})")
    if rule != "absmax" and (clip_k is None or not clip_k > 0):
        raise GolfError(f"clip rule {rule!r}: needs clip_k > 0, got {clip_k!r}")
    return rule


def row_scales(rows: torch.Tensor, bits: int, clip_k: float | None, rule: str | None = None) -> torch.Tensor:
    """(rows, cols) fp32 -> (rows,) fp16 step sizes: clip / qmax, clamped to fp16's normal range."""
    clip = CLIP_RULES[pick_clip_rule(clip_k, rule)](rows, clip_k)
    return (clip / qmax_for_bits(bits)).clamp(FP16_SCALE_MIN, FP16_SCALE_MAX).to(torch.float16)


def round_to_grid(rows: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """(rows, cols) fp32, (rows,) fp16 -> (rows, cols) int8 symbols, saturating at +-qmax."""
    qmax = qmax_for_bits(bits)
    return torch.clamp(torch.round(rows / scale.float()[:, None]), -qmax, qmax).to(torch.int8)


def quantize_rtn(w: torch.Tensor, bits: int, clip_k: float | None = None, rule: str | None = None) -> QuantTensor:
    """Round every element of w to its row's grid; see the module docstring for the clip rules."""
    rows = as_rows(w)
    scale = row_scales(rows, bits, clip_k, rule)
    return QuantTensor(round_to_grid(rows, scale, bits), scale, bits, tuple(w.shape), w.dtype)


def dequantize_rows(qt: QuantTensor) -> torch.Tensor:
    """QuantTensor -> fp32 tensor of the original shape: q * scale per row (AWQ-lite groups: q * their own step)
    (+ its LQER correction A B)."""
    rows = qt.q.float() * qt.scale.float()[:, None]
    if packed("awq_top_k") and qt.awq is not None:
        rows = qt.awq.dequantize(qt.q, rows)
    if qt.lqer is not None:
        rows = rows + qt.lqer.product()
    return rows.reshape(qt.shape)
