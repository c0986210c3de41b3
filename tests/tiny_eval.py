"""Test helpers: a tiny live model and a val stream of real documents (each starting with BOS) for eval/TTT tests."""

import dataclasses

import torch
import torch.distributed as dist

from golf.config import smoke
from golf.dist import teardown_dist
from golf.evaluate import eval_bpb
from golf.model.gpt import GPT
from golf.recipes import PR1855
from golf.tokenizer import SP_BOS_ID, build_byte_luts, load_tokenizer
from golf.ttt import doc_ttt, score_first_ttt

# Windows of 32 moving by 8; TTT chunks of 64 targets: a few hundred val tokens give many of each.
# Block 1 is looped (the smoke preset's 2 passes), so eval and TTT run the loop schedule's eval depth. On recipe
# pr1855 (the 1.0611 record): PR #2101's pieces (the default's) are off unless a test turns one on.
TINY_EVAL = dataclasses.replace(
    smoke(PR1855), vocab_size=1024, model_dim=32, num_heads=4, num_kv_heads=2, num_layers=3, rope_dims=4,
    loop_start=1, loop_end=1, lane_layers=1, train_seq_len=32, sw_seq_len=32, sw_stride=8, val_batch_tokens=256, ttt_chunk_tokens=64, ttt_steps=2,
    ttt_lr=1e-2, ttt_lora_rank=4, seed=0)


# Per-doc TTT: chunks of 16 targets in windows of 32, batches of 2 documents, phases after 2 and 4 documents.
TINY_DOC = dataclasses.replace(TINY_EVAL, ttt_mode="doc", ttt_doc_chunk_tokens=16, ttt_doc_batch=2, ttt_doc_lora_rank=4,
                               ttt_doc_lora_alpha=8.0, ttt_doc_lora_lr=1e-2, ttt_phases=2, ttt_phase_prefix_docs=4,
                               ttt_phase_chunk_tokens=64, ttt_phase_batch_seqs=2, ttt_phase_lr=1e-2)


def doc_val_stream(sp, docs: list[str]) -> torch.Tensor:
    """Documents of growing length (200, 260, ... characters): several batches and chunks per document."""
    return torch.cat([val_stream(sp, [d], chars=200 + 60 * i) for i, d in enumerate(docs)])


def tiny_model(cfg=TINY_EVAL, seed: int = 0) -> GPT:
    """Random weights with every branch live (the fresh model zero-inits its output projections)."""
    torch.manual_seed(seed)
    model = GPT(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return model


def val_stream(sp, docs: list[str], chars: int = 400) -> torch.Tensor:
    """int64 tokens: each doc's first `chars` characters, encoded, after a BOS (the shard layout)."""
    tokens = []
    for doc in docs:
        tokens += [SP_BOS_ID] + sp.encode(doc[:chars])
    return torch.tensor(tokens, dtype=torch.int64)


def ttt_rank_worker(rank: int, world_size: int, init_file: str, tokenizer_path: str, docs: list[str], out: str):
    """One gloo rank of score_first_ttt and eval_bpb on the tiny model; rank 0 saves results and per-target losses."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    sp = load_tokenizer(tokenizer_path)
    val = val_stream(sp, docs)
    luts = build_byte_luts(sp, TINY_EVAL.vocab_size)
    ttt_losses, plain_losses = torch.zeros(val.numel() - 1), torch.zeros(val.numel() - 1)
    ttt = score_first_ttt(tiny_model(), val, luts, TINY_EVAL, rank, world_size, target_losses=ttt_losses)
    plain = eval_bpb(tiny_model(), val, luts, TINY_EVAL.sw_seq_len, TINY_EVAL.sw_stride, TINY_EVAL.val_batch_tokens,
                     rank, world_size, target_losses=plain_losses)
    if rank == 0:
        torch.save(dict(ttt=dataclasses.asdict(ttt), plain=dataclasses.asdict(plain), ttt_losses=ttt_losses,
                        plain_losses=plain_losses), out)
    teardown_dist()


def doc_ttt_rank_worker(rank: int, world_size: int, init_file: str, tokenizer_path: str, docs: list[str], out: str):
    """One gloo rank of doc_ttt without phases (no warm start: batches do not depend on what their rank ran before)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    sp = load_tokenizer(tokenizer_path)
    val = doc_val_stream(sp, docs)
    luts = build_byte_luts(sp, TINY_DOC.vocab_size)
    losses = torch.zeros(val.numel() - 1)
    cfg = dataclasses.replace(TINY_DOC, ttt_doc_warm_start_a=False, ttt_phases=0)
    result = doc_ttt(tiny_model(), val, luts, cfg, rank, world_size, target_losses=losses)
    if rank == 0:
        torch.save(dict(result=dataclasses.asdict(result), losses=losses), out)
    teardown_dist()
