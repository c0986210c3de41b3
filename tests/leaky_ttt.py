"""Test-only: a TTT that learns from each chunk BEFORE scoring it (illegal), to prove the legality checks can fail.

Same pieces as golf.ttt.score_first_ttt with the two steps of the loop swapped.
"""

import torch

from golf.dist import all_reduce_
from golf.evaluate import eval_result, score_windows, split_plan, window_plan
from golf.ttt import adapt_on_chunk, ttt_chunk_bounds, ttt_model


def leaky_ttt(model, val_tokens, target_bytes, cfg, rank=0, world_size=1, device=torch.device("cpu"), autocast_dtype=None,
              target_losses=None):
    model, params = ttt_model(model, cfg)
    opt = torch.optim.Adam(params, lr=cfg.ttt_lr)
    plan = window_plan(val_tokens.numel() - 1, cfg.sw_seq_len, cfg.sw_stride)
    bounds, _ = ttt_chunk_bounds(val_tokens, cfg.ttt_chunk_tokens, cfg.ttt_reset_per_doc)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    for i, windows in enumerate(split_plan(plan, bounds)):
        adapt_on_chunk(model, opt, params, val_tokens[bounds[i] : bounds[i + 1] + 1], cfg.sw_seq_len, cfg.ttt_steps,
                       rank, world_size, device, autocast_dtype)
        sums += score_windows(model, val_tokens, windows[rank::world_size], cfg.sw_seq_len, cfg.val_batch_tokens,
                              target_bytes, device, autocast_dtype, target_losses)
    all_reduce_(sums)
    if target_losses is not None:
        all_reduce_(target_losses)
    return eval_result(sums)
