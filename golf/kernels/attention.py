"""Attention backend slot: name -> fn(q, k, v, doc_ids=None) -> (B, H, T, D), causal, GQA.

q is (B, H, T, D), k and v are (B, Hkv, T, D); doc_ids (B, T), when given, restricts each query to keys of
its own document (doc-isolated attention: FA3 varlen, the Triton kernel's document ids, or an SDPA mask). `select_attention` picks the fastest backend this
machine has: FlashAttention-3 on Hopper when its wheel is installed, else the Triton kernel on
CUDA, else PyTorch SDPA. A missing optional backend is never an error; the caller logs the name.
"""

import importlib.util

import torch

from golf.config import GolfError
from golf.kernels.attention_triton import attention_torch, flash_attention
from golf.kernels.triton_support import TRITON_AVAILABLE

ATTENTION_AUTO_ORDER = ("fa3", "triton", "sdpa")  # fastest first


def varlen_boundaries(doc_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) document ids -> cu_seqlens int32 (segments + 1,) over the flattened B*T tokens: a segment
    is a run of one document within one row (rows are separate sequences)."""
    B, T = doc_ids.shape
    flat = (doc_ids.to(torch.int64) + torch.arange(B, device=doc_ids.device)[:, None] * (T + 1)).reshape(-1)
    starts = torch.nonzero(flat[1:] != flat[:-1]).reshape(-1) + 1
    ends = torch.tensor([0, B * T], device=doc_ids.device)
    return torch.cat((ends[:1], starts, ends[1:])).to(torch.int32)


def attention_fa3(q, k, v, doc_ids=None):
    """FlashAttention-3 (Hopper only). It takes (B, T, H, D) and handles GQA itself; with doc_ids, the varlen
    kernel over document segments (the record's training path, R:1029-1040), max_seqlen T."""
    from flash_attn_interface import flash_attn_func, flash_attn_varlen_func  # optional wheel (checked)

    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if doc_ids is None:
        out = flash_attn_func(q, k, v, causal=True)
    else:
        B, T = doc_ids.shape
        cu = varlen_boundaries(doc_ids)
        out = flash_attn_varlen_func(q.reshape(B * T, *q.shape[2:]), k.reshape(B * T, *k.shape[2:]),
                                     v.reshape(B * T, *v.shape[2:]), cu_seqlens_q=cu, cu_seqlens_k=cu,
                                     max_seqlen_q=T, max_seqlen_k=T, causal=True)
    if isinstance(out, tuple):  # some FA3 builds return (out, softmax_lse)
        out = out[0]
    return out.reshape(q.shape).transpose(1, 2)


ATTENTION_BACKENDS = {"fa3": attention_fa3, "triton": flash_attention, "sdpa": attention_torch}


def attention_backend_available(name: str, device_type: str) -> bool:
    if name == "sdpa":
        return True
    if device_type != "cuda" or not torch.cuda.is_available():
        return False
    if name == "triton":
        return TRITON_AVAILABLE
    # FA3 kernels are built for sm90 (H100/H200) only.
    return torch.cuda.get_device_capability()[0] == 9 and importlib.util.find_spec("flash_attn_interface") is not None


def select_attention(device_type: str, prefer: str = "auto"):
    """-> (name, fn): `prefer` if available on this machine, else the fastest available backend.

    prefer is "auto" or a key of ATTENTION_BACKENDS; an unknown name is a GolfError.
    """
    if prefer != "auto" and prefer not in ATTENTION_BACKENDS:
        raise GolfError(f"unknown attention backend {prefer!r}: use auto or one of {', '.join(ATTENTION_BACKENDS)}")
    order = ATTENTION_AUTO_ORDER if prefer == "auto" else (prefer,) + ATTENTION_AUTO_ORDER
    for name in order:
        if attention_backend_available(name, device_type):
            return name, ATTENTION_BACKENDS[name]
    raise AssertionError("sdpa is always available")
