"""Test-only: illegal TTT variants, to prove the legality checks can fail. Each reuses golf.ttt's pieces with one
rule broken:

  leaky_ttt            stream TTT that learns from each chunk BEFORE scoring it
  doc_update_first     per-doc LoRA that takes each chunk's step before scoring the chunk
  doc_phase_ahead      global phases that also train on the next segment's documents, not yet scored
  doc_rescore_best     per-doc LoRA that scores a chunk, adapts on it, re-scores it and keeps the better score
"""

from unittest import mock

import torch

import golf.ttt
from golf.dist import all_reduce_
from golf.evaluate import eval_result, score_windows, split_plan, target_byte_counts, window_plan
from golf.ttt import (DocSchedule, adapt_on_chunk, doc_chunk_batch, doc_chunks, doc_lora_losses, doc_schedule,
                      doc_ttt, ttt_chunk_bounds, ttt_model)


def leaky_ttt(model, val_tokens, luts, cfg, rank=0, world_size=1, device=torch.device("cpu"), autocast_dtype=None,
              target_losses=None, byte_counts=None, score_order=None, **_):
    byte_counts = target_byte_counts(val_tokens, luts) if byte_counts is None else byte_counts
    model, params = ttt_model(model, cfg)
    opt = torch.optim.Adam(params, lr=cfg.ttt_lr)
    plan = window_plan(val_tokens.numel() - 1, cfg.sw_seq_len, cfg.sw_stride)
    bounds, _ = ttt_chunk_bounds(val_tokens, cfg.ttt_chunk_tokens, cfg.ttt_reset_per_doc)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    for i, windows in enumerate(split_plan(plan, bounds)):
        adapt_on_chunk(model, opt, params, val_tokens[bounds[i] : bounds[i + 1] + 1], cfg.sw_seq_len, cfg.ttt_steps,
                       rank, world_size, device, autocast_dtype)
        sums += score_windows(model, val_tokens, windows[rank::world_size], cfg.val_batch_tokens, byte_counts, device,
                              autocast_dtype, target_losses)
        if score_order is not None:
            score_order[bounds[i] : bounds[i + 1]] = i
    all_reduce_(sums)
    if target_losses is not None:
        all_reduce_(target_losses)
    return eval_result(sums)


def leaky_score_doc_batch(how: str):
    """golf.ttt.ttt_score_doc_batch with one rule broken: "update_first" or "rescore_best"."""

    def score(model, lora, val_tokens, docs, cfg, device, autocast_dtype, byte_counts, sums, target_losses,
              score_order, tick):
        c, L = cfg.ttt_doc_chunk_tokens, cfg.sw_seq_len
        chunks = [list(doc_chunks(n, c, L)) for _, n in docs]
        opt = torch.optim.AdamW(list(lora.parameters()), lr=cfg.ttt_doc_lora_lr, eps=1e-10,
                                betas=(cfg.ttt_doc_beta1, cfg.ttt_doc_beta2), weight_decay=cfg.ttt_doc_weight_decay)
        for ci in range(max(len(ch) for ch in chunks)):
            rows, x, y, pos, scored, _ = doc_chunk_batch(val_tokens, docs, chunks, ci)
            idx_rows = torch.tensor(rows)

            def step():
                nll = doc_lora_losses(model, lora, idx_rows, x, y, autocast_dtype)
                opt.zero_grad()
                (nll.float() * scored).sum().backward()
                opt.step()
                return nll.detach()

            if how == "update_first":
                step()
                with torch.no_grad():
                    got = doc_lora_losses(model, lora, idx_rows, x, y, autocast_dtype)[scored]
            else:  # rescore_best
                first = step()[scored]
                with torch.no_grad():
                    again = doc_lora_losses(model, lora, idx_rows, x, y, autocast_dtype)[scored]
                got = torch.minimum(first, again)
            idx = pos[scored]
            sums[0] += got.double().sum()
            sums[1] += idx.numel()
            sums[2] += byte_counts[idx].double().sum()
            if target_losses is not None:
                target_losses[idx] = got.float()
            if score_order is not None:
                score_order[idx] = tick + ci

    return score


def doc_update_first(*args, **kw):
    with mock.patch.object(golf.ttt, "ttt_score_doc_batch", leaky_score_doc_batch("update_first")):
        return doc_ttt(*args, **kw)


def doc_rescore_best(*args, **kw):
    with mock.patch.object(golf.ttt, "ttt_score_doc_batch", leaky_score_doc_batch("rescore_best")):
        return doc_ttt(*args, **kw)


def schedule_ahead(doc_lengths, cfg, world_size) -> DocSchedule:
    """Each phase also takes the next segment's first batch per rank: documents scored only after the phase."""
    s = doc_schedule(doc_lengths, cfg, world_size)
    ahead = [docs + [d for mine in s.segments[i + 1] for b in mine[:1] for d in s.batches[b]]
             for i, docs in enumerate(s.phase_docs)]
    return DocSchedule(s.batches, s.segments, ahead)


def doc_phase_ahead(*args, **kw):
    with mock.patch.object(golf.ttt, "doc_schedule", schedule_ahead):
        return doc_ttt(*args, **kw)


LEAKY = {"update_first": doc_update_first, "phase_ahead": doc_phase_ahead, "rescore_best": doc_rescore_best,
         "stream_update_first": leaky_ttt}
