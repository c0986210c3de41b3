"""Quantise a whole state dict by a plan, and turn the stored entries back into a state dict.

plan[name] = {"bits": int | None, "clip_k": float | None, "method": "rtn" | "gptq", and optionally
"clip_rule": "sdclip" | "capped" | "absmax"} (see golf.quant.rtn). bits None keeps the tensor raw
(floats as fp16). GPTQ is used where the method says so and a Hessian exists for that name.
"""
import torch

from golf.config import GolfError, pick
from golf.quant.gptq import gptq_quantize
from golf.quant.rtn import QuantTensor, dequantize_rows, quantize_rtn


def rtn_from_spec(w: torch.Tensor, hessian: torch.Tensor | None, spec: dict) -> QuantTensor:
    return quantize_rtn(w, spec["bits"], spec.get("clip_k"), spec.get("clip_rule"))


def gptq_from_spec(w: torch.Tensor, hessian: torch.Tensor | None, spec: dict) -> QuantTensor:
    if hessian is None:
        return rtn_from_spec(w, None, spec)
    return gptq_quantize(w, hessian, spec["bits"], spec.get("clip_k"), rule=spec.get("clip_rule"))


QUANTIZERS = {"rtn": rtn_from_spec, "gptq": gptq_from_spec}


def quantize_state(state: dict[str, torch.Tensor], plan: dict[str, dict],
                   hessians: dict[str, torch.Tensor] | None = None) -> dict:
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
    return out


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
