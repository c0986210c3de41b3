"""Optional low-rank error correction: store rank-r fp16 factors of the quantisation error
E = W - dequant(Q(W)), so the loader rebuilds W ~= dequant(Q(W)) + U V. By Eckart-Young the top-r
SVD terms are the best rank-r fit of E in Frobenius norm; cost 2 bytes x r x (rows + cols).
"""
import torch

from golf.quant.rtn import QuantTensor, as_rows, dequantize_rows


def lowrank_factors(w: torch.Tensor, qt: QuantTensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """w (rows, cols) and its quantisation -> (U (rows, r) fp16, V (r, cols) fp16), U V ~= error."""
    err = as_rows(w) - as_rows(dequantize_rows(qt))
    u, s, vh = torch.linalg.svd(err, full_matrices=False)
    r = min(rank, s.numel())
    # Split the singular values evenly between the factors so both stay in a similar fp16 range.
    root = s[:r].sqrt()
    return (u[:, :r] * root).to(torch.float16), (root[:, None] * vh[:r]).to(torch.float16)


def apply_lowrank(qt: QuantTensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """fp32 reconstruction dequant(Q) + U V in the original shape."""
    deq = as_rows(dequantize_rows(qt))
    return (deq + u.float() @ v.float()).reshape(qt.shape)
