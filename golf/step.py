"""One optimiser step: grad-accumulated micro-batches (DDP syncs only the last), the global grad-norm clip, then
every optimiser, then EMA."""

import contextlib

import torch
from torch.nn.parallel import DistributedDataParallel


def autocast_dtype(device: torch.device):
    return torch.bfloat16 if device.type == "cuda" else None


def train_step(model, loader, opts, cfg, grad_accum: int, device, ema=None) -> torch.Tensor:
    """One optimiser step over grad_accum micro-batches; returns the mean micro-batch loss (detached).
    `loader.next_batch(global_tokens, seq_len, grad_accum)` gives this rank's next micro-batch: (x, y), or (x, y,
    doc_ids) from the document-packing loader (golf/data.py TRAIN_LOADERS)."""
    total = torch.zeros((), device=device)
    for micro in range(grad_accum):
        batch = [t.to(device, non_blocking=True)
                 for t in loader.next_batch(cfg.train_batch_tokens, cfg.train_seq_len, grad_accum)]
        # Gradients are all-reduced only on the last micro-batch.
        sync = micro == grad_accum - 1 or not isinstance(model, DistributedDataParallel)
        with contextlib.nullcontext() if sync else model.no_sync():
            with torch.autocast(device.type, dtype=autocast_dtype(device), enabled=device.type == "cuda"):
                loss = model(*batch) / grad_accum
            loss.backward()
        total += loss.detach()
    if cfg.grad_clip_norm > 0:  # one norm over every trained parameter (record: 0.3, R:3399-3400)
        params = [p for opt in opts for group in opt.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip_norm)
    for opt in opts:
        opt.step()
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    if ema is not None:
        ema.update()
    return total
