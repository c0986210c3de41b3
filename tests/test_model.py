import dataclasses
import itertools

import torch

from golf.config import Config, smoke
from golf.model.attention import apply_partial_rope, rope_tables, sdpa_attention
from golf.model.blocks import BLOCKS, LaneMix, ParallelBlock
from golf.model.gpt import GPT, size_report, token_nll
from golf.model.loops import LOOP_SCHEDULES
from golf.params import assign_rules, param_rules

# 3 unique blocks: prelude 0, block 1 looped, coda 2 (two-lane).
TINY = dataclasses.replace(smoke(Config()), vocab_size=64, model_dim=32, num_heads=4, num_kv_heads=2, num_layers=3,
                           rope_dims=4, train_seq_len=16, sw_seq_len=16, loop_start=1, loop_end=1, lane_layers=1)


def randomize(module: torch.nn.Module, std: float = 0.2) -> None:
    """Make every branch live (fresh blocks are identities)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(std=std)


def test_fresh_blocks_are_identity_on_the_residual():
    # Zero-initialised output projections and x0-mix (m0, m1) = (1, 0): a new block passes x through unchanged.
    for name, cls in BLOCKS.items():
        block = cls(TINY, sdpa_attention)
        assert torch.equal(block.resid_mix, torch.stack((torch.ones(32), torch.zeros(32)))), name
        x, x0 = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
        assert torch.equal(block(x, x0), x), name


def test_x0_mix_is_learned_per_channel():
    block = ParallelBlock(TINY, sdpa_attention)
    with torch.no_grad():
        block.resid_mix[1, 5] = 1.0  # channel 5 now also takes x0
    x, x0 = torch.randn(1, 4, 32), torch.randn(1, 4, 32)
    mixed = block.mix_x0(x, x0)
    assert torch.equal(mixed[..., 5], x[..., 5] + x0[..., 5])
    assert torch.equal(mixed[..., :5], x[..., :5])


def test_two_lane_layer_with_equal_lanes_and_fresh_mix_is_the_parallel_block():
    torch.manual_seed(0)
    block = ParallelBlock(TINY, sdpa_attention)
    randomize(block.attn)
    randomize(block.mlp)
    x, x0 = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    attn_lane, mlp_lane = block.forward_lanes((x, x), x0, LaneMix())
    expected = block(x, x0)
    assert torch.allclose(attn_lane, expected, atol=1e-6) and torch.allclose(mlp_lane, expected, atol=1e-6)
    # Once the lanes differ, the MLP reads its own lane: changing only the MLP lane changes the MLP output.
    attn_lane2, _ = block.forward_lanes((x, x + 1.0), x0, LaneMix())
    assert not torch.allclose(attn_lane2, attn_lane)


def test_model_is_causal():
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(TINY, pass_adapter_rank=2, loop_enable_at=0.0)).eval()
    randomize(model)
    idx = torch.randint(0, 64, (1, 16))
    changed = idx.clone()
    changed[0, 10] = (idx[0, 10] + 1) % 64
    a, b = model.logits(idx), model.logits(changed)
    assert torch.equal(a[0, :10], b[0, :10])
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_partial_rope_rotates_only_leading_dims_and_keeps_norm():
    cos, sin = rope_tables(8, 4, 10000.0)
    x = torch.randn(1, 2, 8, 16)
    y = apply_partial_rope(x, cos, sin)
    assert torch.equal(y[..., 4:], x[..., 4:])
    assert torch.allclose(y[..., :4].norm(dim=-1), x[..., :4].norm(dim=-1), atol=1e-5)
    assert torch.equal(y[:, :, 0], x[:, :, 0])  # position 0: angle 0


def test_loss_starts_near_uniform_and_softcap_bounds_loss():
    torch.manual_seed(0)
    model = GPT(TINY)
    idx, targets = torch.randint(0, 64, (4, 16)), torch.randint(0, 64, (4, 16))
    loss = model(idx, targets)
    assert abs(loss.item() - torch.log(torch.tensor(64.0)).item()) < 0.1
    assert model.token_losses(idx, targets).shape == (4, 16)
    # Softcap 30 bounds every logit: a huge logit gap costs at most 2 * 30 nats.
    huge = torch.tensor([[1e4, -1e4]])
    assert token_nll(huge, torch.tensor([1]), 30.0).item() <= 60.0 + 1e-3


def test_every_parameter_of_every_variant_matches_exactly_one_policy_row():
    # block type x loop schedule x per-pass adapters x U-Net skips x two-lane layers; assign_rules raises otherwise.
    for block, schedule, rank, skips, lanes in itertools.product(BLOCKS, LOOP_SCHEDULES, (0, 2), (False, True), (0, 1)):
        cfg = dataclasses.replace(TINY, block=block, loop_schedule=schedule, pass_adapter_rank=rank, unet_skips=skips,
                                  lane_layers=lanes, recur_max=4)
        model = GPT(cfg)
        rules = assign_rules(model.named_parameters(), param_rules(cfg))
        assert len(rules) == len(list(model.parameters()))
        assert {r.optim for r in rules.values()} == {"muon", "adam"}
        assert all(r.optim == "muon" for n, r in rules.items() if n.endswith(("q.weight", "fc.weight", "inject.weight")))
        assert all(r.optim == "adam" and r.bits is None for n, r in rules.items() if "skip_weights" in n or "lanes" in n)


def test_size_report_counts_shared_blocks_once_per_virtual_layer():
    cfg = dataclasses.replace(TINY, train_loops=3, eval_loops=5, loop_enable_at=0.0)
    model = GPT(cfg)
    report = size_report(model)
    per_block = sum(p.numel() for p in model.blocks[1].parameters())
    assert report["unique_params"] == sum(p.numel() for p in model.parameters())
    assert (report["train_depth"], report["eval_depth"]) == (2 + 3, 2 + 5)
    assert report["effective_params"] == report["unique_params"] + 4 * per_block
