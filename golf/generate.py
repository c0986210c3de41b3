"""Sample text from a trained model: temperature, top-k and nucleus (top-p) over the softcapped logits.

Not part of the packed training file; used by tools/sample.py. No KV cache: each new token
recomputes the model over the last `window` tokens, which is plenty fast for a few hundred tokens.
"""

import torch

from golf.kernels.softcap_ce import softcap_logits
from golf.train import autocast_dtype


def sample_next(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
                generator: torch.Generator | None) -> int:
    """One token id from logits (V,) of the distribution the loss scores (softcap already applied).

    temperature 0 -> argmax. top_k 0 keeps every token, else the k most likely. top_p 1.0 keeps
    every token, else the smallest most-likely-first set whose mass (after temperature and top-k)
    reaches top_p; the most likely token is always kept.
    """
    logits = logits.detach().float().cpu().reshape(-1)
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_probs, order = probs.sort(descending=True)
    keep = torch.ones_like(sorted_probs, dtype=torch.bool)
    if top_k > 0:
        keep[top_k:] = False
    if top_p < 1.0:
        kept = sorted_probs * keep
        kept = kept / kept.sum()
        keep &= kept.cumsum(0) - kept < top_p  # the mass ranked above a token is still short of top_p
    choice = torch.multinomial(sorted_probs * keep, 1, generator=generator)
    return int(order[choice])


@torch.no_grad()
def next_token_logits(model, ids: list[int], window: int, device) -> torch.Tensor:
    """Softcapped logits (V,) for the token after ids, from the model's own head over the last `window` ids."""
    x = torch.tensor([ids[-window:]], dtype=torch.int64, device=device)
    dtype = autocast_dtype(device)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):  # as evaluation runs it
        logits = model.logits(x)[0, -1]
    return softcap_logits(logits, model.logit_softcap)


def generate(model, prompt_ids: list[int], num_tokens: int, window: int, device, temperature: float,
             top_k: int, top_p: float, generator: torch.Generator, stop_ids=()) -> list[int]:
    """New ids after prompt_ids (at most num_tokens; stops after emitting one of stop_ids, e.g. BOS)."""
    ids, new = list(prompt_ids), []
    for _ in range(num_tokens):
        token = sample_next(next_token_logits(model, ids, window, device), temperature, top_k, top_p, generator)
        ids.append(token)
        new.append(token)
        if token in stop_ids:
            break
    return new
