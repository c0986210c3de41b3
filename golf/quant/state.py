"""Quantise a whole state dict by a plan, and turn the stored entries back into a state dict.

plan[name] = {"bits": int | None, "clip_k": float | None, "method": "rtn" | "gptq", and optionally
"clip_rule": "sdclip" | "capped" | "absmax", and for GPTQ "protect": AWQ-lite groups, golf/quant/awq.py} (see
golf.quant.rtn). bits None keeps the tensor raw
(floats as fp16). GPTQ is used where the method says so and a Hessian exists for that name.
An LqerPlan then adds low-rank corrections (golf/quant/lowrank.py) to the tensors with the largest error.
"""
import dataclasses
from dataclasses import dataclass

import torch

from golf.config import GolfError, pick
from golf.quant.gptq import gptq_quantize, output_error
from golf.quant.lowrank import factor_bytes, lqer_factors
from golf.quant.rtn import QuantTensor, as_rows, dequantize_rows, quantize_rtn


LQER_WEIGHTINGS = {"frobenius": False, "hessian": True}  # fit in the layer's output metric?


@dataclass(frozen=True)
class LqerPlan:
    """Which tensors get an LQER correction and how it is stored (factor defaults: the record's, PR #1855 log
    "lqer_rank: 4", "lqer_top_k: 3", "lqer_asym_group: 64", A int2 / B int4).

    select "weight_error" (the record's rule, R:2270-2274): the top_k matrices by weight error ||W - Q||_F.
    select "output_error": the top_k by output error ||X (W - Q)^T|| (from their Hessians). select "per_byte":
    every quantised matrix gets its factors fitted, and the plan keeps those that remove the most output error
    (measured on the Hessians; Frobenius without one) per factor byte, best first, while their bytes fit
    budget_bytes: K follows from bytes against error. top_k 0 turns LQER off in all three."""
    top_k: int = 3
    rank: int = 4
    a_bits: int = 2
    b_bits: int = 4
    group: int = 64
    weighting: str = "frobenius"  # frobenius (the record's plain SVD) | hessian (fit in the output metric)
    select: str = "weight_error"
    budget_bytes: int = 12_000  # per_byte: factor bytes at their nominal widths (golf/quant/lowrank.py factor_bytes)


def rtn_from_spec(w: torch.Tensor, hessian: torch.Tensor | None, spec: dict) -> QuantTensor:
    return quantize_rtn(w, spec["bits"], spec.get("clip_k"), spec.get("clip_rule"))


def gptq_from_spec(w: torch.Tensor, hessian: torch.Tensor | None, spec: dict) -> QuantTensor:
    if hessian is None:
        return rtn_from_spec(w, None, spec)
    return gptq_quantize(w, hessian, spec["bits"], spec.get("clip_k"), rule=spec.get("clip_rule"),
                         protect=spec.get("protect"))


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
    """entries with LQER factors on the matrices lqer selects (a new dict; entries unchanged)."""
    out = dict(entries)
    select = pick(LQER_SELECTIONS, lqer.select, "LQER_SELECT")
    if lqer.top_k <= 0:
        return out
    use_h = pick(LQER_WEIGHTINGS, lqer.weighting, "LQER_WEIGHTING")

    def factors(name):
        h = hessians.get(name) if use_h else None
        return lqer_factors(state[name], entries[name], lqer.rank, lqer.a_bits, lqer.b_bits, lqer.group, h)

    chosen = select(state, entries, hessians, factors, lqer)
    for name, f in chosen.items():
        out[name] = dataclasses.replace(entries[name], lqer=f)
    return out


def lqer_candidates(entries: dict, hessians: dict) -> list[str]:
    """The quantised matrices LQER may correct, compared in one metric: those with a Hessian (output error)
    where any has one, else all of them (Frobenius error, as the record ranks them under RTN)."""
    names = [n for n, e in entries.items() if isinstance(e, QuantTensor) and min(as_rows(e.q).shape) > 1]
    with_h = [n for n in names if n in hessians]
    return with_h or names


def matrix_error(state: dict, name: str, approx: torch.Tensor, hessians: dict) -> float:
    """Output error ||X (W - approx)^T|| from the tensor's Hessian; ||W - approx||_F where it has none."""
    if name in hessians:
        return output_error(state[name], approx, hessians[name])
    return torch.linalg.norm(as_rows(state[name]) - as_rows(approx)).item()


def lqer_by_bytes(state: dict, entries: dict, hessians: dict, factors) -> list[dict]:
    """Every candidate matrix with its fitted factors: {name, factors, bytes (nominal), gain (output error
    removed)}, best gain per byte first (ties by name, so the order is deterministic)."""
    rows = []
    for name in lqer_candidates(entries, hessians):
        f = factors(name)
        base = dequantize_rows(entries[name])
        gain = matrix_error(state, name, base, hessians) - matrix_error(
            state, name, base + f.product().reshape(base.shape), hessians)
        rows.append({"name": name, "factors": f, "bytes": factor_bytes(f), "gain": gain})
    return sorted(rows, key=lambda r: (-r["gain"] / r["bytes"], r["name"]))


def select_within(rows: list[dict], budget_bytes: float) -> dict:
    """{name: factors} of the rows taken best first while their bytes fit the budget; a correction that
    does not lower the error is never taken."""
    chosen, spent = {}, 0.0
    for r in rows:
        if r["gain"] > 0 and spent + r["bytes"] <= budget_bytes:
            chosen[r["name"]] = r["factors"]
            spent += r["bytes"]
    return chosen


def lqer_targets(state: dict, entries: dict, hessians: dict, top_k: int, by_output: bool) -> list[str]:
    """The top_k candidate matrices by weight error ||E||_F, E = W - Q (the record ranks its GPTQ'd tensors so,
    R:2270-2274; ties keep state order as its stable sort), or by output error ||X E^T|| from their Hessians
    (by_output; Frobenius where no tensor has a Hessian)."""
    metric = hessians if by_output else {}
    errors = {n: matrix_error(state, n, dequantize_rows(entries[n]), metric)
              for n in lqer_candidates(entries, hessians)}
    return sorted(errors, key=lambda n: -errors[n])[:top_k]


def select_weight_error(state: dict, entries: dict, hessians: dict, factors, lqer: LqerPlan) -> dict:
    return {n: factors(n) for n in lqer_targets(state, entries, hessians, lqer.top_k, by_output=False)}


def select_output_error(state: dict, entries: dict, hessians: dict, factors, lqer: LqerPlan) -> dict:
    return {n: factors(n) for n in lqer_targets(state, entries, hessians, lqer.top_k, by_output=True)}


def select_per_byte(state: dict, entries: dict, hessians: dict, factors, lqer: LqerPlan) -> dict:
    return select_within(lqer_by_bytes(state, entries, hessians, factors), lqer.budget_bytes)


# LqerPlan.select -> (state, entries, hessians, factors(name), plan) -> {name: factors} (rules in LqerPlan's docstring)
LQER_SELECTIONS = {"weight_error": select_weight_error, "output_error": select_output_error,
                   "per_byte": select_per_byte}


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
