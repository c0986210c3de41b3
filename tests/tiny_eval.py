"""Test helpers: a tiny live model and a val stream of real documents (each starting with BOS) for eval/TTT tests."""

import dataclasses

import torch

from golf.config import Config, smoke
from golf.model.gpt import GPT
from golf.tokenizer import SP_BOS_ID

# Windows of 32 moving by 8; TTT chunks of 64 targets: a few hundred val tokens give many of each.
# Block 1 is looped (the smoke preset's 2 passes), so eval and TTT run the loop schedule's eval depth.
TINY_EVAL = dataclasses.replace(
    smoke(Config()), vocab_size=1024, model_dim=32, num_heads=4, num_kv_heads=2, num_layers=3, rope_dims=4,
    loop_start=1, loop_end=1, lane_layers=1, train_seq_len=32, sw_seq_len=32, sw_stride=8, val_batch_tokens=256, ttt_chunk_tokens=64, ttt_steps=2,
    ttt_lr=1e-2, ttt_lora_rank=4, seed=0)


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
