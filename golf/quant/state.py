"""Quantise a whole state dict by a plan, and turn the stored entries back into a state dict.

plan[name] = {"bits": int | None, "clip_k": float | None, "method": "rtn" | "gptq", and optionally
"clip_rule": "sdclip" | "capped" | "absmax"} (see golf.quant.rtn). bits None keeps the tensor raw
(floats as fp16). GPTQ is used where the method says so and a Hessian exists for that name.
An LqerPlan then adds low-rank corrections (golf/quant/lowrank.py) to the tensors with the largest error.
"""
import dataclasses
from dataclasses import dataclass

import torch

from golf.config import GolfError, pick
from golf.quant.gptq import gptq_quantize, output_error
from golf.quant.lowrank import lqer_factors
from golf.quant.rtn import QuantTensor, as_rows, dequantize_rows, quantize_rtn


LQER_WEIGHTINGS = {"frobenius": False, "hessian": True}  # fit in the layer's output metric?


@dataclass(frozen=True)
class LqerPlan:
    """Which tensors get an LQER correction and how it is stored (defaults: the record's, PR #1855 log
    "lqer_rank: 4", "lqer_top_k: 3", "lqer_asym_group: 64", A int2 / B int4)."""
    top_k: int = 3  # 0: no LQER
    rank: int = 4
    a_bits: int = 2
    b_bits: int = 4
    group: int = 64
    weighting: str = "frobenius"  # frobenius (the record's plain SVD) | hessian (fit in the output metric)


def rtn_from_spec(w: torch.Tensor, hessian: torch.Tensor | None, spec: dict) -> QuantTensor:
    return quantize_rtn(w, spec["bits"], spec.get("clip_k"), spec.get("clip_rule"))


def gptq_from_spec(w: torch.Tensor, hessian: torch.Tensor | None, spec: dict) -> QuantTensor:
    if hessian is None:
        return rtn_from_spec(w, None, spec)
    return gptq_quantize(w, hessian, spec["bits"], spec.get("clip_k"), rule=spec.get("clip_rule"))


QUANTIZERS = {"rtn": rtn_from_spec, "gptq": gptq_from_spec}


def quantize_state(state: dict[str, torch.Tensor], plan: dict[str, dict],
                   hessians: dict[str, torch.Tensor] | None = None, lqer: LqerPlan | None = None) -> dict:
    """{name: tensor} -> {name: QuantTensor | Tensor}; every name needs a plan entry."""
    missing = [n for n in state if n not in plan]
    if missing:
        raise GolfError(f"quant plan: no entry for {', '.join(missing)}")
    hessians = hessians or {}
    out = {}
    for name, w in state.items():
        spec = plan[name]
        if spec.get("bits") is None:
            out[name] = w.detach().to(torch.float16) if w.is_floating_point() else w.detach()
        else:
            quantizer = pick(QUANTIZERS, spec.get("method", "rtn"), f"quant plan {name}: method")
            out[name] = quantizer(w, hessians.get(name), spec)
    return add_lqer(state, out, hessians, lqer) if lqer is not None else out


def add_lqer(state: dict, entries: dict, hessians: dict, lqer: LqerPlan) -> dict:
    """entries with LQER factors on lqer.top_k of their quantised matrices (a new dict; entries unchanged)."""
    out = dict(entries)
    for name in lqer_targets(state, entries, hessians, lqer.top_k) if lqer.top_k > 0 else []:
        h = hessians.get(name) if pick(LQER_WEIGHTINGS, lqer.weighting, "LQER_WEIGHTING") else None
        factors = lqer_factors(state[name], entries[name], lqer.rank, lqer.a_bits, lqer.b_bits, lqer.group, h)
        out[name] = dataclasses.replace(entries[name], lqer=factors)
    return out


def lqer_targets(state: dict, entries: dict, hessians: dict, top_k: int) -> list[str]:
    """The top_k quantised matrices by output error ||X E^T|| (from their Hessians); where no tensor
    has a Hessian (RTN), by ||E||_F as the record ranks them."""
    names = [n for n, e in entries.items() if isinstance(e, QuantTensor) and min(as_rows(e.q).shape) > 1]
    with_h = [n for n in names if n in hessians]
    if with_h:
        errors = {n: output_error(state[n], dequantize_rows(entries[n]), hessians[n]) for n in with_h}
    else:
        errors = {n: torch.linalg.norm(as_rows(state[n]) - as_rows(dequantize_rows(entries[n]))).item()
                  for n in names}
    return sorted(errors, key=lambda n: -errors[n])[:top_k]


def dequantize_state(entries: dict, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stored entries -> tensors with the dtype (and shape) of `like`, ready for load_state_dict."""
    missing = [n for n in like if n not in entries]
    if missing:
        raise GolfError(f"artifact: no tensor for {', '.join(missing)}")
    out = {}
    for name, ref in like.items():
        e = entries[name]
        t = dequantize_rows(e) if isinstance(e, QuantTensor) else e
        if tuple(t.shape) != tuple(ref.shape):
            raise GolfError(f"artifact: {name} has shape {tuple(t.shape)}, the model wants {tuple(ref.shape)}")
        out[name] = t.to(ref.dtype)
    return out
